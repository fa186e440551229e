"""The host protocol: what the operator and the agent on a host say to each other.

Standard library only (the agent imports it under `python3 -I -S`). Both sides use
these records: the agent writes them as one JSON object per line, the operator
parses them with `from_json`, which checks types, rejects unknown fields and caps
sizes, so a confused or hostile host gives one clear `ProtocolError` line, never a
traceback. An error's kind travels as a field and as the exit code; nobody reads
it out of message text. Enum values are the strings the `--json` output always had.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, ClassVar

from roost.errors import RoostError

_Types = dict[str, tuple[type, ...]]

#: the longest line of agent output we parse (a result, an event, an error)
MAX_LINE = 1 << 20
#: the longest message or reason we keep from a host
MAX_TEXT = 4096


class ProtocolError(RoostError):
    """A host said something the protocol does not allow."""


class ErrorKind(str, Enum):
    """Why a host failed: machine-readable, shown as `[kind]` and in `--json`."""

    # what the agent reports (each with its own exit code, see EXIT_CODES)
    ERROR = "error"  # a release operation failed; the message says why
    USAGE = "usage"
    LOCK_HELD = "locked"
    DISK_FULL = "disk-full"
    SIGNATURE = "signature"
    HOOK = "hook"
    # the step that failed, when nothing more specific is known
    AGENT = "agent"
    PYTHON = "python"
    PREPARE = "prepare"
    FETCH = "fetch"
    STAGE = "stage"
    ACTIVATE = "activate"
    CLEAN = "clean"
    HEALTH = "health"
    ROLLBACK = "rollback"
    PREFLIGHT = "preflight"
    STALE = "stale"
    INTERNAL = "internal"
    REFUSED = "refused"  # a pull agent refused an instruction
    STATUS = "status"  # the fleet commands' steps (roost status, rollback)
    # a pull instruction that failed (roost.target.pullagent)
    RELEASE = "release"
    FINISH = "finish"
    # the connection to the host (roost.deploy.transport)
    UNREACHABLE = "unreachable"
    AUTH = "auth"
    HOSTKEY = "hostkey"
    LOST = "lost"
    TIMEOUT = "timeout"
    SSH = "ssh"
    SUDO = "sudo"
    LOCK = "lock"

    def __str__(self) -> str:
        return self.value

    # as its value's: a dict keyed by either finds the other (old callers, JSON)
    __hash__ = str.__hash__

    @classmethod
    def parse(cls, value: object, default: ErrorKind) -> ErrorKind:
        """The kind a host named, or `default` for one this side does not know."""
        try:
            return cls(value)
        except ValueError:
            return default


#: the agent's exit code for each kind it can name; any other failure exits 1
EXIT_CODES: dict[ErrorKind, int] = {
    ErrorKind.ERROR: 1,
    ErrorKind.USAGE: 2,
    ErrorKind.LOCK_HELD: 3,
    ErrorKind.DISK_FULL: 4,
    ErrorKind.SIGNATURE: 5,
    ErrorKind.HOOK: 6,
}
_BY_CODE = {code: kind for kind, code in EXIT_CODES.items()}


def kind_of_exit(code: int | None, default: ErrorKind) -> ErrorKind:
    """The kind an agent's exit code names; `default` (the step) for 1 and the rest."""
    kind = _BY_CODE.get(code if code is not None else -1)
    return default if kind is None or kind is ErrorKind.ERROR else kind


class HostStatus(str, Enum):
    """Where one host stands in a deploy or a fleet command."""

    WAITING = "waiting"
    CONNECTING = "connecting"
    FETCHING = "fetching"
    STAGED = "staged"
    ACTIVATED = "activated"
    OK = "ok"
    FAILED = "failed"
    REFUSED = "refused"
    NOT_ACTIVATED = "not-activated"
    ROLLED_BACK = "rolled-back"
    WOULD_DEPLOY = "would-deploy"
    WOULD_SKIP = "would-skip"
    FINISHED = "finished"  # a pull agent has finished with this deploy

    def __str__(self) -> str:
        return self.value

    # as its value's: a dict keyed by either finds the other (old callers, JSON)
    __hash__ = str.__hash__

    @classmethod
    def parse(cls, value: object) -> HostStatus | None:
        """The status a host reported, or None for one this side does not know."""
        try:
            return cls(value)
        except ValueError:
            return None


# --- reading JSON safely ---------------------------------------------------------------


def _load(line: str | bytes, what: str) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ProtocolError(f"{what}: line of {len(line)} bytes is over {MAX_LINE}")
    try:
        data = json.loads(line)
    except ValueError:
        raise ProtocolError(f"{what}: not JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{what}: expected a JSON object")
    return data


def _check(data: dict[str, Any], what: str, types: dict[str, tuple[type, ...]],
           required: tuple[str, ...], open_: bool = False) -> None:
    """Every field known and of its type, every required one there, text capped."""
    for key in required:
        if key not in data:
            raise ProtocolError(f"{what}: missing field {key!r}")
    for key, value in data.items():
        if key not in types:
            if open_:
                continue
            raise ProtocolError(f"{what}: unknown field {str(key)[:40]!r}")
        expect = types[key]
        # bool is an int to Python, not to the protocol
        if not isinstance(value, expect) or (isinstance(value, bool) and bool not in expect):
            raise ProtocolError(f"{what}: field {key!r} has the wrong type")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ProtocolError(f"{what}: field {key!r} is over {MAX_TEXT} characters")
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise ProtocolError(f"{what}: field {key!r} is negative")


_STR = (str,)
_OPT_STR = (str, type(None))
_INT = (int,)
_NUM = (int, float)
_BOOL = (bool,)


# --- the records -----------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRecord:
    """An agent subcommand's failure: its last stdout line with `--json`."""

    kind: ErrorKind
    message: str
    hooks: tuple[dict[str, Any], ...] = ()  # a failing hook's captured output

    _TYPES: ClassVar[_Types] = {"event": _STR, "kind": _STR, "message": _STR, "hooks": (list,),
              "previous": _OPT_STR, "current": _OPT_STR}

    def to_json(self) -> str:
        data: dict[str, Any] = {"event": "error", "kind": self.kind.value,
                                "message": self.message}
        if self.hooks:
            data["hooks"] = list(self.hooks)
        return json.dumps(data)

    @classmethod
    def from_json(cls, line: str | bytes) -> ErrorRecord:
        data = _load(line, "agent error")
        # hook details (roost.target.release.HookError) carry more fields: kept open
        _check(data, "agent error", cls._TYPES, ("event", "message"), open_=True)
        if data["event"] != "error":
            raise ProtocolError("agent error: not an error event")
        try:
            kind = ErrorKind(data.get("kind", "error"))
        except ValueError:
            raise ProtocolError(f"agent error: unknown kind {str(data['kind'])[:40]!r}") from None
        hooks = data.get("hooks", [])
        return cls(kind, data["message"], tuple(h for h in hooks if isinstance(h, dict)))


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


class EventName(str, Enum):
    """The events `roost fetch --json` prints while it fetches and stages."""

    STARTED = "started"
    CHECKED = "checked"  # resuming: pieces already on disk
    PROGRESS = "progress"
    REUSED = "reused"
    COMPLETE = "complete"
    ERROR = "error"


@dataclass(frozen=True)
class FetchEvent:
    """One line of fetch's progress; fields it does not have are None."""

    event: EventName
    peer_id: str | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None
    down_Bps: float | None = None
    bytes: int | None = None
    files: int | None = None
    fetch_bytes: int | None = None
    downloaded: int | None = None
    message: str | None = None
    kind: ErrorKind | None = None
    have: int | None = None
    pieces: int | None = None

    _TYPES: ClassVar[_Types] = {
              "event": _STR, "peer_id": _STR, "bytes_done": _INT, "bytes_total": _INT,
              "down_Bps": _NUM, "bytes": _INT, "files": _INT, "fetch_bytes": _INT,
              "downloaded": _INT, "message": _STR, "kind": _STR, "have": _INT,
              "pieces": _INT}

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return json.dumps({k: v.value if isinstance(v, Enum) else v
                           for k, v in data.items() if v is not None})

    @classmethod
    def from_json(cls, line: str) -> FetchEvent | None:
        """The event, or None for an event name this operator does not know (newer
        agents may report more: skipping them is safe, they change no state)."""
        data = _load(line, "fetch event")
        _check(data, "fetch event", cls._TYPES, ("event",), open_=True)
        try:
            name = EventName(data["event"])
        except ValueError:
            return None
        try:
            kind = ErrorKind(data["kind"]) if "kind" in data else None
        except ValueError:
            raise ProtocolError(f"fetch event: unknown kind {str(data['kind'])[:40]!r}") from None
        known = {k: v for k, v in data.items() if k in cls._TYPES and k not in ("event", "kind")}
        return cls(name, kind=kind, **known)


@dataclass(frozen=True)
class PrepareRequest:
    """host-prepare's stdin: the deploy manifest and how to get its payload."""

    manifest: dict[str, Any]
    torrent: str | None = None  # base64 of the .torrent (file and tar formats)
    pieces: str | None = None  # base64 piece hashes (tree: the host rebuilds the torrent)
    signature: str | None = None  # the manifest's OpenSSH signature
    tls: dict[str, str] | None = None  # this host's certificate, key and CA

    #: a tree manifest of 100,000 entries is tens of MB of JSON
    MAX_BYTES = 1 << 30

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
