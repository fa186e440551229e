"""Target-side helper subcommands the deploy host runs over SSH (standard library only).

    roost host-prepare   make <dest>/.roost/deploys/<id>/ from a JSON blob on stdin
                         (manifest + base64 torrent); report the address to announce,
                         free space, and whether the release is already here
    roost host-status    current release, staged releases, live roost processes
    roost host-clean     stop this deploy's (or every) roost process by its pid file,
                         remove deploy dirs and half-unpacked releases; idempotent
    roost host-rollback  switch `current` back (--none: the host had no release before)
    roost host-health    run a health check in `current`, report exit code and output

They are named host-* so they never shadow the operator commands
`roost status|clean|rollback`, which run them on every host.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import os
import signal
import socket
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from roost.core.tree import proven_torrent
from roost.errors import MetainfoError, UsageError
from roost.target import Runner
from roost.target.checked import remember
from roost.target.hostlock import history, inspect_lock
from roost.target.protocol_common import (
    MAX_PREPARE_INPUT,
    MAX_PREPARE_JSON,
    HookPhase,
    ProtocolError,
    RollbackResult,
)
from roost.target.protocol_host import (
    CleanResult,
    HealthResult,
    PrepareRequest,
    PrepareResult,
    ProcessInfo,
    ReleaseInfo,
    StatusResult,
)
from roost.target.release import (
    Dest,
    HookError,
    Manifest,
    ReleaseError,
    _remove_tree,
    add_dest_args,
    atomic_write,
    emit,
    rollback,
    run_hook,
)

DEPLOYS = "deploys"
STOP_WAIT = 5.0
EXEC_WAIT = 1.0  # seconds a pid file's process gets to become the fetch it names
#: host-prepare's `tls` keys -> files in the deploy directory (fetch's --tls-* flags)
PEER_TLS = {"cert": "peer-cert.pem", "key": "peer-key.pem", "ca": "peer-ca.pem"}


def _deploy_id(text: str) -> str:
    if not text or not all(c.isalnum() or c in "-_" for c in text) or len(text) > 64:
        raise UsageError(f"deploy id {text!r} must be 1-64 characters of [A-Za-z0-9_-]")
    return text


def deploy_dir(dest: Dest, deploy_id: str) -> Path:
    return dest.meta / DEPLOYS / _deploy_id(deploy_id)


# --- addressing: what this host announces, with no DNS involved ------------------


def route_source(target: str, port: int) -> str:
    """The source address of this host's route to `target` (a UDP connect sends nothing)."""
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((target, port or 9))
        return str(s.getsockname()[0])


def interface_address(name: str, want_v6: bool = False) -> str:
    """The first address of interface `name` (global IPv6 from /proc, IPv4 by ioctl)."""
    if want_v6:
        with contextlib.suppress(OSError), open("/proc/net/if_inet6") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[5] == name and fields[3] == "00":
                    return str(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
        raise ReleaseError(f"interface {name} has no global IPv6 address")
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), siocgifaddr, struct.pack("256s", name.encode()[:15]))
        except OSError:
            raise ReleaseError(f"interface {name} has no IPv4 address") from None
    return socket.inet_ntoa(packed[20:24])


# --- host-prepare ------------------------------------------------------------------


def add_prepare(parser: argparse.ArgumentParser) -> Runner:
    parser.description = "Prepare a deploy directory from a JSON blob on stdin."
    add_dest_args(parser)
    parser.add_argument("--deploy-id", required=True)
    parser.add_argument("--tracker-host", help="report the source address of the route here")
    parser.add_argument("--tracker-port", type=int, default=0)
    parser.add_argument("--interface", help="report this interface's address instead")
    parser.add_argument("--address", help="announce this address (from configuration)")
    parser.add_argument("--allowed-signers",
                        help="refuse a manifest not signed by a key in this file "
                        "(deploy --require-signature)")
    return run_prepare


def run_prepare(ns: argparse.Namespace) -> int:
    blob = sys.stdin.buffer.read(MAX_PREPARE_INPUT + 1)
    if len(blob) > MAX_PREPARE_INPUT:
        raise UsageError("host-prepare input is too large")
    try:
        data = PrepareRequest.from_json(inflate_request(blob)).to_dict()
    except (ProtocolError, zlib.error) as exc:
        raise UsageError(f"bad host-prepare input: {exc}") from None
    # first, before the manifest is even read: the signature is the host's own check
    signer = _check_signature(data, Path(ns.allowed_signers)) if ns.allowed_signers else None
    try:
        manifest = Manifest.load(data["manifest"])
        torrent = torrent_of(data, manifest)
        tls = peer_tls_files(data.get("tls"))
    except (ValueError, KeyError, TypeError, zlib.error) as exc:
        raise UsageError(f"bad host-prepare input: {exc}") from None
    dest = Dest(ns.dest)
    dest.ensure()
    work = deploy_dir(dest, ns.deploy_id)
    (work / "staging").mkdir(parents=True, exist_ok=True)
    # validated above: fetch and stage rebuild it from these bytes without re-validating
    remember(work / "manifest.json", json.dumps(manifest.to_dict()).encode())
    atomic_write(work / "payload.torrent", torrent)
    for filename, pem in tls.items():  # 0600: atomic_write's mkstemp
        atomic_write(work / filename, pem)
    state = dest.load_state()
    known = state["releases"].get(manifest.tag)
    have = bool(known and known.get("sha256") == manifest.sha256
                and (dest.releases / manifest.tag).is_dir())
    vfs = os.statvfs(ns.dest)
    address = announce_address(ns)
    result = PrepareResult(
        dir=str(work), have=have, current=dest.current_tag(),
        free_bytes=vfs.f_bavail * vfs.f_frsize, address=address,
        address_local=address is None or is_local(address),
        euid=os.geteuid(), signed_by=signer,
    )
    emit(result.to_dict(), ns.json)
    return 0


def _check_signature(data: dict[str, Any], allowed_signers: Path) -> str:
    """The principal who signed the manifest exactly as sent (its canonical JSON,
    namespace "roost"), verified with this host's ssh-keygen; or a one-line refusal."""
    # here: only --allowed-signers reads a signature, and the agent session (which
    # imports this module once for every host-prepare) starts faster without it
    from roost.target.signing import SignatureError, canonical, verify_bytes

    signature = data.get("signature")
    if not isinstance(signature, str) or not signature.strip():
        raise SignatureError("signature refused: unsigned: the deploy's manifest carries no "
                             "signature (give deploy --sign-key)")
    try:
        return verify_bytes(allowed_signers, canonical(data["manifest"]), signature)
    except SignatureError as exc:
        raise SignatureError(f"signature refused: {exc}") from None


def inflate_request(blob: bytes) -> bytes:
    """A tree's input comes zlib-compressed (a manifest of 100,000 entries is tens of
    MB of JSON); inflated output is capped like the input, against a zip bomb."""
    if blob[:1] != b"\x78":  # zlib's header; JSON starts with "{"
        return blob
    inflater = zlib.decompressobj()
    out = inflater.decompress(blob, MAX_PREPARE_JSON + 1)
    if len(out) > MAX_PREPARE_JSON or inflater.unconsumed_tail:
        raise UsageError("host-prepare input is too large once decompressed")
    return out


def torrent_of(data: dict[str, Any], manifest: Manifest) -> bytes:
    """The torrent as sent, or for a tree rebuilt from the manifest and the piece
    hashes, and then proven by the info-hash the manifest carries."""
    if "torrent" in data:
        return base64.b64decode(data["torrent"], validate=True)
    if manifest.tree is None:
        raise KeyError("torrent")
    pieces = base64.b64decode(data["pieces"], validate=True)
    try:
        return proven_torrent(manifest.tree, manifest.tag, pieces)
    except MetainfoError as exc:
        raise UsageError(f"bad host-prepare input: {exc}") from None


def peer_tls_files(tls: Any) -> dict[str, bytes]:
    """`--peer-tls`: file name -> PEM of this host's certificate, key and the deploy CA
    (checked before anything is written; host-clean removes them with the deploy dir)."""
    if tls is None:
        return {}
    if not isinstance(tls, dict) or not all(isinstance(tls.get(k), str) for k in PEER_TLS):
        raise UsageError("bad host-prepare input: tls needs cert, key and ca (PEM)")
    return {filename: tls[name].encode() for name, filename in PEER_TLS.items()}


def is_local(address: str) -> bool:
    """Whether this host can bind `address`; a configured one may be another box's
    (a NAT or load balancer forwarding to us), to announce but not to listen on."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


def announce_address(ns: argparse.Namespace) -> str | None:
    """The address this host announces (host-prepare, host-origin): --address as
    configured, else --interface's, else the source of the route to the tracker."""
    if ns.address:
        try:
            return str(ipaddress.ip_address(ns.address))
        except ValueError:
            raise UsageError(f"--address {ns.address[:80]!r} is not an IP address") from None
    v6 = bool(ns.tracker_host and ":" in ns.tracker_host)
    if ns.interface:
        return interface_address(ns.interface, v6)
    if ns.tracker_host:
        return route_source(ns.tracker_host, ns.tracker_port)
    return None


# --- host-status / host-clean / host-rollback ----------------------------------------


def _read_pid(path: Path) -> int | None:
    """The pid in `path` (written whole or not at all: fsutil.write_pid_file)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def roost_alive(pid: int) -> bool:
    """Alive and still a roost process (a recycled pid is not ours to touch)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"roost" in cmdline and (b"fetch" in cmdline or b"seed" in cmdline)


def running(dest: Dest) -> list[ProcessInfo]:
    out = []
    for pidfile in sorted((dest.meta / DEPLOYS).glob("*/*.pid")):
        pid = _read_pid(pidfile)
        if pid is not None and roost_alive(pid):
            out.append(ProcessInfo(pid, pidfile.parent.name, pidfile.stem))
    return out


def add_status(parser: argparse.ArgumentParser) -> Runner:
    parser.description = "Show the current release, staged releases and live roost processes."
    add_dest_args(parser)
    return run_status


def run_status(ns: argparse.Namespace) -> int:
    dest = Dest(ns.dest)
    if not dest.root.is_dir():
        emit(StatusResult(str(dest.root), exists=False).to_dict(), ns.json)
        return 0
    state = dest.load_state() if dest.meta.is_dir() else {"releases": {}, "history": []}
    deploys = sorted(p.name for p in (dest.meta / DEPLOYS).glob("*")) if dest.meta.is_dir() else []
    releases = []
    for tag in dest.release_tags():
        known = state["releases"].get(tag)
        known = known if isinstance(known, dict) else {}
        sha, at = known.get("sha256"), known.get("staged_at")
        releases.append(ReleaseInfo(tag, sha if isinstance(sha, str) else None,
                                    at if isinstance(at, (int, float)) else None))
    emit(StatusResult(
        str(dest.root), exists=True, current=dest.current_tag(), releases=tuple(releases),
        running=tuple(running(dest)), deploys=tuple(deploys), lock=inspect_lock(dest),
        history=tuple(history(dest)),
    ).to_dict(), ns.json)
    return 0


def add_clean(parser: argparse.ArgumentParser) -> Runner:
    parser.description = "Stop roost processes started by deploys and remove their files."
    add_dest_args(parser)
    parser.add_argument("--deploy-id", help="only this deploy (default: every deploy)")
    return run_clean


def _await_exec(pid: int, wait: float = EXEC_WAIT) -> None:
    """A pid file is written by the session's child just before it execs the fetch:
    until then its command line is still the session's, which roost_alive does not
    take for a fetch. Give such a child `wait` s to exec (or exit); a recycled pid
    that stays a session is waited for, never stopped."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"roost" not in cmdline or b"session" not in cmdline or roost_alive(pid):
            return
        time.sleep(0.02)


def stop_pid(pid: int, wait: float = STOP_WAIT) -> bool:
    """SIGTERM, then SIGKILL after `wait` s. True when it had to be stopped."""
    if not roost_alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and roost_alive(pid):
        time.sleep(0.05)
    if roost_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return True


def clean(dest: Dest, deploy_id: str | None) -> CleanResult:
    base = dest.meta / DEPLOYS
    dirs = [deploy_dir(dest, deploy_id)] if deploy_id else sorted(base.glob("*"))
    stopped: list[int] = []
    removed: list[str] = []
    for work in dirs:
        # moved aside before the pid files are read: a fetch whose pid file is not yet
        # written then cannot start (the agent writes it whole, under a temporary name
        # renamed into place, before the exec: fsutil.write_pid_file, which fails on
        # the vanished path), and one whose pid file is written is found in the moved
        # directory, never as an empty file; a child that wrote it but has not yet
        # exec'd its fetch is given EXEC_WAIT to (_await_exec)
        doomed = work.with_name(f".{work.name.lstrip('.')}.del-{os.getpid()}")
        try:
            os.rename(work, doomed)
        except OSError:
            doomed = work  # already gone, or moved aside by an earlier clean
        for pidfile in doomed.glob("*.pid"):
            pid = _read_pid(pidfile)
            if pid is not None:
                _await_exec(pid)
            if pid is not None and stop_pid(pid):
                stopped.append(pid)
        if doomed.exists():
            _remove_tree(doomed)
            removed.append(work.name)
    # half-unpacked releases of a killed stage (nobody holds the lock when we get it)
    if dest.releases.is_dir():
        with dest.locked(timeout=10):
            for tmp in dest.releases.glob(".*.tmp-*"):
                _remove_tree(tmp)
                removed.append(tmp.name)
            for tmp in dest.releases.glob(".*.del-*"):
                _remove_tree(tmp)
    return CleanResult(str(dest.root), tuple(stopped), tuple(removed))


def run_clean(ns: argparse.Namespace) -> int:
    dest = Dest(ns.dest)
    if not dest.root.is_dir():
        emit(CleanResult(str(dest.root)).to_dict(), ns.json)
        return 0
    emit(clean(dest, ns.deploy_id).to_dict(), ns.json)
    return 0


def add_rollback(parser: argparse.ArgumentParser) -> Runner:
    parser.description = "Make the previous (or the given) release current again."
    add_dest_args(parser)
    parser.add_argument("--to", help="release tag (default: the previous one)")
    parser.add_argument("--none", action="store_true",
                        help="remove `current` (undo a first deploy: there was no release)")
    parser.add_argument("--expect", metavar="TAG",
                        help="with --none: only if `current` is this release")
    return run_rollback


def run_rollback(ns: argparse.Namespace) -> int:
    dest = Dest(ns.dest)
    if ns.none:
        with dest.locked():
            previous = dest.current_tag()
            if ns.expect is not None and previous != ns.expect:
                raise ReleaseError(
                    f"current is {previous or 'nothing'}, not {ns.expect}: left as it is"
                )
            with contextlib.suppress(FileNotFoundError):
                dest.current.unlink()
        emit(RollbackResult(str(ns.dest), None, previous).to_dict(), ns.json)
        return 0
    emit(rollback(dest, ns.to).to_dict(), ns.json)
    return 0


def add_health(parser: argparse.ArgumentParser) -> Runner:
    parser.description = "Run a health-check command in <dest>/current; report exit and output."
    add_dest_args(parser)
    parser.add_argument("--command", required=True, help="shell command; exit 0 = healthy")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--previous", help="the release before this one (for ROOST_PREVIOUS)")
    return run_health


def run_health(ns: argparse.Namespace) -> int:
    """Always exits 0 with a verdict: a failing check is a result, not an agent error."""
    dest = Dest(ns.dest)
    tag = dest.current_tag()
    if tag is None:
        raise ReleaseError(f"{dest.current} does not point at a release")
    verdict = health_check(dest, tag, ns.command, ns.timeout, ns.previous)
    emit(dataclasses.replace(verdict, dest=str(dest.root), tag=tag).to_dict(), ns.json)
    return 0


def health_check(dest: Dest, tag: str, command: str, timeout: float,
                 previous: str | None) -> HealthResult:
    """Run the check in releases/<tag>: a verdict, never an exception (a failing check
    is a result). Shared by host-health and the pull agent."""
    try:
        hook = run_hook(command, dest.releases / tag, tag, dest.root, timeout, previous,
                        HookPhase.HEALTH)
        return HealthResult.of(hook, True)
    except HookError as exc:
        return HealthResult.of(exc.hook, False, str(exc))
