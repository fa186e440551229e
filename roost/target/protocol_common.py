"""The host protocol's common part: what every agent process loads.

Standard library only. Split from roost.target.protocol, which re-exports all of
it, so that a fetch (a new interpreter on every host of every deploy) builds only
the records it can write: the error kinds and their exit codes, host statuses,
the deploy's Manifest, the record machinery, and the results of staging,
activation and rollback (roost.target.release). Each frozen record costs its
import a few code objects compiled at start-up; tests/test_agent_startup.py
checks that a tree fetch never loads the rest of the protocol.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
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


# --- the record machinery ---------------------------------------------------------------


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


# --- hooks ------------------------------------------------------------------------------


class HookPhase(_Value):
    """When a hook ran: ROOST_HOOK in its environment, `phase` in its record."""

    PRE = "pre"
    POST = "post"
    HEALTH = "health"
    HOOK = "hook"


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


# --- stage, activate, host-rollback ----------------------------------------------------


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
