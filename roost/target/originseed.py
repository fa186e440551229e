"""`roost host-origin`: seed a deploy's payload from a host that already holds it.

Theory of operation. `roost deploy --origin HOST:PATH` starts this on HOST over
the host's agent session (roost/target/session.py), with stdin open, and
drives it by lines:

    in:  <base64 of host-prepare's request>        (manifest, torrent or pieces, tls)
    out: {"pieces": N, "address": A, ...}          (OriginReady: every piece matched)
         or an ErrorRecord, exit 1                 (PATH is not this payload)
    in:  seed {"tracker": URL, "allow": [...], ...} (OriginOrder, once the swarm's
                                                    allowlist is known)
    out: fetch's JSON events while it seeds, then {"uploaded": N} (OriginSeeded)

Nothing is trusted before it is proven: the torrent comes over SSH (as a
host's does), and every piece of PATH is hashed against it before the host
says it is ready, so a stale or corrupt copy is refused with one line and
never seeds. The torrent and the TLS files go into a private directory that
is removed whatever ends us: the deploy's EOF or kill, the session's
cleanup when the channel closes (SIGTERM), or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import zlib
from pathlib import Path
from types import FrameType

from roost.core.bitfield import Bitfield
from roost.core.metainfo import Metainfo, parse
from roost.core.offers import super_seed_pays
from roost.engine.config import SessionConfig, parse_allow
from roost.engine.reporter import Reporter
from roost.engine.session import Session
from roost.engine.storage import Storage
from roost.engine.tls import peer_tls_from_args
from roost.engine.treestorage import TreeStorage
from roost.errors import RoostError, UsageError
from roost.target import Runner
from roost.target.fetch_seed import parse_ports
from roost.target.hostops import (
    PEER_TLS,
    announce_address,
    inflate_request,
    is_local,
    peer_tls_files,
    torrent_of,
)
from roost.target.protocol import (
    MAX_PREPARE_INPUT,
    Manifest,
    OriginOrder,
    OriginReady,
    OriginSeeded,
    PayloadFormat,
    PrepareRequest,
    ProtocolError,
)
from roost.target.release import atomic_write

SEED_WORD = "seed"
#: the base64 of a request host-prepare would take, plus its line end
MAX_REQUEST_LINE = (MAX_PREPARE_INPUT * 4) // 3 + 8


class _Stopped(Exception):
    """SIGTERM/SIGHUP before the seeder runs: the deploy is over."""


def add_origin(parser: argparse.ArgumentParser) -> Runner:
    parser.description = ("Prove that PATH holds a deploy's payload, then seed it to the "
                          "deploy's swarm (driven by lines on stdin; see roost deploy --origin).")
    parser.add_argument("--path", required=True,
                        help="the payload on this host: the file, or the directory")
    parser.add_argument("--deploy-id", required=True)
    parser.add_argument("--tracker-host", help="announce the source address of the route here")
    parser.add_argument("--tracker-port", type=int, default=0)
    parser.add_argument("--interface", help="announce this interface's address instead")
    parser.add_argument("--address", help="announce this address (from configuration)")
    parser.add_argument("--json", action="store_true", help="reply as JSON lines (always)")
    return run_origin


def run_origin(ns: argparse.Namespace) -> int:
    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stopped

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    # as Python starts (the session's fork reset it): a peer that hangs up is an EPIPE
    # on its own connection, never the seeder's death
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    work = Path(tempfile.mkdtemp(prefix=f"roost-origin-{_safe_id(ns.deploy_id)}-"))
    try:
        manifest, meta, tls = _read_request(work)
        storage = _check_payload(Path(ns.path), manifest, meta)
        address = announce_address(ns)
        _say(OriginReady(meta.info.num_pieces, address,
                         address is None or is_local(address)).to_json())
        order = _read_order()
        if order is None:  # EOF: the deploy went on without us
            return 0
        uploaded = asyncio.run(_serve(meta, storage, _config(order, address, tls),
                                      order.tracker))
        _say(OriginSeeded(uploaded).to_json())
        return 0
    except _Stopped:
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # the cleanup runs to its end
        shutil.rmtree(work, ignore_errors=True)


def _safe_id(text: str) -> str:
    return "".join(c for c in text if c.isalnum() or c in "-_")[:64] or "deploy"


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _read_request(work: Path) -> tuple[Manifest, Metainfo, dict[str, Path]]:
    """The first line: host-prepare's request as base64. The torrent and TLS files are
    written into `work` (0600); returns the manifest, the parsed torrent, and the TLS
    files by role."""
    line = sys.stdin.buffer.readline(MAX_REQUEST_LINE + 1)
    if len(line) > MAX_REQUEST_LINE:
        raise UsageError("host-origin request is too large")
    if not line.strip():
        raise _Stopped
    try:
        blob = base64.b64decode(line.strip(), validate=True)
        data = PrepareRequest.from_json(inflate_request(blob))
        manifest = Manifest.load(data.manifest)
        torrent = torrent_of(data.to_dict(), manifest)
        tls = peer_tls_files(data.tls)
        meta = parse(torrent)
    except (ProtocolError, binascii.Error, zlib.error, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"bad host-origin request: {exc}") from None
    if manifest.format in (PayloadFormat.TAR, PayloadFormat.TAR_ZST):
        raise UsageError("a tarball made by the deploy cannot be on an origin host")
    files: dict[str, Path] = {}
    for name, filename in PEER_TLS.items():
        if filename in tls:
            atomic_write(work / filename, tls[filename])
            files[name] = work / filename
    return manifest, meta, files


def _check_payload(path: Path, manifest: Manifest, meta: Metainfo) -> Storage:
    """Storage over `path`, once every piece of it matched the torrent; else one line
    saying how far it is from this payload."""
    if not path.is_absolute():
        raise UsageError(f"--path {path} is not absolute")
    tree = manifest.format is PayloadFormat.TREE
    want_dir = tree or manifest.format is PayloadFormat.DIR
    if not path.exists():
        raise RoostError(f"{path} does not exist on this host")
    if want_dir != path.is_dir():
        kind = "a directory" if want_dir else "a file"
        raise RoostError(f"{path} is not {kind}, as this payload ({manifest.format}) is")
    # PATH itself may be a link (a host's `current`): what it names is the payload, and
    # a link inside it may not lead out of it (Storage confines them to root/top)
    real = Path(os.path.realpath(path))
    storage: Storage = (TreeStorage(meta.info, real, None) if tree
                        else Storage(meta.info, real.parent, top=real.name))
    try:
        have = storage.recheck()
    except OSError as exc:  # a link loop, an unreadable file: one line, not a traceback
        raise RoostError(f"cannot read {exc.filename or path}: {exc.strerror or exc}") from None
    pieces = meta.info.num_pieces
    if not have.all():
        raise RoostError(f"{path} is not this payload: {pieces - have.count()} of {pieces} "
                         "pieces differ (a stale or corrupt copy); not seeding it")
    return storage


def _read_order() -> OriginOrder | None:
    """Wait for `seed <order>`; None at EOF."""
    line = sys.stdin.readline(1 << 20)
    if not line.strip():
        return None
    word, _, rest = line.strip().partition(" ")
    if word != SEED_WORD:
        raise UsageError(f"host-origin: expected {SEED_WORD!r}, got {word[:20]!r}")
    try:
        return OriginOrder.from_json(rest)
    except ProtocolError as exc:
        raise UsageError(f"bad host-origin order: {exc}") from None


def _config(order: OriginOrder, address: str | None, tls: dict[str, Path]) -> SessionConfig:
    if address is None or not is_local(address):
        bind = "::" if address and ":" in address else "0.0.0.0"
    else:
        bind = address
    return SessionConfig(
        listen_host=bind,
        ports=parse_ports(order.port),
        announce_ip=address if address and not address.startswith("127.") else None,
        allow=parse_allow(list(order.allow)) if order.allow is not None else None,
        upload_rate=order.upload_rate,
        expected_peers=order.expected_peers,
        super_seed=order.super_seed and super_seed_pays(order.expected_peers),
        tls=peer_tls_from_args(tls.get("cert"), tls.get("key"), tls.get("ca")),
        linger=None,
        seed=True,
    )


async def _serve(meta: Metainfo, storage: Storage, config: SessionConfig, tracker: str
                 ) -> int:
    """Seed until stopped (SIGTERM from the deploy, or stdin's EOF); bytes uploaded."""
    loop = asyncio.get_running_loop()
    storage.open(create=False)
    reporter = Reporter(as_json=True, quiet=True)
    try:
        session = Session(meta, storage, Bitfield.full(meta.info.num_pieces), config, reporter,
                          trackers=[[tracker]])
        # stdin's EOF (the deploy closed our input) stops us as SIGTERM does
        loop.add_reader(0, _on_stdin, session)
        try:
            await session.run()
        finally:
            loop.remove_reader(0)
        if session.error:
            raise RoostError(session.error)
        return session.member.uploads.uploaded
    finally:
        storage.close()
        reporter.close()


def _on_stdin(session: Session) -> None:
    with contextlib.suppress(OSError):
        if os.read(0, 4096):
            return
    asyncio.get_running_loop().remove_reader(0)
    session.stop("the deploy closed the origin's input")

