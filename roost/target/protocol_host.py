"""The host protocol's records of the host commands a deploy's agent session runs.

Standard library only. host-prepare's request and result, host-lock's answers and
the deploy records it keeps, host-status, host-clean and host-health: what the
session's forks print, and what it loads once (roost.target.session). Split from
roost.target.protocol, which re-exports all of it, with the records of
roost.target.protocol_common that these build on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from roost.target.protocol_common import (
    _BOOL,
    _FLOAT,
    _INT,
    _LIST,
    _OPT_DICT,
    _OPT_FLOAT,
    _OPT_INT,
    _OPT_STR,
    _STR,
    MAX_PREPARE_JSON,
    ErrorKind,
    HookPhase,
    HookRecord,
    HostStatus,
    ProtocolError,
    _check,
    _enum,
    _items,
    _load,
    _Record,
    _texts,
    _Types,
    _Value,
)

# --- host-prepare -----------------------------------------------------------------------


@dataclass(frozen=True)
class PrepareResult:
    """What `host-prepare --json` prints: where this deploy's files are on the host."""

    dir: str
    free_bytes: int
    current: str | None = None
    have: bool = False
    address: str | None = None
    address_local: bool = True
    euid: int | None = None
    signed_by: str | None = None  # the key that signed the manifest, if one was required

    _TYPES: ClassVar[_Types] = {"dir": _STR, "free_bytes": _INT, "current": _OPT_STR, "have": _BOOL,
              "address": _OPT_STR, "address_local": _BOOL, "euid": _INT, "signed_by": _STR}

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in data.items() if v is not None or k in ("current", "address")}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, line: str | bytes) -> PrepareResult:
        data = _load(line, "host-prepare")
        # a newer agent may add fields: the ones we know are checked, others ignored
        _check(data, "host-prepare", cls._TYPES, ("dir", "free_bytes"), open_=True)
        return cls(**{k: v for k, v in data.items() if k in cls._TYPES})


@dataclass(frozen=True)
class PrepareRequest:
    """host-prepare's stdin: the deploy manifest and how to get its payload."""

    manifest: dict[str, Any]
    torrent: str | None = None  # base64 of the .torrent (file and tar formats)
    pieces: str | None = None  # base64 piece hashes (tree: the host rebuilds the torrent)
    signature: str | None = None  # the manifest's OpenSSH signature
    tls: dict[str, str] | None = None  # this host's certificate, key and CA

    #: the JSON, once inflated (a tree manifest of 100,000 entries is tens of MB)
    MAX_BYTES = MAX_PREPARE_JSON

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> PrepareRequest:
        if len(text) > cls.MAX_BYTES:
            raise ProtocolError(f"deploy request: {len(text)} bytes is over {cls.MAX_BYTES}")
        try:
            data = json.loads(text)
        except ValueError:
            raise ProtocolError("deploy request: not JSON") from None
        if not isinstance(data, dict):
            raise ProtocolError("deploy request: expected a JSON object")
        types = {"manifest": (dict,), "torrent": _STR, "pieces": (str,), "signature": _STR,
                 "tls": (dict,)}
        for key, value in data.items():
            if key not in types:
                raise ProtocolError(f"deploy request: unknown field {str(key)[:40]!r}")
            if not isinstance(value, types[key]):
                raise ProtocolError(f"deploy request: field {key!r} has the wrong type")
        if "manifest" not in data:
            raise ProtocolError("deploy request: missing field 'manifest'")
        if ("torrent" in data) == ("pieces" in data):
            raise ProtocolError("deploy request: needs exactly one of 'torrent' and 'pieces'")
        tls = data.get("tls")
        if tls is not None and not all(isinstance(v, str) for v in tls.values()):
            raise ProtocolError("deploy request: field 'tls' has the wrong type")
        return cls(**data)


# --- host-health and host-clean ----------------------------------------------------------


@dataclass(frozen=True)
class HealthResult(_Record):
    """`host-health --json` (with dest and tag), and a pull agent's `health`: the
    check's verdict and, when it ran, its hook record's fields."""

    ok: bool
    command: str | None = None
    phase: HookPhase | None = None
    exit: int | None = None
    seconds: float | None = None
    output: str | None = None
    reason: str | None = None
    dest: str | None = None
    tag: str | None = None

    _WHAT = "health check"
    _TYPES: ClassVar[_Types] = {"ok": _BOOL, "command": _STR, "phase": _STR, "exit": _OPT_INT,
              "seconds": _FLOAT, "output": _STR, "reason": _STR, "dest": _STR, "tag": _STR}
    _REQUIRED = ("ok",)
    _SIGNED = frozenset({"exit"})

    @classmethod
    def of(cls, hook: HookRecord, ok: bool, reason: str | None = None) -> HealthResult:
        return cls(ok, hook.command, hook.phase, hook.exit, hook.seconds, hook.output, reason)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.command is not None:
            out["exit"] = self.exit  # a timed-out check: exit null, as a hook record's
        return out

    @classmethod
    def _build(cls, data: dict[str, Any]) -> HealthResult:
        if "phase" in data:
            data = {**data, "phase": _enum(HookPhase, data["phase"], cls._WHAT, "phase")}
        return cls(**data)


@dataclass(frozen=True)
class CleanResult(_Record):
    """`host-clean --json`: the pids stopped and the directories removed."""

    dest: str
    stopped: tuple[int, ...] = ()
    removed: tuple[str, ...] = ()

    _WHAT = "host-clean"
    _TYPES: ClassVar[_Types] = {"dest": _STR, "stopped": _LIST, "removed": _LIST}
    _REQUIRED = ("dest", "stopped", "removed")

    @classmethod
    def _build(cls, data: dict[str, Any]) -> CleanResult:
        return cls(data["dest"], _texts(data["stopped"], cls._WHAT, "stopped", int),
                   _texts(data["removed"], cls._WHAT, "removed"))


# --- host-status and the deploy lock ----------------------------------------------------


class LockState(_Value):
    """A destination's deploy lock (roost.target.hostlock.inspect_lock)."""

    FREE = "free"
    HELD = "held"  # a live deploy holds it
    STALE = "stale"  # its deploy died without releasing it
    UNKNOWN = "unknown"  # the lock file cannot be read



@dataclass(frozen=True)
class DeployRecord(_Record):
    """Who holds a deploy lock (its file), and a host's deploy history entry: the same
    record, with the outcome added when the deploy released the lock."""

    deploy_id: str | None = None
    who: str | None = None
    tag: str | None = None
    started: float | None = None
    pid: int | None = None
    ended: float | None = None
    result: HostStatus | None = None  # None: a result this side does not know
    current: str | None = None
    kind: ErrorKind | None = None
    reason: str | None = None
    exit_code: int | None = None
    broken_by: str | None = None
    note: str | None = None

    _WHAT = "deploy record"
    _TYPES: ClassVar[_Types] = {"deploy_id": _STR, "who": _STR, "tag": _STR, "started": _OPT_FLOAT,
              "pid": _OPT_INT, "ended": _OPT_FLOAT, "result": _OPT_STR, "current": _OPT_STR,
              "kind": _OPT_STR, "reason": _OPT_STR, "exit_code": _OPT_INT,
              "broken_by": _OPT_STR, "note": _STR}

    @classmethod
    def _build(cls, data: dict[str, Any]) -> DeployRecord:
        # old history entries may name kinds and results this side dropped: shown as none
        kind = data.get("kind")
        return cls(**{**data, "result": HostStatus.parse(data.get("result")),
                      "kind": ErrorKind.parse(kind, ErrorKind.ERROR) if kind else None})


@dataclass(frozen=True)
class LockInfo(_Record):
    """A destination's deploy lock as `host-status` reports it."""

    state: LockState
    holder: DeployRecord | None = None
    error: str | None = None

    _WHAT = "deploy lock"
    _TYPES: ClassVar[_Types] = {"state": _STR, "holder": (dict,), "error": _OPT_STR}
    _REQUIRED = ("state",)

    @classmethod
    def _build(cls, data: dict[str, Any]) -> LockInfo:
        holder = data.get("holder")
        return cls(_enum(LockState, data["state"], cls._WHAT, "state"),
                   DeployRecord.from_dict(holder) if holder is not None else None,
                   data.get("error"))


@dataclass(frozen=True)
class ReleaseInfo(_Record):
    tag: str
    sha256: str | None = None
    staged_at: float | None = None

    _WHAT = "release"
    _TYPES: ClassVar[_Types] = {"tag": _STR, "sha256": _OPT_STR, "staged_at": _OPT_FLOAT}
    _REQUIRED = ("tag",)
    _NULLS = frozenset({"sha256", "staged_at"})


@dataclass(frozen=True)
class ProcessInfo(_Record):
    """A live roost process a deploy started (its pid file)."""

    pid: int
    deploy_id: str
    what: str  # the pid file's name: fetch

    _WHAT = "process"
    _TYPES: ClassVar[_Types] = {"pid": _INT, "deploy_id": _STR, "what": _STR}
    _REQUIRED = ("pid", "deploy_id", "what")


@dataclass(frozen=True)
class StatusResult(_Record):
    """`host-status --json`."""

    dest: str
    exists: bool
    current: str | None = None
    releases: tuple[ReleaseInfo, ...] = ()
    running: tuple[ProcessInfo, ...] = ()
    deploys: tuple[str, ...] = ()
    lock: LockInfo | None = None
    history: tuple[DeployRecord, ...] = ()

    _WHAT = "host-status"
    _TYPES: ClassVar[_Types] = {
        "dest": _STR, "exists": _BOOL, "current": _OPT_STR, "releases": _LIST,
              "running": _LIST, "deploys": _LIST, "lock": (dict,), "history": _LIST}
    _REQUIRED = ("dest", "exists")
    _NULLS = frozenset({"current"})

    @classmethod
    def _build(cls, data: dict[str, Any]) -> StatusResult:
        lock = data.get("lock")
        return cls(data["dest"], data["exists"], data.get("current"),
                   _items(ReleaseInfo, data.get("releases", [])),
                   _items(ProcessInfo, data.get("running", [])),
                   _texts(data.get("deploys", []), cls._WHAT, "deploys"),
                   LockInfo.from_dict(lock) if lock is not None else None,
                   _items(DeployRecord, data.get("history", [])))


@dataclass(frozen=True)
class LockAnswer(_Record):
    """`host-lock --json`'s first line once it holds the lock (a refusal is an
    ErrorRecord, kind LOCK_HELD when another deploy holds it)."""

    locked: bool
    broke: DeployRecord | None = None  # the stale record taken over (--break-lock)

    _WHAT = "host-lock"
    _TYPES: ClassVar[_Types] = {"locked": _BOOL, "broke": _OPT_DICT}
    _REQUIRED = ("locked",)
    _NULLS = frozenset({"broke"})

    @classmethod
    def _build(cls, data: dict[str, Any]) -> LockAnswer:
        broke = data.get("broke")
        return cls(data["locked"], DeployRecord.from_dict(broke) if broke is not None else None)


@dataclass(frozen=True)
class LockReleased(_Record):
    """`host-lock`'s last line, after `release <outcome>`."""

    released: bool
    warning: str | None = None

    _WHAT = "host-lock release"
    _TYPES: ClassVar[_Types] = {"released": _BOOL, "warning": _STR}
    _REQUIRED = ("released",)


RELEASE_WORD = "release"


def release_line(outcome: DeployRecord) -> str:
    """What the deploy writes to host-lock's stdin to end it: the outcome for the history."""
    return f"{RELEASE_WORD} {outcome.to_json()}\n"


def parse_release_line(line: str) -> DeployRecord | None:
    """host-lock's side: the outcome, or None when the line is not a release (EOF: the
    deploy died). An outcome it cannot read is still a release, with nothing recorded."""
    if not line.startswith(RELEASE_WORD):
        return None
    try:
        return DeployRecord.from_json(line[len(RELEASE_WORD):].strip() or "{}")
    except ProtocolError:
        return DeployRecord()
