"""`roost fetch` and `roost seed`: argparse front ends of the engine.

Standard library only (see roost.agent). Exit codes:
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
from pathlib import Path
from typing import Any

from roost.bitfield import Bitfield
from roost.engine.config import SessionConfig, parse_allow
from roost.engine.reporter import Reporter
from roost.engine.session import Session
from roost.engine.storage import Storage
from roost.engine.tls import peer_tls_from_args
from roost.errors import RoostError, UsageError
from roost.metainfo import Metainfo
from roost.ratelimit import parse_rate
from roost.torrentfile import read_torrent

EXIT_INCOMPLETE = 3
Runner = Callable[[argparse.Namespace], int]


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
    parser.add_argument("--sha256", help="also check the SHA-256 of a single-file payload")
    return run_fetch


def add_seed(parser: argparse.ArgumentParser) -> Runner:
    parser.description = "Seed a payload that is already on disk."
    add_common(parser)
    parser.add_argument(
        "--super-seed",
        action="store_true",
        help="BEP 16: send each piece once before any piece twice (origins)",
    )
    parser.add_argument(
        "--upload-log",
        metavar="FILE",
        help="append a JSON line per whole piece uploaded (time, peer, piece)",
    )
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


def run_fetch(ns: argparse.Namespace) -> int:
    meta = read_torrent(ns.torrent)
    config = make_config(ns, linger=ns.linger, seed=not ns.no_seed)
    reporter = Reporter(as_json=ns.json, quiet=ns.quiet)
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
    config = make_config(
        ns,
        super_seed=ns.super_seed,
        linger=None,
        stop_when_swarm_complete=ns.until_complete,
        upload_log=ns.upload_log,
    )
    reporter = Reporter(as_json=ns.json, quiet=ns.quiet)
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
    storage = Storage(meta.info, ns.dir)
    loop = asyncio.get_running_loop()
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
        have = Bitfield.full(meta.info.num_pieces)
    storage.open(create=create)
    try:
        reporter.event("checked", have=have.count(), pieces=meta.info.num_pieces)
        if not create and not have.all():
            return False
        session = Session(meta, storage, have, config, reporter, trackers=trackers_of(ns, meta))
        if ns.timeout:
            loop.call_later(ns.timeout, session.stop, f"timeout after {ns.timeout:g} s")
        complete = await session.run()
        if session.error:
            raise RoostError(session.error)
        return complete
    finally:
        storage.close()


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
