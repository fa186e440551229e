"""`roost fetch` and `roost seed`: argparse front ends of the engine.

Standard library only (see roost.target.agent). Exit codes:
0 the payload is complete and verified; 1 an error (message on stderr, and
an `error` event with --json); 2 bad arguments; 3 stopped or timed out
before the payload was complete; 130 interrupted before the session started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roost.core.actions import HeldLocally
from roost.core.bitfield import Bitfield
from roost.core.metainfo import Metainfo, check_web_seed_url
from roost.core.offers import SUPER_SEED_MIN_PEERS, super_seed_pays
from roost.core.ratelimit import parse_rate
from roost.core.wire import BLOCK_SIZE
from roost.engine.config import SessionConfig, parse_allow
from roost.engine.reporter import Reporter
from roost.engine.session import Session
from roost.engine.storage import Storage
from roost.engine.tls import peer_tls_from_args
from roost.errors import RoostError, UsageError
from roost.target import REUSE_MODES, Runner
from roost.target.fetchreport import FetchReporter
from roost.target.torrentfile import read_torrent

if TYPE_CHECKING:
    from roost.engine.treestorage import TreeStorage
    from roost.target.fetch_tree import LatePlacer

EXIT_INCOMPLETE = 3


def _seconds(text: str) -> float:
    """A number of seconds from 0 to an hour (argparse type: a bad one is one line, exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {text!r}") from None
    if not 0 <= value <= 3600:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected 0 to 3600 seconds, not {text}")
    return value


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("torrent", type=Path, help="the .torrent file")
    parser.add_argument(
        "-d",
        "--dir",
        type=Path,
        default=Path("."),
        help="directory that holds (or will hold) the payload (default: .)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON event lines on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument(
        "--progress-every", type=_seconds, default=0.0, metavar="SECONDS",
        help="with --json: at least this long between two progress lines, 15 times that "
             "once seeding (default: every tick, 0.5 s); a deploy asks for fewer as its "
             "fleet grows")
    parser.add_argument(
        "--port",
        default="6881-6999",
        help="listen port or range LOW-HIGH; 0 for any (default: 6881-6999)",
    )
    parser.add_argument("--bind", default="0.0.0.0", help="listen address (default: 0.0.0.0)")
    parser.add_argument("--announce-ip", help="address we are known by (for self-detection)")
    parser.add_argument(
        "--tracker",
        action="append",
        default=[],
        help="announce URL to use instead of the torrent's (repeatable)",
    )
    parser.add_argument("--no-tracker", action="store_true", help="use only --peer addresses")
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="connect to this peer directly (repeatable)",
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="accept and make connections only with these addresses",
    )
    parser.add_argument(
        "--max-peers",
        type=int,
        default=60,
        help="peers with a completed handshake (default 60); connections still "
        "handshaking have their own small budget and a 5 s deadline",
    )
    parser.add_argument(
        "--unchoke-slots",
        type=int,
        help="peers we upload to at once (default: --max-peers, i.e. every peer "
        "that wants data: a fleet is cooperative, and shared links stay fair)",
    )
    parser.add_argument("--upload-rate", type=rate_arg, help="cap, e.g. 20M (bytes/s) or 100mbit")
    parser.add_argument("--download-rate", type=rate_arg, help="cap, as --upload-rate")
    parser.add_argument("--location", help="location label (rack/zone) sent to the tracker")
    parser.add_argument(
        "--local-net",
        action="append",
        default=[],
        metavar="CIDR",
        help="our zone's addresses: peers outside them get one request in flight and are "
        "asked only for pieces no peer inside has (narrow links between zones)",
    )
    parser.add_argument(
        "--no-zero-copy",
        action="store_true",
        help="upload with pread + write instead of sendfile (for comparison)",
    )
    parser.add_argument(
        "--expected-peers", type=int, help="peers the deploy expects; the tracker may also say"
    )
    parser.add_argument("--timeout", type=float, help="give up after this many seconds")
    tls = parser.add_argument_group(
        "peer TLS", "mutual TLS 1.3 with every peer: all three files, or none"
    )
    tls.add_argument("--tls-cert", type=Path, metavar="PEM", help="this peer's certificate")
    tls.add_argument("--tls-key", type=Path, metavar="PEM", help="its private key")
    tls.add_argument("--tls-ca", type=Path, metavar="PEM", help="accept only peers signed by it")


def add_upload_log(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--upload-log",
        metavar="FILE",
        help="append a JSON line per whole piece uploaded (time, peer, piece)",
    )


def add_fetch(parser: argparse.ArgumentParser) -> Runner:
    parser.description = "Download a payload, verify every piece, and seed it to the swarm."
    add_common(parser)
    parser.add_argument(
        "--linger",
        type=float,
        default=10.0,
        help="after completing, seed until no peer was interested for this "
        "long, when the expected peer count is unknown (default: 10)",
    )
    parser.add_argument("--no-seed", action="store_true", help="exit as soon as complete")
    add_upload_log(parser)
    parser.add_argument("--sha256", help="also check the SHA-256 of a single-file payload")
    parser.add_argument(
        "--web-seed",
        action="append",
        default=[],
        metavar="URL",
        help="an HTTP server that holds the payload (BEP 19 url-list; repeatable): "
        "used with the torrent's own, every piece from it hash-checked",
    )
    tree = parser.add_argument_group(
        "tree release", "write a tree torrent's pieces straight into a staging directory "
        "(-d, <dest>/releases/.<tag>.tmp-*), reusing files of kept releases first")
    tree.add_argument("--tree-manifest", type=Path, metavar="JSON",
                      help="the deploy manifest (format tree) the torrent must match")
    tree.add_argument("--dest", type=Path, help="the destination whose releases are reused")
    tree.add_argument("--stage", action="store_true",
                      help="once complete, make releases/<tag> (as `activate --no-switch`) "
                      "before reporting complete, with `staged` in that event")
    tree.add_argument("--reuse", choices=REUSE_MODES, default="copy",
                      help="place reused files by copy (reflink where possible; default), "
                      "hardlink (shares inodes with the old release), or none")
    tree.add_argument("--place-beside-swarm", action=argparse.BooleanOptionalAction,
                      default=False,
                      help="join the swarm at once and place the wholly reused files "
                      "meanwhile, their pieces held as they land and told to peers as "
                      "reserved (default: off; measured no faster in the lab, "
                      "docs/deploy.md)")
    return run_fetch


def add_seed(parser: argparse.ArgumentParser) -> Runner:
    parser.description = "Seed a payload that is already on disk."
    add_common(parser)
    parser.add_argument(
        "--super-seed",
        action="store_true",
        help="BEP 16: send each piece once before any piece twice (origins); "
        "only when --swarm-size (or --expected-peers) is unknown or at least "
        f"{SUPER_SEED_MIN_PEERS}: in smaller swarms it costs time",
    )
    parser.add_argument(
        "--swarm-size",
        type=int,
        metavar="N",
        help="receivers expected: a hint for --super-seed only (nothing waits for them)",
    )
    add_upload_log(parser)
    parser.add_argument(
        "--until-complete",
        action="store_true",
        help="stop when the tracker reports every expected peer complete",
    )
    parser.add_argument(
        "--skip-check",
        action="store_true",
        help="trust the data on disk instead of hashing it first",
    )
    parser.add_argument(
        "--tree",
        action="store_true",
        help="a tree torrent: -d is the tree itself (no name level); pad files are zeros",
    )
    return run_seed


def rate_arg(text: str) -> float:
    """--upload-rate and --download-rate, as argparse wants a bad value reported."""
    try:
        return parse_rate(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_ports(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        lo, hi = int(low), int(high or low)
    except ValueError:
        raise UsageError(f"--port {text!r} is not a port or range LOW-HIGH") from None
    if not (0 <= lo <= hi <= 65535):
        raise UsageError(f"--port {text!r} is out of range")
    return lo, hi


def parse_peer(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--peer {text!r} is not HOST:PORT")
    return host, int(port)


def make_config(ns: argparse.Namespace, **extra: object) -> SessionConfig:
    config = SessionConfig(
        listen_host=ns.bind,
        ports=parse_ports(ns.port),
        announce_ip=ns.announce_ip,
        max_peers=ns.max_peers,
        unchoke_slots=ns.unchoke_slots or ns.max_peers,
        allow=parse_allow(ns.allow) if ns.allow else None,
        upload_rate=ns.upload_rate,
        download_rate=ns.download_rate,
        location=ns.location,
        local_nets=parse_allow(ns.local_net, "--local-net") if ns.local_net else None,
        expected_peers=ns.expected_peers,
        initial_peers=[parse_peer(p) for p in ns.peer],
        tls=peer_tls_from_args(ns.tls_cert, ns.tls_key, ns.tls_ca),
        zero_copy=not ns.no_zero_copy,
    )
    for key, value in extra.items():
        setattr(config, key, value)
    return config


def trackers_of(ns: argparse.Namespace, meta: Metainfo) -> list[list[str]]:
    if ns.no_tracker:
        return []
    if ns.tracker:
        return [[url] for url in ns.tracker]
    return [list(tier) for tier in meta.trackers]


def web_seeds_of(ns: argparse.Namespace, meta: Metainfo) -> list[str]:
    """The torrent's url-list and --web-seed, in that order, each once."""
    extra = [check_web_seed_url(u, UsageError) for u in getattr(ns, "web_seed", [])]
    return list(dict.fromkeys([*meta.url_list, *extra]))


def run_fetch(ns: argparse.Namespace) -> int:
    meta = read_torrent(ns.torrent)
    config = make_config(ns, linger=ns.linger, seed=not ns.no_seed, upload_log=ns.upload_log)
    reporter = FetchReporter(as_json=ns.json, quiet=ns.quiet, progress_every=ns.progress_every)
    try:
        complete = _run(meta, ns, config, reporter, create=True, check=True)
        if complete and ns.sha256:
            _check_sha256(meta, ns.dir, ns.sha256)
            reporter.event("sha256_ok")
    finally:
        reporter.close()
    return 0 if complete else EXIT_INCOMPLETE


def run_seed(ns: argparse.Namespace) -> int:
    meta = read_torrent(ns.torrent)
    swarm = ns.swarm_size if ns.swarm_size is not None else ns.expected_peers
    super_seed = ns.super_seed and super_seed_pays(swarm)
    config = make_config(
        ns,
        super_seed=super_seed,
        expected_peers=swarm,  # also each receiver's share of the origin's offers
        linger=None,
        stop_when_swarm_complete=ns.until_complete,
        upload_log=ns.upload_log,
    )
    reporter = Reporter(as_json=ns.json, quiet=ns.quiet, progress_every=ns.progress_every)
    if ns.super_seed and not super_seed:
        why = f"fewer than {SUPER_SEED_MIN_PEERS} receivers: a plain origin is faster"
        reporter.event("super_seed_off", swarm=swarm, reason=why)
    try:
        complete = _run(meta, ns, config, reporter, create=False, check=not ns.skip_check)
    finally:
        reporter.close()
    if not complete:
        raise RoostError("the data on disk does not match the torrent; cannot seed it")
    return 0


def _run(
    meta: Metainfo,
    ns: argparse.Namespace,
    config: SessionConfig,
    reporter: Reporter,
    *,
    create: bool,
    check: bool,
) -> bool:
    runner = _event_loop_runner()
    return runner(_session_main(meta, ns, config, reporter, create=create, check=check))


async def _session_main(
    meta: Metainfo,
    ns: argparse.Namespace,
    config: SessionConfig,
    reporter: Reporter,
    *,
    create: bool,
    check: bool,
) -> bool:
    loop = asyncio.get_running_loop()
    tree_have: Bitfield | None = None
    staged: TreeStorage | None = None  # a tree release being staged: its reused blocks
    storage: Storage
    # the tree modules are imported only when used: a plain fetch's start-up is CPU per host
    if create and getattr(ns, "tree_manifest", None) is not None:
        from roost.target.fetch_tree import tree_setup

        tree_storage, tree_have = await loop.run_in_executor(
            None, tree_setup, meta, ns, reporter)
        storage = staged = tree_storage
        check = False
    elif not create and getattr(ns, "tree", False):
        from roost.engine.treestorage import TreeStorage

        storage = TreeStorage(meta.info, ns.dir, None)
    else:
        storage = Storage(meta.info, ns.dir)
    if config.tls is not None:
        # refused handshakes never reach a Peer (asyncio drops them first): report here
        config.tls.on_refused = lambda reason, server_side: reporter.event(
            "tls_refused", reason=reason, side="incoming" if server_side else "outgoing"
        )
    # re-check before open(): preallocation would make every file full size,
    # and hashing zeros would only waste time
    if check:
        reporter.event("checking", bytes=meta.info.total_length)
        have = await loop.run_in_executor(None, storage.recheck)
    else:
        have = tree_have or Bitfield.full(meta.info.num_pieces)
    try:
        storage.open(create=create)
    except BaseException:
        storage.close()
        raise
    try:
        reporter.event("checked", have=have.count(), pieces=meta.info.num_pieces)
        if not create and not have.all():
            return False
        if tree_have is not None and have.all():
            # every file was reused: the session would never see a piece pass, so
            # the proofs are recorded and "complete" reported here
            await loop.run_in_executor(None, storage.flush)
            reporter.event("complete", bytes=meta.info.total_length, downloaded=0, wasted=0)
            if not config.seed:
                return True
        session = Session(meta, storage, have, config, reporter, trackers=trackers_of(ns, meta),
                          web_seeds=web_seeds_of(ns, meta))
        if staged is not None and staged.local_blocks:
            if session.member.picker.block_size != BLOCK_SIZE:
                raise RoostError("the picker's block size is not the one reuse planned for")
            from roost.target.fetch_tree import preload

            await loop.run_in_executor(None, preload, session, staged)
        placing = _place_late(session, staged, reporter)
        if ns.timeout:
            loop.call_later(ns.timeout, session.stop, f"timeout after {ns.timeout:g} s")
        try:
            complete = await session.run()
        finally:
            if placing is not None:
                placer = placing[0]
                placer.cancelled = True  # a stopped session: no more copies
                await placing[1]
        if placing is not None and placing[0].error is not None:
            raise RoostError(placing[0].error)
        if session.error:
            raise RoostError(session.error)
        if complete and isinstance(reporter, FetchReporter) and not reporter.completed_reported:
            # the deploy host waits for "complete" (and a tree, for the proofs flush writes)
            await loop.run_in_executor(None, storage.flush)
            reporter.event("complete", bytes=meta.info.total_length,
                           downloaded=session.member.downloaded,
                           wasted=session.member.wasted_bytes)
        return complete
    finally:
        late: LatePlacer | None = getattr(staged, "placer", None)
        if late is not None:
            late.release()
        storage.close()


def _place_late(session: Session, staged: TreeStorage | None, reporter: Reporter
                ) -> tuple[LatePlacer, asyncio.Future[None]] | None:
    """Start placing the wholly reused files beside the swarm (roost.target.fetch_tree):
    their pieces reserved now, held as they land; a failure stops the session."""
    placer: LatePlacer | None = getattr(staged, "placer", None)
    if placer is None:
        return None
    loop = session.loop
    for index in placer.reserved():
        session.member.picker.reserve(index)

    early: list[int] = []  # held before the member started: fed once it has
    waiting: list[asyncio.Task[None]] = []

    def hold(indices: tuple[int, ...]) -> None:  # on the loop
        if session.stopping.is_set():
            return
        if not session.started.is_set():
            if not waiting:
                waiting.append(loop.create_task(feed_when_started()))
            early.extend(indices)
            return
        session.feed(HeldLocally(indices))

    async def feed_when_started() -> None:
        await session.started.wait()
        hold(tuple(early))

    def held(indices: tuple[int, ...]) -> None:  # in the placer's thread
        loop.call_soon_threadsafe(hold, indices)

    def run() -> None:  # in a worker thread
        placer.run(held)
        if placer.error is not None:
            loop.call_soon_threadsafe(session.stop, "reusing files failed")
        elif not placer.cancelled:
            loop.call_soon_threadsafe(partial(reporter.event, "placed", files=len(placer.late)))

    return placer, loop.run_in_executor(None, run)


def _check_sha256(meta: Metainfo, root: Path, expected: str) -> None:
    if not meta.info.single_file:
        raise UsageError("--sha256 needs a single-file payload")
    digest = hashlib.sha256()
    with (root / meta.info.name).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected.lower():
        raise RoostError(f"payload SHA-256 {digest.hexdigest()} does not match {expected}")


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, bool]], bool]:
    """asyncio.run, on uvloop when it is installed. uvloop is optional, so it is
    imported by name: the target side must run with the standard library alone."""
    with contextlib.suppress(ImportError):
        uvloop = importlib.import_module("uvloop")
        run: Callable[[Coroutine[Any, Any, bool]], bool] = uvloop.run
        return run
    return asyncio.run
