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

This module is the whole protocol, the one the operator and the tests import. It
defines the records below and re-exports two parts kept apart for the start-up of
the agent's processes on hosts: roost.target.protocol_common (error kinds, exit
codes, statuses, the Manifest, the record machinery, and what staging, activation
and rollback print: all a fetch loads) and roost.target.protocol_host (the records
of the host commands a deploy's agent session runs: prepare, lock, status, clean,
health). Agent code imports from those two parts, never from here, unless it
writes or reads the records defined here (errors, origin, pull agent, dry run).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar

from roost.target.protocol_common import (
    _BOOL,
    _FLOAT,
    _INT,
    _LIST,
    _NUM,
    _OPT_DICT,
    _OPT_INT,
    _OPT_STR,
    _STR,
    _TAG,
    EXIT_CODES,
    FORMATS,
    MAX_ITEMS,
    MAX_LINE,
    MAX_PREPARE_INPUT,
    MAX_PREPARE_JSON,
    MAX_TEXT,
    ActivateResult,
    ErrorKind,
    HookPhase,
    HookRecord,
    HostStatus,
    Manifest,
    PayloadFormat,
    ProtocolError,
    RollbackResult,
    StageResult,
    _check,
    _enum,
    _items,
    _load,
    _Record,
    _texts,
    _Types,
    _Value,
    check_tag,
    kind_of_exit,
)
from roost.target.protocol_host import (
    RELEASE_WORD,
    CleanResult,
    DeployRecord,
    HealthResult,
    LockAnswer,
    LockInfo,
    LockReleased,
    LockState,
    PrepareRequest,
    PrepareResult,
    ProcessInfo,
    ReleaseInfo,
    StatusResult,
    parse_release_line,
    release_line,
)

__all__ = [
    "EXIT_CODES", "FORMATS", "MAX_ITEMS", "MAX_LINE", "MAX_PREPARE_INPUT", "MAX_PREPARE_JSON",
    "MAX_TEXT", "RELEASE_WORD", "ActivateOrder", "ActivateResult", "AgentReport", "Check",
    "CleanResult", "DeployRecord", "ErrorKind", "ErrorRecord", "EventName", "FetchEvent",
    "HealthResult", "HookPhase", "HookRecord", "HostStatus", "Instruction", "LockAnswer",
    "LockInfo", "LockReleased", "LockState", "Manifest", "OriginFacts", "OriginOrder",
    "OriginReady", "OriginSeeded", "PayloadFormat", "Phase", "PreflightFacts", "PrepareRequest",
    "PrepareResult", "ProcessInfo", "ProtocolError", "PullPhase", "ReleaseInfo", "ReleaseOrder",
    "RollbackOrder", "RollbackResult", "StageResult", "StatusResult", "Verdict", "check_tag",
    "check_tag_field", "kind_of_exit", "parse_release_line", "release_line",
]

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
    hashed: int | None = None  # reused: kept files hashed afresh (no valid proof)
    refused: int | None = None  # reused: ... of which the bytes had changed: fetched

    _TYPES: ClassVar[_Types] = {
              "event": _STR, "peer_id": _STR, "bytes_done": _INT, "bytes_total": _INT,
              "down_Bps": _NUM, "bytes": _INT, "files": _INT, "fetch_bytes": _INT,
              "downloaded": _INT, "message": _STR, "kind": _STR, "have": _INT,
              "pieces": _INT, "staged": _STR, "hashed": _INT, "refused": _INT}

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
