"""`roost deploy --dry-run`: preflight checks on every host; nothing is written anywhere.

Each host runs roost/target/preflight.py as the text of `python3 -I -c` (no agent
push, no file written), which reports what it sees and listens on a peer
port; we connect to that port from here — the tracker host — and compare
clocks. Each check is ok / warn / fail; the row also says what the deploy
would do on that host.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

import roost.target.preflight
from roost.core.metainfo import parse
from roost.core.wire import BLOCK_SIZE
from roost.deploy.host import MIN_PYTHON, HostRun
from roost.deploy.transport import HostFailure
from roost.target.protocol import (
    Check,
    ErrorKind,
    HostStatus,
    LockState,
    PayloadFormat,
    Phase,
    PreflightFacts,
    ProtocolError,
    Verdict,
)
from roost.target.treestage import bytes_to_fetch, held_pieces, local_blocks

if TYPE_CHECKING:
    from roost.deploy.state import Deploy

EXIT_PREFLIGHT_FAILED = 7
SKEW_WARN = 5.0  # seconds: logs and history stop lining up; BitTorrent does not care
PORT_TIMEOUT = 3.0


def probe_command(python: str, dest: str, tag: str, tracker_host: str, port_range: str,
                  address: str | None, tree: bool = False) -> str:
    source = Path(roost.target.preflight.__file__).read_text()
    args = ["--dest", dest, "--tag", tag, "--tracker-host", tracker_host,
            "--port-range", port_range, "--wait", f"{PORT_TIMEOUT + 3:g}",
            *(["--wanted-stdin"] if tree else [])]
    if address:
        args += ["--address", address]
    return " ".join(shlex.quote(a) for a in (python, "-I", "-c", source, *args))


def need_bytes(deploy: Deploy) -> int:
    """The payload, plus as much again to unpack it (as host-prepare requires)."""
    assert deploy.payload is not None
    m = deploy.payload.manifest
    return m.size * (1 if m.format in (PayloadFormat.FILE, PayloadFormat.TREE) else 2)


def would_fetch(deploy: Deploy, run: HostRun, held_hex: str) -> None:
    """A tree: the bytes this host would fetch once it reused what it holds."""
    assert deploy.payload is not None and deploy.payload.torrent is not None
    tree = deploy.payload.manifest.tree
    assert tree is not None
    bits = int(held_hex or "0", 16)
    files = tree.files
    done = {e.path for i, e in enumerate(files) if e.size and bits >> i & 1}
    info = parse(deploy.payload.torrent).info
    local = local_blocks(info, done, BLOCK_SIZE) if info.piece_length % BLOCK_SIZE == 0 else {}
    run.bytes_to_fetch = bytes_to_fetch(info, held_pieces(info, done), local, BLOCK_SIZE)
    run.bytes_reused = sum(e.size for e in files if e.path in done)
    run.files_reused = len(done)


async def preflight(run: HostRun, deploy: Deploy, tracker_host: str) -> None:
    """Probe one host; the verdicts go to run.health (reused as the check table)."""
    assert run.transport is not None
    config = deploy.config
    run.phase = Phase.PREFLIGHT
    tree = deploy.payload.manifest.tree if deploy.payload else None
    stream = await run.transport.start(probe_command(
        config.python, run.dest(config), deploy.tag, tracker_host, config.port_range,
        run.spec.announce, tree is not None), stdin=tree is not None)
    if tree is not None:  # which of the release's files this host already holds
        await stream.send("".join(f"{e.sha256}\n" for e in tree.files), eof=True)
    sent = time.time()
    lines = stream.lines()
    try:
        first = await asyncio.wait_for(lines.__anext__(), 30)
    except StopAsyncIteration:
        code = await stream.wait()
        kind = ErrorKind.PYTHON if code in (126, 127) else ErrorKind.PREFLIGHT
        raise HostFailure(kind, f"cannot run {config.python} (exit {code})") from None
    except (asyncio.TimeoutError, TimeoutError):
        stream.close()
        raise HostFailure(ErrorKind.TIMEOUT, "the preflight probe did not answer") from None
    try:
        info = PreflightFacts.from_json(first)
    except ProtocolError as exc:
        stream.close()
        raise HostFailure(ErrorKind.PREFLIGHT, str(exc)) from None
    received = time.time()
    checks = _checks(info, deploy, run, skew=info.time - (sent + received) / 2)
    checks["port"] = await _port_check(info)
    with contextlib.suppress(StopAsyncIteration, asyncio.TimeoutError, TimeoutError):
        await asyncio.wait_for(lines.__anext__(), PORT_TIMEOUT + 10)
    with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
        await asyncio.wait_for(stream.wait(), 10)
    stream.close()
    run.previous = run.current = info.current
    run.address = info.address
    run.already_had = info.have_tag
    if tree is not None and not run.already_had:
        would_fetch(deploy, run, info.held)
    run.checks = checks
    failed = [f"{name}: {c.detail}" for name, c in checks.items() if c.verdict is Verdict.FAIL]
    if failed:
        raise HostFailure(ErrorKind.PREFLIGHT, "; ".join(failed))
    run.status = HostStatus.WOULD_DEPLOY if not run.already_had else HostStatus.WOULD_SKIP
    run.reason = "already has this tag (no-op)" if run.already_had else ""


def _check(ok: bool, detail: str, warn: bool = False) -> Check:
    return Check(Verdict.OK if ok else (Verdict.WARN if warn else Verdict.FAIL), detail)


_LOCK_WORDS = {LockState.FREE: "free", LockState.HELD: "held by a running deploy",
               LockState.STALE: "stale (a deploy died); --break-lock takes it",
               LockState.UNKNOWN: "unknown (the lock file cannot be read)"}


def _checks(info: PreflightFacts, deploy: Deploy, run: HostRun, skew: float
            ) -> dict[str, Check]:
    version = info.python[:2]
    need = need_bytes(deploy)
    lock = info.lock
    return {
        "python": _check(version >= MIN_PYTHON, ".".join(map(str, info.python)) +
                         ("" if version >= MIN_PYTHON else " (roost needs >= 3.10)")),
        "disk": _check(run.already_had or info.free_bytes >= need,
                       f"{_mib(info.free_bytes)} free in {info.checked_dir}, need {_mib(need)}"),
        "writable": _check(info.writable, f"{info.checked_dir} "
                           + ("is writable" if info.writable else
                              f"is not writable by uid {info.euid}")),
        "clock": _check(abs(skew) <= SKEW_WARN, f"skew {skew:+.1f} s", warn=True),
        "lock": _check(lock is LockState.FREE
                       or (lock is LockState.STALE and deploy.config.break_lock),
                       _LOCK_WORDS[lock]),
    }


async def _port_check(info: PreflightFacts) -> Check:
    address, port = info.address, info.port
    if not address or not port:
        return _check(False, info.address_error or "no free port in the range")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), PORT_TIMEOUT)
    except (OSError, asyncio.TimeoutError, TimeoutError) as exc:
        timed_out = isinstance(exc, (asyncio.TimeoutError, TimeoutError))
        why = "timed out" if timed_out else (getattr(exc, "strerror", None) or str(exc))
        return _check(False, f"{address} port {port} not reachable from here: {why}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    via = " (forwarded to the host)" if info.forwarded else ""
    return _check(True, f"{address} port {port} reachable{via}")


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
