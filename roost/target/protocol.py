"""The host protocol: what the operator and the agent on a host say to each other.

Standard library only (the agent imports it under `python3 -I -S`). It holds the
deploy's Manifest, the records of every agent command's reply, fetch's events, the
pull agent's reports and the dry run's facts and verdicts. Both sides use
these records: the agent writes them as one JSON object per line, the operator
parses them with `from_json`, which checks types (nested records too), names unknown
enum values, rejects unknown fields where a record is closed (the request) and caps
sizes, so a confused or hostile host gives one clear `ProtocolError` line, never a
traceback. An error's kind travels as a field and as the exit code; nobody reads
it out of message text. Enum values are the strings the `--json` output always had.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar, TypeVar

from roost.core.tree import TreeManifest, checked_manifest, parse_manifest
from roost.errors import MetainfoError, RoostError, UsageError

_Types = dict[str, tuple[type, ...]]

#: the longest line of agent output we parse (a result, an event, an error)
MAX_LINE = 1 << 20
#: the longest message or reason we keep from a host
MAX_TEXT = 4096
#: the most items in one list of a reply (releases, processes, hooks, history...)
MAX_ITEMS = 10_000
#: host-prepare's stdin as sent (zlib-compressed for a tree), and its JSON once inflated
MAX_PREPARE_INPUT = 96 * 1024 * 1024
MAX_PREPARE_JSON = 512 * 1024 * 1024


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
    ORIGIN = "origin"  # an --origin host that cannot seed this payload (roost.deploy.origins)

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
    DIED = "died"  # a host's deploy history: that deploy died holding the lock
    LOST = "lost"  # a host's deploy history: its channel closed; the agent session cleaned up

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


# --- the manifest (what the deploy host promises about the payload) ---------------------

class _Value(str, Enum):
    """A str enum whose value is its JSON and its text."""

    def __str__(self) -> str:
        return str(self.value)

    __hash__ = str.__hash__


class PayloadFormat(_Value):
    """How the payload travels: a tarball (maybe zstd), a directory, one file, or the
    release tree itself (the default for directories)."""

    TAR = "tar"
    TAR_ZST = "tar.zst"
    DIR = "dir"
    FILE = "file"
    TREE = "tree"


FORMATS = tuple(f.value for f in PayloadFormat)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}\Z")


def check_tag(tag: str) -> str:
    if not _TAG.match(tag) or ".." in tag:
        raise UsageError(f"tag {tag!r} must be 1-128 characters of [A-Za-z0-9._+-]")
    return tag




@dataclass(frozen=True)
class Manifest:
    tag: str
    format: PayloadFormat
    name: str  # the payload's name inside the staging directory
    sha256: str  # of the payload file, of the tree listing for "dir", of `tree` for "tree"
    size: int
    tree: TreeManifest | None = None  # format "tree": every entry of the release

    def __post_init__(self) -> None:
        # a caller may name the format by its string; the record holds the enum
        object.__setattr__(self, "format", PayloadFormat(self.format))

    @staticmethod
    def load(data: dict[str, Any], *, checked: bool = False) -> Manifest:
        """Validate a manifest. `checked`: its bytes are proven to be ones host-prepare
        validated (roost.target.checked), so its tree is rebuilt without the checks."""
        try:
            fmt = str(data["format"])
            if fmt not in FORMATS:
                raise UsageError(f"bad manifest: unknown format {fmt[:40]!r}")
            m = Manifest(
                str(data["tag"]), PayloadFormat(fmt), str(data["name"]),
                str(data["sha256"]).lower(), int(data["size"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad manifest: {exc}") from None
        check_tag(m.tag)
        if not re.fullmatch(r"[0-9a-f]{64}", m.sha256):
            raise UsageError("bad manifest: sha256 is not 64 hex digits")
        if "/" in m.name or m.name in ("", ".", ".."):
            raise UsageError(f"bad manifest: payload name {m.name!r}")
        if m.format is PayloadFormat.TREE and checked:
            return Manifest(m.tag, m.format, m.name, m.sha256, m.size,
                            checked_manifest(data["tree"]))
        if m.format is PayloadFormat.TREE:
            try:
                tree = parse_manifest(data.get("tree"))
            except MetainfoError as exc:
                raise UsageError(f"bad manifest: {exc}") from None
            if tree.digest() != m.sha256 or tree.total_size != m.size:
                raise UsageError("bad manifest: sha256 or size does not match its tree")
            m = Manifest(m.tag, m.format, m.name, m.sha256, m.size, tree)
        return m

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tag": self.tag, "format": self.format, "name": self.name,
               "sha256": self.sha256, "size": self.size}
        if self.tree is not None:
            out["tree"] = self.tree.to_dict()
        return out


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
           required: tuple[str, ...], open_: bool = False,
           signed: frozenset[str] = frozenset()) -> None:
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
        if isinstance(value, list) and len(value) > MAX_ITEMS:
            raise ProtocolError(f"{what}: field {key!r} has over {MAX_ITEMS} items")
        if isinstance(value, int) and not isinstance(value, bool) and value < 0 \
                and key not in signed:
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
    hooks: tuple[HookRecord, ...] = ()  # the hooks run, the failing one last

    _TYPES: ClassVar[_Types] = {"event": _STR, "kind": _STR, "message": _STR, "hooks": (list,)}

    def to_json(self) -> str:
        data: dict[str, Any] = {"event": "error", "kind": self.kind.value,
                                "message": self.message}
        if self.hooks:
            data["hooks"] = [h.to_dict() for h in self.hooks]
        return json.dumps(data)

    @classmethod
    def from_json(cls, line: str | bytes) -> ErrorRecord:
        data = _load(line, "agent error")
        # a newer agent may add fields: the ones we know are checked, others ignored
        _check(data, "agent error", cls._TYPES, ("event", "message"), open_=True)
        if data["event"] != "error":
            raise ProtocolError("agent error: not an error event")
        try:
            kind = ErrorKind(data.get("kind", "error"))
        except ValueError:
            raise ProtocolError(f"agent error: unknown kind {str(data['kind'])[:40]!r}") from None
        return cls(kind, data["message"], _items(HookRecord, data.get("hooks", [])))


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
    PLACED = "placed"  # tree: the reused files placed beside the swarm are all there
    ANNOUNCED = "announced"  # a tracker answered (the operator's timeline marks the first)
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
    staged: str | None = None  # complete: the tag fetch made releases/<tag> of (--stage)

    _TYPES: ClassVar[_Types] = {
              "event": _STR, "peer_id": _STR, "bytes_done": _INT, "bytes_total": _INT,
              "down_Bps": _NUM, "bytes": _INT, "files": _INT, "fetch_bytes": _INT,
              "downloaded": _INT, "message": _STR, "kind": _STR, "have": _INT,
              "pieces": _INT, "staged": _STR}

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


# --- enums of the agent subcommands' replies -------------------------------------------


class Phase(_Value):
    """The step a host is in (HostRun.phase): shown live and in `--json`."""

    CONNECT = "connect"
    AGENT = "agent"
    LOCK = "lock"
    PREFLIGHT = "preflight"
    PREPARE = "prepare"
    FETCH = "fetch"
    STAGE = "stage"
    ACTIVATE = "activate"
    HEALTH = "health"
    ROLLBACK = "rollback"
    CLEAN = "clean"


class HookPhase(_Value):
    """When a hook ran: ROOST_HOOK in its environment, `phase` in its record."""

    PRE = "pre"
    POST = "post"
    HEALTH = "health"
    HOOK = "hook"


class LockState(_Value):
    """A destination's deploy lock (roost.target.hostlock.inspect_lock)."""

    FREE = "free"
    HELD = "held"  # a live deploy holds it
    STALE = "stale"  # its deploy died without releasing it
    UNKNOWN = "unknown"  # the lock file cannot be read


class Instruction(_Value):
    """What a signed envelope tells pull agents (its body's `kind`, roost.target.signing)."""

    RELEASE = "release"
    ACTIVATE = "activate"
    ROLLBACK = "rollback"
    FINISH = "finish"
    PROBE = "probe"  # signed once at start to test the key; never published

    @property
    def step(self) -> ErrorKind:
        """The error kind of a failure to apply it."""
        return {Instruction.RELEASE: ErrorKind.RELEASE, Instruction.ACTIVATE: ErrorKind.ACTIVATE,
                Instruction.ROLLBACK: ErrorKind.ROLLBACK,
                Instruction.FINISH: ErrorKind.FINISH}.get(self, ErrorKind.INTERNAL)


class Verdict(_Value):
    """One dry-run check's outcome."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


def _enum(cls: type[_E], value: object, what: str, name: str) -> _E:
    """`value` as a member of `cls`, or one ProtocolError naming it."""
    try:
        return cls(value)
    except ValueError:
        raise ProtocolError(f"{what}: unknown {name} {str(value)[:40]!r}") from None


_E = TypeVar("_E", bound=Enum)
_R = TypeVar("_R", bound="_Record")
_FLOAT = (int, float)
_OPT_INT = (int, type(None))
_OPT_FLOAT = (int, float, type(None))
_OPT_BOOL = (bool, type(None))
_LIST = (list,)
_OPT_DICT = (dict, type(None))


class _Record:
    """A reply record: its fields' JSON types, the required ones, and the checks of
    `_check` (types, text and list caps, no unknown field unless `_OPEN`). Fields
    that are None are left out of the JSON, except those in `_NULLS` (the ones the
    `--json` output always carried)."""

    _WHAT: ClassVar[str] = "reply"
    _TYPES: ClassVar[_Types] = {}
    _REQUIRED: ClassVar[tuple[str, ...]] = ()
    _NULLS: ClassVar[frozenset[str]] = frozenset()
    _SIGNED: ClassVar[frozenset[str]] = frozenset()
    _OPEN: ClassVar[bool] = True  # a newer agent may add fields: ignored, not refused

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.name not in self._NULLS:
                continue
            out[f.name] = _plain(value)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls: type[_R], line: str | bytes) -> _R:
        return cls.from_dict(_load(line, cls._WHAT))

    @classmethod
    def from_dict(cls: type[_R], data: object) -> _R:
        if not isinstance(data, dict):
            raise ProtocolError(f"{cls._WHAT}: expected a JSON object")
        _check(data, cls._WHAT, cls._TYPES, cls._REQUIRED, cls._OPEN, cls._SIGNED)
        return cls._build({k: v for k, v in data.items() if k in cls._TYPES})

    @classmethod
    def _build(cls: type[_R], data: dict[str, Any]) -> _R:
        return cls(**data)


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _items(cls: type[_R], values: list[Any]) -> tuple[_R, ...]:
    return tuple(cls.from_dict(v) for v in values)


def _texts(values: list[Any], what: str, name: str, kind: type = str) -> tuple[Any, ...]:
    for v in values:
        if not isinstance(v, kind) or isinstance(v, bool) or (isinstance(v, str)
                                                             and len(v) > MAX_TEXT):
            raise ProtocolError(f"{what}: an item of {name!r} has the wrong type")
    return tuple(values)


# --- hooks and the health check ---------------------------------------------------------


@dataclass(frozen=True)
class HookRecord(_Record):
    """One hook's run: its command, when, its exit (None: timed out) and output's tail."""

    command: str
    phase: HookPhase
    exit: int | None
    seconds: float
    output: str

    _WHAT = "hook record"
    _TYPES: ClassVar[_Types] = {"command": _STR, "phase": _STR, "exit": _OPT_INT, "seconds": _FLOAT,
              "output": _STR}
    _REQUIRED = ("command", "phase", "exit", "seconds", "output")
    _NULLS = frozenset({"exit"})
    _SIGNED = frozenset({"exit"})  # killed by a signal: a negative exit

    @classmethod
    def _build(cls, data: dict[str, Any]) -> HookRecord:
        return cls(**{**data, "phase": _enum(HookPhase, data["phase"], cls._WHAT, "phase")})


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


# --- activate, host-rollback, host-clean ------------------------------------------------


@dataclass(frozen=True)
class StageResult(_Record):
    """`activate`'s `stage`: whether the release was unpacked (no: already there)."""

    tag: str
    staged: bool
    files: int | None = None
    reason: str | None = None

    _WHAT = "stage result"
    _TYPES: ClassVar[_Types] = {"tag": _STR, "staged": _BOOL, "files": _INT, "reason": _STR}
    _REQUIRED = ("tag", "staged")


@dataclass(frozen=True)
class ActivateResult(_Record):
    """`activate --json`: staging (with --manifest), then the switch (without --no-switch)."""

    dest: str
    stage: StageResult | None = None
    tag: str | None = None
    previous: str | None = None
    changed: bool | None = None
    pruned: tuple[str, ...] = ()
    hooks: tuple[HookRecord, ...] = ()

    _WHAT = "activate"
    _TYPES: ClassVar[_Types] = {"dest": _STR, "stage": _OPT_DICT, "tag": _STR, "previous": _OPT_STR,
              "changed": _BOOL, "pruned": _LIST, "hooks": _LIST}
    _REQUIRED = ("dest",)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.tag is not None:  # switched: `previous` is part of the answer, even null
            out["previous"] = self.previous
        else:
            out.pop("pruned", None)
            out.pop("hooks", None)
        return out

    @classmethod
    def _build(cls, data: dict[str, Any]) -> ActivateResult:
        stage = data.get("stage")
        return cls(**{**data,
                      "stage": StageResult.from_dict(stage) if stage is not None else None,
                      "pruned": _texts(data.get("pruned", []), cls._WHAT, "pruned"),
                      "hooks": _items(HookRecord, data.get("hooks", []))})


@dataclass(frozen=True)
class RollbackResult(_Record):
    """`host-rollback --json`: the release now current (None: no release) and the one before."""

    dest: str
    tag: str | None
    previous: str | None

    _WHAT = "host-rollback"
    _TYPES: ClassVar[_Types] = {"dest": _STR, "tag": _OPT_STR, "previous": _OPT_STR}
    _REQUIRED = ("dest", "tag", "previous")
    _NULLS = frozenset({"tag", "previous"})


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


# --- host-origin (roost deploy --origin) ------------------------------------------------


@dataclass(frozen=True)
class OriginReady(_Record):
    """`host-origin`'s first line: every piece at --path matched the deploy's torrent,
    and the address this origin will announce (as host-prepare reports a host's)."""

    pieces: int
    address: str | None = None
    address_local: bool = True

    _WHAT = "host-origin"
    _TYPES: ClassVar[_Types] = {"pieces": _INT, "address": _OPT_STR, "address_local": _BOOL}
    _REQUIRED = ("pieces",)
    _NULLS = frozenset({"address"})


@dataclass(frozen=True)
class OriginOrder(_Record):
    """What the deploy writes to host-origin's stdin after `seed `, once the swarm's
    allowlist is known: where to announce and whom to admit."""

    tracker: str
    expected_peers: int
    port: str = "6881-6999"
    allow: tuple[str, ...] | None = None  # None: any address (--allow any)
    upload_rate: float | None = None  # bytes/s
    super_seed: bool = False

    _WHAT = "host-origin order"
    _TYPES: ClassVar[_Types] = {"tracker": _STR, "expected_peers": _INT, "port": _STR,
                                "allow": (list, type(None)), "upload_rate": _NUM,
                                "super_seed": _BOOL}
    _REQUIRED = ("tracker", "expected_peers")
    _OPEN = False

    @classmethod
    def _build(cls, data: dict[str, Any]) -> OriginOrder:
        allow = data.get("allow")
        return cls(**{**data, "allow": None if allow is None else
                      _texts(allow, cls._WHAT, "allow")})


@dataclass(frozen=True)
class OriginFacts(_Record):
    """`roost deploy --dry-run --origin`: what a read-only look at an origin's PATH saw
    (printed by a few lines of `python3 -I -c`, roost.deploy.origins)."""

    py: bool  # python3 is 3.10 or later
    exists: bool
    dir: bool
    size: int

    _WHAT = "origin check"
    _TYPES: ClassVar[_Types] = {"py": _BOOL, "exists": _BOOL, "dir": _BOOL, "size": _INT}
    _REQUIRED = ("py", "exists", "dir", "size")


@dataclass(frozen=True)
class OriginSeeded(_Record):
    """`host-origin`'s last line once it stopped seeding: what it uploaded."""

    uploaded: int

    _WHAT = "host-origin"
    _TYPES: ClassVar[_Types] = {"uploaded": _INT}
    _REQUIRED = ("uploaded",)


# --- the pull agent's reports -----------------------------------------------------------


@dataclass(frozen=True)
class AgentReport(_Record):
    """What a pull agent POSTs to its coordinator's /v1/report (roost.target.pullagent)."""

    host: str
    state: HostStatus
    deploy_id: str | None = None
    seq: int | None = None
    kind: ErrorKind | None = None
    reason: str | None = None
    peer_id: str | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None
    rate: float | None = None
    already_had: bool | None = None
    current: str | None = None
    previous: str | None = None
    hooks: tuple[HookRecord, ...] | None = None
    health: HealthResult | None = None
    instruction: dict[str, str] | None = None  # a refused envelope's claims, unverified

    _WHAT = "agent report"
    _TYPES: ClassVar[_Types] = {
        "host": _STR, "state": _STR, "deploy_id": _OPT_STR, "seq": _INT, "kind": _STR,
              "reason": _STR, "peer_id": _STR, "bytes_done": _INT, "bytes_total": _INT,
              "rate": _FLOAT, "already_had": _BOOL, "current": _OPT_STR,
              "previous": _OPT_STR, "hooks": _LIST, "health": _OPT_DICT,
              "instruction": (dict,)}
    _REQUIRED = ("host", "state")
    _NULLS = frozenset({"deploy_id"})
    #: which of the optional fields a report carries (current: null is news, not absence)
    present: frozenset[str] = field(default=frozenset(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("present", None)
        for key in ("current", "previous"):
            if key in self.present:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def _build(cls, data: dict[str, Any]) -> AgentReport:
        kind = data.get("kind")
        health = data.get("health")
        instruction = data.get("instruction")
        if instruction is not None:
            _texts(list(instruction.values()), cls._WHAT, "instruction")
        return cls(**{**data,
                      "state": _enum(HostStatus, data["state"], cls._WHAT, "state"),
                      "kind": _enum(ErrorKind, kind, cls._WHAT, "kind") if kind else None,
                      "hooks": _items(HookRecord, data["hooks"]) if "hooks" in data else None,
                      "health": HealthResult.from_dict(health) if health is not None else None,
                      "present": frozenset(data)})


# --- the pull coordinator's orders (the bodies it signs) ---------------------------------
#
# The envelope's own fields (kind, deploy_id, seq) are read by roost.target.signing; an
# order is the rest of the signed body. Orders are open: a newer coordinator may add a
# field, which an older agent ignores.


class PullPhase(_Value):
    """Where a pull agent is in its deploy (its state file's `phase`)."""

    FETCHING = "fetching"
    STAGED = "staged"
    ACTIVATED = "activated"
    FAILED = "failed"


_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class ReleaseOrder(_Record):
    """`release`: what a pull agent fetches, from where, and how fast."""

    tag: str
    manifest: dict[str, Any]  # checked by Manifest.load where it is used
    torrent_sha256: str
    announce_url: str
    expected_peers: int
    expires: float  # wall-clock seconds: a fetch never runs past it
    route: tuple[str, int] | None = None  # the address the agent routes from
    port_range: str | None = None
    upload_rate: str | None = None
    download_rate: str | None = None
    web_seeds: tuple[str, ...] = ()  # BEP 19 servers of the payload

    _WHAT = "signed release"
    _TYPES: ClassVar[_Types] = {
        "tag": _STR, "manifest": (dict,), "torrent_sha256": _STR, "announce_url": _STR,
        "expected_peers": _INT, "expires": _FLOAT, "route": (list, type(None)),
        "port_range": _OPT_STR, "upload_rate": _OPT_STR, "download_rate": _OPT_STR,
        "web_seeds": _LIST}
    _REQUIRED = ("tag", "manifest", "torrent_sha256", "announce_url", "expected_peers",
                 "expires")

    @classmethod
    def _build(cls, data: dict[str, Any]) -> ReleaseOrder:
        check_tag_field(data["tag"], cls._WHAT)
        if not _SHA256.match(data["torrent_sha256"]):
            raise ProtocolError(f"{cls._WHAT}: torrent_sha256 is not 64 hex digits")
        route = data.get("route")
        if route is not None:
            if len(route) != 2 or not isinstance(route[0], str) or len(route[0]) > MAX_TEXT \
                    or not isinstance(route[1], int) or isinstance(route[1], bool) \
                    or not 0 < route[1] < 65536:
                raise ProtocolError(f"{cls._WHAT}: route is not [address, port]")
            route = (route[0], route[1])
        return cls(**{**data, "route": route,
                      "web_seeds": _texts(data.get("web_seeds", []), cls._WHAT, "web_seeds")})


@dataclass(frozen=True)
class ActivateOrder(_Record):
    """`activate`: which hosts switch to `tag`, with which hooks and health check."""

    tag: str
    hosts: tuple[str, ...]
    keep: int = 5
    pre: tuple[str, ...] = ()
    post: tuple[str, ...] = ()
    hook_timeout: float = 300.0
    health_check: str | None = None
    health_timeout: float = 30.0

    _WHAT = "signed activation"
    _TYPES: ClassVar[_Types] = {
        "tag": _STR, "hosts": _LIST, "keep": _INT, "pre": _LIST, "post": _LIST,
        "hook_timeout": _FLOAT, "health_check": _OPT_STR, "health_timeout": _FLOAT}
    _REQUIRED = ("tag", "hosts")

    @classmethod
    def _build(cls, data: dict[str, Any]) -> ActivateOrder:
        check_tag_field(data["tag"], cls._WHAT)
        return cls(**{**data, "hosts": _texts(data["hosts"], cls._WHAT, "hosts"),
                      "pre": _texts(data.get("pre", []), cls._WHAT, "pre"),
                      "post": _texts(data.get("post", []), cls._WHAT, "post")})


@dataclass(frozen=True)
class RollbackOrder(_Record):
    """`rollback`: which hosts leave `tag` for the release they had before."""

    tag: str
    hosts: tuple[str, ...]

    _WHAT = "signed rollback"
    _TYPES: ClassVar[_Types] = {"tag": _STR, "hosts": _LIST}
    _REQUIRED = ("tag", "hosts")

    @classmethod
    def _build(cls, data: dict[str, Any]) -> RollbackOrder:
        check_tag_field(data["tag"], cls._WHAT)
        return cls(data["tag"], _texts(data["hosts"], cls._WHAT, "hosts"))


def check_tag_field(tag: str, what: str) -> None:
    """A tag in an order: the same rule as everywhere, as a protocol error."""
    if not _TAG.match(tag) or ".." in tag:
        raise ProtocolError(f"{what}: tag {tag[:40]!r} is not a release tag")


# --- the dry run -------------------------------------------------------------------------


@dataclass(frozen=True)
class PreflightFacts(_Record):
    """The first line roost/target/preflight.py prints. That file travels alone (the text
    of `python3 -I -c`) and imports nothing of roost: tests/test_host_protocol.py checks
    that what it prints parses here."""

    python: tuple[int, ...]
    time: float
    checked_dir: str
    writable: bool
    free_bytes: int
    lock: LockState
    dest_exists: bool = False
    current: str | None = None
    have_tag: bool = False
    euid: int | None = None
    held: str = ""  # tree: hex bitmap of the release's files a kept release holds
    address: str | None = None
    address_error: str | None = None
    port: int | None = None
    forwarded: bool = False

    _WHAT = "preflight"
    _TYPES: ClassVar[_Types] = {
        "python": _LIST, "time": _FLOAT, "checked_dir": _STR, "writable": _BOOL,
              "free_bytes": _INT, "lock": _STR, "dest_exists": _BOOL, "current": _OPT_STR,
              "have_tag": _BOOL, "euid": _INT, "held": _STR, "address": _OPT_STR,
              "address_error": _STR, "port": _OPT_INT, "forwarded": _BOOL}
    _REQUIRED = ("python", "time", "checked_dir", "writable", "free_bytes", "lock")

    @classmethod
    def _build(cls, data: dict[str, Any]) -> PreflightFacts:
        held = data.get("held", "")
        if held and not all(c in "0123456789abcdef" for c in held):
            raise ProtocolError(f"{cls._WHAT}: field 'held' is not hex")
        return cls(**{**data, "python": _texts(data["python"][:3], cls._WHAT, "python", int),
                      "lock": _enum(LockState, data["lock"], cls._WHAT, "lock")})


@dataclass(frozen=True)
class Check(_Record):
    """One dry-run check of one host: its verdict and what it saw."""

    verdict: Verdict
    detail: str

    _WHAT = "check"
    _TYPES: ClassVar[_Types] = {"verdict": _STR, "detail": _STR}
    _REQUIRED = ("verdict", "detail")

    @classmethod
    def _build(cls, data: dict[str, Any]) -> Check:
        return cls(_enum(Verdict, data["verdict"], cls._WHAT, "verdict"), data["detail"])
