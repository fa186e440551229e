"""Target side: the per-destination deploy lock and the deploy history (standard library only).

Theory of operation. `roost host-lock` is started by a deploy over SSH and
lives as long as that deploy: it holds flock() on <dest>/.roost/deploy.lock
and writes who holds it (deploy id, operator, tag, start time) into the file.
The deploy ends it by writing one line `release <json>` on its stdin; the
holder then appends the outcome to the deploy history, empties the file and
exits. If the deploy dies, its SSH channel closes, the holder reads EOF and
exits *without* emptying the file: the flock is gone but the record stays.
So a second deploy sees one of three states:

    file empty / missing            free
    flock held                      a live deploy holds it: refused, always
    record present, flock free      stale (its deploy died): refused unless
                                    --break-lock, which logs the dead deploy
                                    as "died" in the history and takes over

A stale lock is not broken silently: a deploy that died mid-activation may
have left hosts on mixed releases, which the operator should look at first.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import os
import sys
import time
from pathlib import Path

from roost.errors import RoostError
from roost.target import Runner
from roost.target.protocol_common import EXIT_CODES, ErrorKind, HostStatus, ProtocolError
from roost.target.protocol_host import (
    DeployRecord,
    LockAnswer,
    LockInfo,
    LockReleased,
    LockState,
    parse_release_line,
)
from roost.target.release import Dest, _os_error, add_dest_args

LOCK_FILE = "deploy.lock"
DEPLOYS_MAX = 100
MAX_RELEASE_LINE = 64 * 1024


class LockedError(RoostError):
    """The destination is held by another deploy (live or stale)."""

    exit_code = EXIT_CODES[ErrorKind.LOCK_HELD]

    def __init__(self, message: str) -> None:
        super().__init__(message)


def lock_path(dest: Dest) -> Path:
    return dest.meta / LOCK_FILE


def _read_record(fd: int) -> DeployRecord | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 64 * 1024)
    if not data.strip():
        return None
    try:
        return DeployRecord.from_json(data)
    except ProtocolError:
        return DeployRecord("?", "?", note="unreadable lock record")


def _write_record(fd: int, record: DeployRecord | None) -> None:
    os.ftruncate(fd, 0)
    if record is not None:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record.to_json().encode())
    os.fsync(fd)


def describe(record: DeployRecord) -> str:
    since = record.started
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if since else "?"
    return (f"deploy {record.deploy_id or '?'} of {record.tag or '?'} "
            f"by {record.who or '?'} since {when}")


def inspect_lock(dest: Dest) -> LockInfo:
    """free / held (a live deploy) / stale (its deploy died); read-only."""
    try:
        fd = os.open(lock_path(dest), os.O_RDONLY)
    except FileNotFoundError:
        return LockInfo(LockState.FREE)
    except OSError as exc:
        return LockInfo(LockState.UNKNOWN, error=exc.strerror)
    try:
        record = _read_record(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            live = False
        except BlockingIOError:
            live = True
        if record is None and not live:
            return LockInfo(LockState.FREE)
        return LockInfo(LockState.HELD if live else LockState.STALE, record or DeployRecord())
    finally:
        os.close(fd)


def append_history(dest: Dest, entry: DeployRecord) -> None:
    """One line per deploy in state.json's `deploys` (newest last, capped)."""
    with dest.locked():
        state = dest.load_state()
        deploys = state.setdefault("deploys", [])
        deploys.append(entry.to_dict())
        state["deploys"] = deploys[-DEPLOYS_MAX:]
        dest.save_state(state)


def history(dest: Dest, last: int = 10) -> list[DeployRecord]:
    """The last deploys; an entry this version cannot read is left out."""
    if not dest.meta.is_dir():
        return []
    deploys = dest.load_state().get("deploys", [])
    out = []
    for entry in deploys[-last:] if isinstance(deploys, list) else []:
        with contextlib.suppress(ProtocolError):
            out.append(DeployRecord.from_dict(entry))
    return out


# --- roost host-lock ----------------------------------------------------------------


def add_lock(parser: argparse.ArgumentParser) -> Runner:
    parser.description = ("Hold the deploy lock on --dest until `release <json>` arrives on "
                          "stdin (or stdin closes: the lock is then left stale).")
    add_dest_args(parser)
    parser.add_argument("--deploy-id", required=True)
    parser.add_argument("--who", required=True, help="operator, e.g. alice@laptop")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--break-lock", action="store_true",
                        help="take over a stale lock left by a deploy that died")
    return run_lock


def acquire(dest: Dest, record: DeployRecord,
            break_stale: bool) -> tuple[int, DeployRecord | None]:
    """Take the lock; returns (fd, the stale record broken or None). Raises
    LockedError, or ReleaseError (one sentence) for a full disk, permissions..."""
    try:
        return _acquire(dest, record, break_stale)
    except OSError as exc:
        raise _os_error(exc, f"cannot take the deploy lock in {dest.meta}") from None


def _acquire(dest: Dest, record: DeployRecord,
             break_stale: bool) -> tuple[int, DeployRecord | None]:
    dest.ensure()
    fd = os.open(lock_path(dest), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for attempt in range(16):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_record(fd)
                # no record: a `roost status` or dry-run probe holds LOCK_SH for an
                # instant; only a holder that wrote its record is another deploy
                if holder is not None or attempt == 15:
                    raise LockedError(
                        f"locked by a running {describe(holder or DeployRecord())}") from None
                time.sleep(0.1)
        stale = _read_record(fd)
        if stale is not None and not break_stale:
            raise LockedError(f"stale lock: {describe(stale)} died without releasing it; "
                              "check the hosts, then deploy with --break-lock")
        if stale is not None:
            append_history(dest, dataclasses.replace(
                stale, ended=time.time(), result=HostStatus.DIED, broken_by=record.who))
        _write_record(fd, record)
    except BaseException:
        os.close(fd)
        raise
    return fd, stale


def run_lock(ns: argparse.Namespace) -> int:
    dest = Dest(ns.dest)
    record = DeployRecord(ns.deploy_id, ns.who, ns.tag, started=time.time(), pid=os.getpid())
    fd, stale = acquire(dest, record, ns.break_lock)
    try:
        print(LockAnswer(True, stale).to_json(), flush=True)
        outcome = parse_release_line(sys.stdin.readline(MAX_RELEASE_LINE))
        if outcome is None:
            return 1  # EOF: our deploy died; the record stays (stale) for the next one
        answer = LockReleased(True)
        try:
            append_history(dest, dataclasses.replace(
                record, ended=time.time(), result=outcome.result, current=outcome.current,
                kind=outcome.kind, reason=outcome.reason, exit_code=outcome.exit_code))
        except (RoostError, OSError) as exc:  # the lock must still be freed
            answer = LockReleased(True, f"deploy history not written: {exc}")
        try:
            _write_record(fd, None)
        except OSError as exc:
            raise _os_error(exc, "cannot clear the deploy lock") from None
        print(answer.to_json(), flush=True)
        return 0
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
