"""Durable tracker state: registrations, secrets, completion marks.

Only what a restart must not lose is kept; live peers are not (their next
announces rebuild every swarm within one interval). The file is JSON written
atomically: a temporary file in the same directory, fsync, rename over the
old one, fsync the directory, so a crash leaves either the old or the new
state, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.core.tracker_swarm import SwarmRecord
from roost.errors import RoostError

FORMAT_VERSION = 1
MAX_STATE_BYTES = 64 * 1024 * 1024


class StateError(RoostError):
    """The state file exists but cannot be used."""


@dataclass
class TrackerState:
    admin_token: str | None = None
    swarms: list[SwarmRecord] = field(default_factory=list)


def _record_to_json(rec: SwarmRecord) -> dict[str, Any]:
    return {
        "info_hash": rec.info_hash.hex(),
        "token": rec.token,
        "name": rec.name,
        "expected_peers": rec.expected_peers,
        "source": rec.source,
        "finished": sorted(p.hex() for p in rec.finished),
        "failed": sorted(rec.failed),
    }


def _record_from_json(obj: Any) -> SwarmRecord:
    if not isinstance(obj, dict):
        raise StateError("swarm entry is not an object")
    info_hash = bytes.fromhex(str(obj["info_hash"]))
    if len(info_hash) != 20:
        raise StateError("swarm entry has a bad info_hash")
    return SwarmRecord(
        info_hash=info_hash,
        token=str(obj["token"]),
        name=str(obj.get("name", "")),
        expected_peers=int(obj.get("expected_peers", 0)),
        source=str(obj.get("source", "api")),
        finished={bytes.fromhex(str(p)) for p in obj.get("finished", [])},
        failed={str(f) for f in obj.get("failed", [])},
    )


def dumps(state: TrackerState) -> bytes:
    doc = {
        "version": FORMAT_VERSION,
        "admin_token": state.admin_token,
        "swarms": [_record_to_json(r) for r in state.swarms],
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"


def loads(data: bytes) -> TrackerState:
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise StateError(f"unsupported state format (want version {FORMAT_VERSION})")
        token = doc.get("admin_token")
        swarms = [_record_from_json(s) for s in doc.get("swarms", [])]
    except StateError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateError(f"corrupt tracker state: {exc}") from None
    return TrackerState(admin_token=str(token) if token else None, swarms=swarms)


def load(path: Path) -> TrackerState:
    """Read the state file; a missing file is an empty state."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return TrackerState()
    except OSError as exc:
        raise StateError(f"cannot read tracker state {path}: {exc.strerror}") from None
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"tracker state {path} is larger than {MAX_STATE_BYTES} bytes")
    try:
        return loads(data)
    except StateError as exc:
        raise StateError(f"{path}: {exc}") from None


def save(path: Path, state: TrackerState) -> None:
    """Replace the state file atomically (temp + fsync + rename + dir fsync)."""
    write_atomic(path, dumps(state))


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new bytes only."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # it holds secrets
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
