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
import os
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from roost.core.bitfield import Bitfield
from roost.core.metainfo import Metainfo, check_web_seed_url
from roost.core.offers import SUPER_SEED_MIN_PEERS, super_seed_pays
from roost.core.ratelimit import parse_rate
from roost.core.tree import check_torrent
from roost.core.wire import BLOCK_SIZE
from roost.engine.config import SessionConfig, parse_allow
from roost.engine.reporter import Reporter
from roost.engine.session import Session
from roost.engine.storage import Storage
from roost.engine.tls import peer_tls_from_args
from roost.engine.treestorage import Proof, TreeStorage, proof_of
from roost.errors import RoostError, UsageError
from roost.target import Runner
from roost.target.release import VERIFIED, Dest, Manifest, ReleaseError, read_manifest, stage
from roost.target.torrentfile import read_torrent
from roost.target.treestage import (
    REUSE_MODES,
    Source,
    bytes_to_fetch,
    find_reusable,
    held_pieces,
    local_blocks,
    place,
)

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


class FetchReporter(Reporter):
    """Notices whether "complete" went out: a session stopped by its policy while
    its final flush still ran returns complete without having said so. Adds
    `complete_fields` (what --stage did) to that event."""

    completed_reported = False
    complete_fields: dict[str, Any] | None = None

    def event(self, name: str, **fields: Any) -> None:
        if name == "complete":
            self.completed_reported = True
            fields = {**fields, **(self.complete_fields or {})}
        super().event(name, **fields)


class StagingTreeStorage(TreeStorage):
    """--stage: after the final flush (every file verified, the proofs recorded),
    make releases/<tag> right here, as the deploy host's stage command would, so
    "complete" says the release is staged: no round trip, no second process,
    no second proof of every file. Any failure leaves the staging directory
    as it was; the deploy host then runs its stage command, which reports it."""

    stage_to: tuple[Dest, Manifest, Path, FetchReporter] | None = None
    _staged = False

    def flush(self) -> None:
        super().flush()
        if self.stage_to is None or self._staged:
            return
        dest, manifest, record, reporter = self.stage_to
        self._staged = True
        try:
            stage(dest, manifest, self.root, record=record)
        except (RoostError, OSError) as exc:
            reporter.event("stage_deferred", message=str(exc)[:500])
            return
        reporter.complete_fields = {"staged": manifest.tag}


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
    storage: Storage
    if create and getattr(ns, "tree_manifest", None) is not None:
        storage, tree_have = await loop.run_in_executor(None, _tree_setup, meta, ns, reporter)
        check = False
    elif not create and getattr(ns, "tree", False):
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
        if isinstance(storage, TreeStorage) and storage.local_blocks:
            if session.member.picker.block_size != BLOCK_SIZE:
                raise RoostError("the picker's block size is not the one reuse planned for")
            await loop.run_in_executor(None, _preload, session, storage)
        if ns.timeout:
            loop.call_later(ns.timeout, session.stop, f"timeout after {ns.timeout:g} s")
        complete = await session.run()
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
        storage.close()


def _tree_setup(meta: Metainfo, ns: argparse.Namespace, reporter: Reporter
                ) -> tuple[TreeStorage, Bitfield]:
    """Check the torrent against the manifest, place reused files in the staging
    directory, and say which pieces that already gives (held, served to others)."""
    manifest = read_manifest(ns.tree_manifest)
    if manifest.tree is None or ns.dest is None:
        raise UsageError("--tree-manifest needs a manifest of format tree, and --dest")
    tree = manifest.tree
    check_torrent(tree, meta.info, meta.info_hash)
    dest = Dest(ns.dest)
    staging = Path(ns.dir)
    if staging.parent != dest.releases or not staging.name.startswith(f".{manifest.tag}.tmp-"):
        raise UsageError(f"-d must be {dest.releases}/.{manifest.tag}.tmp-<id>")
    chosen: dict[tuple[str, ...], Source] = {}
    hashed = refused = 0
    with dest.locked():  # no prune can remove a source while it is copied
        try:
            staging.mkdir(mode=0o700)
        except FileExistsError:
            raise ReleaseError(f"{staging} already exists") from None
        except OSError as exc:
            raise ReleaseError(f"cannot create {staging}: {exc.strerror}") from None
        if ns.reuse != "none":
            tags = [t for t in dest.release_tags() if t != manifest.tag]
            chosen, hashed, refused = find_reusable(dest.releases, dest.meta, tags, tree)
            place(staging, tree, chosen, ns.reuse)
    sizes = {e.path: e for e in tree.files}
    proofs: dict[str, Proof] = {}
    for path in chosen:
        st = os.stat(staging.joinpath(*path), follow_symlinks=False)
        proofs["/".join(path)] = proof_of(st, sizes[path].sha256)
    have = held_pieces(meta.info, set(chosen))
    # the picker's block size (16 KiB): blocks wholly inside reused files are filled locally
    local = local_blocks(meta.info, set(chosen), BLOCK_SIZE) if meta.info.piece_length \
        % BLOCK_SIZE == 0 else {}
    reporter.event(
        "reused",
        files=len(chosen),
        bytes=sum(sizes[p].size for p in chosen),
        fetch_bytes=bytes_to_fetch(meta.info, have, local, BLOCK_SIZE),
        local_blocks=sum(len(b) for b in local.values()),
        held_pieces=have.count(),
        hashed=hashed,
        refused=refused,
    )
    record = ns.tree_manifest.parent / VERIFIED
    storage = StagingTreeStorage(meta.info, staging, tree, done=set(chosen), record=record,
                                 proofs=proofs)
    if getattr(ns, "stage", False) and isinstance(reporter, FetchReporter):
        storage.stage_to = (dest, manifest, record, reporter)
    storage.local_blocks = local
    return storage, have


def _preload(session: Session, storage: TreeStorage) -> None:
    """Give the session the blocks of partly held pieces that we hold locally: the
    picker never requests them and the piece's buffer starts with their bytes
    (read back from the placed files), so the piece is hashed whole as usual."""
    member = session.member  # the core: its picker and piece assembly
    size = member.picker.block_size
    for index, blocks in preload_order(storage.local_blocks):
        buf = bytearray(member.info.piece_size(index))
        piece = len(buf)
        for j in blocks:
            begin = j * size
            buf[begin : begin + min(size, piece - begin)] = storage.read_block(
                index, begin, min(size, piece - begin))
        member.picker.preload(index, blocks)
        member.assembly.buffers[index] = buf
        member.assembly.block_from[index] = {}


def preload_order(local: dict[int, list[int]], rng: random.Random | None = None
                  ) -> list[tuple[int, list[int]]]:
    """The partly held pieces in a random order of this host's own. The picker asks
    for the rest of its started pieces oldest first, and after a release every
    host holds the same ones: in index order, every host asked the origin for the
    same blocks at the same time, so the origin sent each of them to every host
    and no host had anything to give another (16 hosts drew 750 KB/s each, the
    origin's link divided by 16). In an order of its own, each host first gets
    other blocks from the origin, and the hosts trade the rest."""
    order = list(local.items())
    (rng or random.Random()).shuffle(order)
    return order


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
