"""The typed host protocol (roost.target.protocol): records round-trip, bad input from a
host is one ProtocolError line, and the operator side holds no untyped status or
error-kind strings any more."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from roost.target.protocol import (
    EXIT_CODES,
    MAX_ITEMS,
    MAX_LINE,
    MAX_TEXT,
    ActivateResult,
    AgentReport,
    Check,
    CleanResult,
    DeployRecord,
    ErrorKind,
    ErrorRecord,
    EventName,
    FetchEvent,
    HealthResult,
    HookPhase,
    HookRecord,
    HostStatus,
    Instruction,
    LockAnswer,
    LockInfo,
    LockReleased,
    LockState,
    Phase,
    PreflightFacts,
    PrepareRequest,
    PrepareResult,
    ProcessInfo,
    ProtocolError,
    ReleaseInfo,
    RollbackResult,
    StageResult,
    StatusResult,
    Verdict,
    kind_of_exit,
    parse_release_line,
    release_line,
)

ROOT = Path(__file__).resolve().parent.parent


def test_prepare_result_round_trip() -> None:
    result = PrepareResult(dir="/srv/app/.roost/d1", free_bytes=10 << 20, current="v1",
                           have=True, address="10.0.0.2", address_local=False, euid=0,
                           signed_by="ci@example")
    assert PrepareResult.from_json(result.to_json()) == result
    # the JSON keeps the field names `host-prepare --json` always printed
    assert set(json.loads(result.to_json())) >= {"dir", "free_bytes", "current", "have",
                                                 "address", "address_local"}


def test_error_record_round_trip_and_kind() -> None:
    record = ErrorRecord(ErrorKind.DISK_FULL, "disk full: /srv",
                         (HookRecord("x", HookPhase.PRE, None, 1.5, "out"),))
    back = ErrorRecord.from_json(record.to_json())
    assert back == record and back.kind is ErrorKind.DISK_FULL


def test_fetch_events_round_trip() -> None:
    events = [FetchEvent(EventName.STARTED, peer_id="-RO0001-abc"),
              FetchEvent(EventName.PROGRESS, bytes_done=5, bytes_total=10, down_Bps=2.5),
              FetchEvent(EventName.REUSED, bytes=3, files=1, fetch_bytes=7),
              FetchEvent(EventName.COMPLETE, bytes=10, downloaded=7),
              FetchEvent(EventName.ERROR, message="disk full: x", kind=ErrorKind.DISK_FULL)]
    for event in events:
        assert FetchEvent.from_json(event.to_json()) == event
    # an event this operator does not know is skipped, not an error
    assert FetchEvent.from_json('{"event": "swarm_mood", "mood": 3}') is None
    assert FetchEvent.from_json('{"event": "checked", "have": 3, "pieces": 9}') == \
        FetchEvent(EventName.CHECKED, have=3, pieces=9)
    with pytest.raises(ProtocolError, match="field 'bytes_done' has the wrong type"):
        FetchEvent.from_json('{"event": "progress", "bytes_done": "lots"}')


def test_prepare_request_round_trip() -> None:
    request = PrepareRequest(manifest={"tag": "v1"}, torrent="ZGF0YQ==", signature="sig",
                             tls={"cert.pem": "-----BEGIN"})
    assert PrepareRequest.from_json(request.to_json()) == request


@pytest.mark.parametrize("line, words", [
    ("not json", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"free_bytes": 1}', "missing field 'dir'"),
    ('{"dir": 5, "free_bytes": 1}', "field 'dir' has the wrong type"),
    ('{"dir": "/d", "free_bytes": -1}', "field 'free_bytes' is negative"),
    ('{"dir": "/d", "free_bytes": true}', "field 'free_bytes' has the wrong type"),
    ('{"dir": "/d", "free_bytes": 1, "have": "yes"}', "field 'have' has the wrong type"),
    (json.dumps({"dir": "x" * (MAX_TEXT + 1), "free_bytes": 1}), "over 4096 characters"),
    ("{" + " " * MAX_LINE + "}", "is over"),
])
def test_prepare_result_rejects(line: str, words: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(words)) as info:
        PrepareResult.from_json(line)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text, words", [
    ('{"manifest": {}, "torrent": "x", "extra": 1}', "unknown field 'extra'"),
    ('{"torrent": "x"}', "missing field 'manifest'"),
    ('{"manifest": {}}', "exactly one of 'torrent' and 'pieces'"),
    ('{"manifest": {}, "torrent": "x", "pieces": "y"}', "exactly one of"),
    ('{"manifest": [], "torrent": "x"}', "field 'manifest' has the wrong type"),
    ('{"manifest": {}, "torrent": "x", "tls": {"a": 1}}', "field 'tls' has the wrong type"),
])
def test_prepare_request_rejects(text: str, words: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(words)):
        PrepareRequest.from_json(text)


def test_error_record_rejects_unknown_kind_and_other_events() -> None:
    with pytest.raises(ProtocolError, match="unknown kind 'melted'"):
        ErrorRecord.from_json('{"event": "error", "kind": "melted", "message": "m"}')
    with pytest.raises(ProtocolError, match="not an error event"):
        ErrorRecord.from_json('{"event": "progress", "message": "m"}')
    with pytest.raises(ProtocolError, match="field 'message' has the wrong type"):
        ErrorRecord.from_json('{"event": "error", "message": 3}')


def test_exit_codes_name_kinds() -> None:
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)  # one kind per code
    assert kind_of_exit(4, ErrorKind.FETCH) is ErrorKind.DISK_FULL
    assert kind_of_exit(3, ErrorKind.PREPARE) is ErrorKind.LOCK_HELD
    assert kind_of_exit(1, ErrorKind.STAGE) is ErrorKind.STAGE  # generic: the step's
    assert kind_of_exit(None, ErrorKind.STAGE) is ErrorKind.STAGE
    assert kind_of_exit(99, ErrorKind.STAGE) is ErrorKind.STAGE


def test_the_agents_errors_exit_with_their_kinds_code() -> None:
    from roost.errors import DiskFullError, UsageError
    from roost.target.hostlock import LockedError
    from roost.target.release import HookError
    from roost.target.signing import SignatureError
    for exc, kind in ((DiskFullError, ErrorKind.DISK_FULL), (UsageError, ErrorKind.USAGE),
                      (LockedError, ErrorKind.LOCK_HELD), (HookError, ErrorKind.HOOK),
                      (SignatureError, ErrorKind.SIGNATURE)):
        assert kind_of_exit(exc.exit_code, ErrorKind.ERROR) is kind, exc


def test_enum_values_are_the_json_strings() -> None:
    # `--json` output keeps its values: a str enum serializes as its value
    assert json.dumps({"status": HostStatus.ROLLED_BACK}) == '{"status": "rolled-back"}'
    assert json.dumps({"kind": ErrorKind.DISK_FULL}) == '{"kind": "disk-full"}'
    assert HostStatus.parse("nonsense") is None
    assert ErrorKind.parse("nonsense", ErrorKind.INTERNAL) is ErrorKind.INTERNAL


# --- no untyped strings left on the operator side -------------------------------------

def _alternatives(enum: Any) -> str:
    return "|".join(re.escape(m.value) for m in enum)


_STATUSES = _alternatives(HostStatus)
_PHASES = _alternatives(Phase)
_KINDS = _alternatives(ErrorKind)
_INSTRUCTIONS = _alternatives(Instruction)
_VERDICTS = _alternatives(Verdict)
_LOCKS = _alternatives(LockState)
_UNTYPED = [
    # a status written or compared as a bare string
    (re.compile(rf'\.status(?:,\s*[\w.]+)*\s*(?:[!=]=|=|(?:not\s+)?in\s*\()[^#\n]*"(?:{_STATUSES})"'),
     "status string"),
    (re.compile(rf'\[\s*"status"\s*\]\s*(?:[!=]=|=)\s*"(?:{_STATUSES})"'), "status string"),
    (re.compile(rf'\bstatus\s*=\s*"(?:{_STATUSES})"'), "status string"),
    # an error kind handed to HostFailure as a bare string
    (re.compile(r'HostFailure\(\s*(?:f?"|str\()'), "error kind string"),
    # an error kind found by searching message text
    (re.compile(r'"(?:disk full|no space|enospc|hook|signature refused|disk space)"'
                r'\s+in\s+\w+', re.IGNORECASE), "message-text search"),
    (re.compile(r'\.startswith\("signature'), "message-text search"),
    # a host's phase set or compared as a bare string (a deploy's own phase is free text)
    (re.compile(rf'(?<!deploy)\.phase\s*(?:[!=]=|=|(?:not\s+)?in\b)[^#\n]*"(?:{_PHASES})"'),
     "phase string"),
    # an error kind or an instruction compared as a bare string
    (re.compile(rf'\bkind\s*(?:[!=]=|is(?:\s+not)?\b|(?:not\s+)?in\s*\()[^#\n]*'
                rf'"(?:{_KINDS}|{_INSTRUCTIONS})"'), "kind string"),
    # a dry-run verdict or lock state as a bare string
    (re.compile(rf'(?:verdict|lock|state)\b[^#\n]*(?:[!=]=|\bin\b)\s*\(?\s*'
                rf'"(?:{_VERDICTS}|{_LOCKS})"'), "verdict or lock string"),
    # an agent reply read as raw JSON instead of through its record's from_json
    (re.compile(r'\bjson\.loads?\('), "raw JSON"),
    (re.compile(r'(?:\[\s*|\.get\(\s*)"(?:verdict|detail|hooks|health|checks|holder|locked|'
                r'broke|stopped|removed|state|lock|exit|output|ok)"'),
     "raw reply field"),
]


#: the transport's own framing (SSH, the agent session), the deploy host's own hash
#: cache file (roost.deploy.hashcache), and the deploy's seed arguments to its warm
#: origin (roost.deploy.originproc): JSON that is not an agent reply
_TRANSPORT = {"transport.py", "session.py", "hashcache.py", "originproc.py"}


def untyped(text: str, name: str = "") -> list[str]:
    return [f"{line_no}: {what}: {line.strip()}"
            for line_no, line in enumerate(text.splitlines(), 1)
            for pattern, what in _UNTYPED if pattern.search(line)
            and not (what.startswith("raw") and name in _TRANSPORT)]


def test_the_guard_catches_what_it_claims() -> None:
    # each shape the guard exists for, as it was written before the protocol
    assert untyped('        return self.status == "failed"')
    assert untyped('            run.status, run.kind = "failed", "rollback"')
    assert untyped('    running = [h for h in deploy.hosts if h.status in ("connecting", "x")]')
    assert untyped('            row.update(status="failed", kind=exc.kind)')
    assert untyped('            row["status"] = "ok"')
    assert untyped('            raise HostFailure("python", "no python")')
    assert untyped('    if "disk full" in text or "no space" in text:')
    assert untyped('        kind = "hook" if "hook" in message else step')
    assert untyped('        self.phase = "prepare"')
    assert untyped('            run.status, run.phase = HostStatus.FETCHING, "fetch"')
    assert untyped('    locked = [h for h in deploy.hosts if h.kind == "locked"]')
    assert untyped('        if run.failed and run.kind in ("timeout", "fetch"):')
    assert untyped('                    or (kind == "activate" and runs[n].failed)')
    assert untyped('    failed = [n for n, c in checks.items() if c["verdict"] == "fail"]')
    assert untyped('    if lock.get("state") in ("held", "stale"):')
    assert untyped('    lock = str(info.get("lock", "free"))')
    assert untyped('        info: dict[str, Any] = json.loads(first)')
    assert untyped('        hooks = data.get("hooks") if isinstance(data, dict) else None')
    assert untyped('    if not run.health.get("ok"):')
    assert untyped('        ("stopped", lambda r: " ".join(map(str, r.get("stopped", []))))')
    assert not untyped('        deploy.phase = "fetch"')  # the deploy's, not a host's
    assert not untyped('        run.phase = Phase.PREPARE')
    assert not untyped('        if c.verdict is Verdict.FAIL and lock is LockState.STALE:')
    assert not untyped('            if kind == "hosts":')  # an inventory section
    assert not untyped('                record = json.loads(line)', "session.py")
    assert not untyped('        pending.end(None, int(record["exit"]))', "session.py")
    assert untyped('        pending.end(None, int(record["exit"]))', "fleetops.py")
    assert not untyped('        return self.status is HostStatus.FAILED')
    assert not untyped('            raise HostFailure(ErrorKind.PYTHON, "no python")')


@pytest.mark.parametrize("path", sorted((ROOT / "roost" / "deploy").glob("*.py"))
                         + sorted((ROOT / "roost" / "commands").glob("*.py")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_untyped_status_or_error_kind(path: Path) -> None:
    assert untyped(path.read_text(), path.name) == []


# --- the operator reads kinds from records and exit codes ------------------------------


def _failure(code: int, stdout: str, stderr: str = "") -> ErrorKind:
    from roost.deploy.host import agent_reply
    from roost.deploy.transport import HostFailure, Result
    with pytest.raises(HostFailure) as info:
        agent_reply(Result(code, stdout, stderr), ErrorKind.STAGE, ActivateResult.from_json)
    assert isinstance(info.value.kind, ErrorKind)
    return info.value.kind


def test_the_operator_takes_the_kind_from_the_record_or_the_exit_code() -> None:
    record = ErrorRecord(ErrorKind.HOOK, "pre hook 'x' failed (exit 1)").to_json()
    assert _failure(6, record) is ErrorKind.HOOK
    assert _failure(4, "", "roost activate: error: out of room") is ErrorKind.DISK_FULL
    # a message that says "disk full" is not a kind: exit 1, no record -> the step's
    assert _failure(1, "", "roost activate: error: disk full, no space, ENOSPC") \
        is ErrorKind.STAGE
    assert _failure(1, "garbage\n{not json", "") is ErrorKind.STAGE


# --- the agent subcommands' replies ------------------------------------------------------

_HOOK = HookRecord("./migrate", HookPhase.POST, None, 30.0, "timed out\n")
_HOLDER = DeployRecord("d1", "alice@laptop", "v2", started=1.5, pid=42)
_REPLIES: list[Any] = [
    ActivateResult("/srv/app", StageResult("v2", True, 12), "v2", None, True, ("v0",),
                   (HookRecord("true", HookPhase.PRE, 0, 0.1, ""), _HOOK)),
    ActivateResult("/srv/app", StageResult("v2", False, reason="already present")),
    StatusResult("/srv/app", True, "v2", (ReleaseInfo("v1", "ab" * 32, 2.5), ReleaseInfo("v2")),
                 (ProcessInfo(7, "d1", "fetch"),), ("d1",), LockInfo(LockState.HELD, _HOLDER),
                 (DeployRecord("d0", "bob", "v1", 1.0, 9, 2.0, HostStatus.OK, "v1",
                               ErrorKind.HOOK, "why", 0),
                  DeployRecord("d9", result=HostStatus.DIED, broken_by="alice"))),
    StatusResult("/srv/none", False),
    RollbackResult("/srv/app", "v1", "v2"),
    RollbackResult("/srv/app", None, None),
    HealthResult.of(_HOOK, False, "health check './migrate' timed out after 30 s"),
    HealthResult(True, "curl -f localhost", HookPhase.HEALTH, 0, 0.2, "ok\n", dest="/d", tag="v2"),
    CleanResult("/srv/app", (7, 8), ("d1", ".v2.tmp-x")),
    LockAnswer(True, _HOLDER),
    LockAnswer(True),
    LockReleased(True, "deploy history not written: disk full"),
    AgentReport("h1", HostStatus.FAILED, "d1", 3, ErrorKind.HEALTH, "down", "-RO-x", 5, 10,
                2.5, False, None, "v1", (_HOOK,),
                HealthResult.of(_HOOK, False, "down"), present=frozenset({"current", "previous"})),
    AgentReport("h1", HostStatus.REFUSED, None, kind=ErrorKind.SIGNATURE,
                instruction={"kind": "activate", "seq": "4"}),
    PreflightFacts((3, 11, 2), 1.0e9, "/srv", True, 5 << 30, LockState.STALE, current="v1",
                   euid=0, held="1f", address="10.0.0.2", port=6881, forwarded=True),
    Check(Verdict.WARN, "skew +6.0 s"),
]


@pytest.mark.parametrize("reply", _REPLIES, ids=lambda r: type(r).__name__)
def test_replies_round_trip(reply: Any) -> None:
    line = reply.to_json()
    back = type(reply).from_json(line)
    assert back == reply
    assert back.to_json() == line  # and the same wire, byte for byte
    if isinstance(reply, AgentReport):  # null current is news, absent is not
        assert back.present >= reply.present and ("current" in line) == (
            "current" in reply.present)


def test_replies_keep_the_json_the_agent_always_printed() -> None:
    # `roost status --json` and friends print these: their keys and nulls stay
    assert json.loads(StatusResult("/d", False).to_json()) == {
        "dest": "/d", "exists": False, "current": None, "releases": [], "running": [],
        "deploys": [], "history": []}
    assert json.loads(RollbackResult("/d", None, "v1").to_json()) == {
        "dest": "/d", "tag": None, "previous": "v1"}
    assert json.loads(LockAnswer(True).to_json()) == {"locked": True, "broke": None}
    assert json.loads(ActivateResult("/d", StageResult("v1", True, 3)).to_json()) == {
        "dest": "/d", "stage": {"tag": "v1", "staged": True, "files": 3}}
    switched = json.loads(ActivateResult("/d", None, "v1", None, True).to_json())
    assert switched == {"dest": "/d", "tag": "v1", "previous": None, "changed": True,
                        "pruned": [], "hooks": []}
    assert json.loads(_HOOK.to_json()) == {"command": "./migrate", "phase": "post",
                                           "exit": None, "seconds": 30.0,
                                           "output": "timed out\n"}


_HUGE_LIST = json.dumps({"dest": "/d", "stopped": list(range(MAX_ITEMS + 1)), "removed": []})


@pytest.mark.parametrize("cls, line, words", [
    # wrong types, top level and nested
    (StatusResult, '{"dest": "/d", "exists": "yes"}', "field 'exists' has the wrong type"),
    (StatusResult, '{"dest": "/d", "exists": true, "releases": [{"tag": 5}]}',
     "release: field 'tag' has the wrong type"),
    (StatusResult, '{"dest": "/d", "exists": true, "releases": ["v1"]}',
     "release: expected a JSON object"),
    (StatusResult, '{"dest": "/d", "exists": true, "running": [{"pid": -1, "deploy_id": "d",'
     ' "what": "fetch"}]}', "field 'pid' is negative"),
    (StatusResult, '{"dest": "/d", "exists": true, "deploys": [3]}',
     "an item of 'deploys' has the wrong type"),
    (StatusResult, '{"dest": "/d", "exists": true, "lock": {"state": "held", "holder": '
     '{"who": 7}}}', "deploy record: field 'who' has the wrong type"),
    (CleanResult, '{"dest": "/d", "stopped": [true], "removed": []}',
     "an item of 'stopped' has the wrong type"),
    (CleanResult, '{"dest": "/d", "stopped": []}', "missing field 'removed'"),
    (RollbackResult, '{"dest": "/d", "tag": 1, "previous": null}',
     "field 'tag' has the wrong type"),
    (ActivateResult, '{"dest": "/d", "hooks": [{"command": "x"}]}', "missing field 'phase'"),
    (ActivateResult, '{"dest": "/d", "stage": {"tag": "v1", "staged": 1}}',
     "field 'staged' has the wrong type"),
    (HealthResult, '{"ok": "true"}', "field 'ok' has the wrong type"),
    (LockAnswer, '{"locked": 1}', "field 'locked' has the wrong type"),
    (LockAnswer, '{"broke": null}', "missing field 'locked'"),
    (AgentReport, '{"host": "h", "state": "ok", "rate": "fast"}',
     "field 'rate' has the wrong type"),
    (AgentReport, '{"host": "h", "state": "ok", "hooks": [3]}', "expected a JSON object"),
    (AgentReport, '{"host": "h", "state": "ok", "instruction": {"kind": 3}}',
     "an item of 'instruction' has the wrong type"),
    (PreflightFacts, '{"python": [3, "x"], "time": 1, "checked_dir": "/", "writable": true,'
     ' "free_bytes": 1, "lock": "free"}', "an item of 'python' has the wrong type"),
    (PreflightFacts, '{"python": [3, 11], "time": 1, "checked_dir": "/", "writable": true,'
     ' "free_bytes": 1, "lock": "free", "held": "zz"}', "field 'held' is not hex"),
    # unknown enum values: one clear error naming the value
    (HookRecord, '{"command": "x", "phase": "during", "exit": 0, "seconds": 1, "output": ""}',
     "hook record: unknown phase 'during'"),
    (StatusResult, '{"dest": "/d", "exists": true, "lock": {"state": "wobbly"}}',
     "deploy lock: unknown state 'wobbly'"),
    (AgentReport, '{"host": "h", "state": "melted"}', "agent report: unknown state 'melted'"),
    (AgentReport, '{"host": "h", "state": "failed", "kind": "gremlins"}',
     "agent report: unknown kind 'gremlins'"),
    (PreflightFacts, '{"python": [3, 11], "time": 1, "checked_dir": "/", "writable": true,'
     ' "free_bytes": 1, "lock": "ajar"}', "preflight: unknown lock 'ajar'"),
    (Check, '{"verdict": "meh", "detail": "x"}', "check: unknown verdict 'meh'"),
    # huge fields
    (HealthResult, json.dumps({"ok": False, "output": "x" * (MAX_TEXT + 1)}),
     "field 'output' is over 4096 characters"),
    (CleanResult, _HUGE_LIST, f"field 'stopped' has over {MAX_ITEMS} items"),
    (StatusResult, '{"dest": "' + "x" * MAX_LINE + '", "exists": true}', "is over"),
    (AgentReport, "[]", "expected a JSON object"),
    (RollbackResult, "rolled back to v1", "not JSON"),
])
def test_replies_reject_hostile_input(cls: Any, line: str, words: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(words)) as info:
        cls.from_json(line)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_a_newer_agents_extra_fields_are_ignored_not_refused() -> None:
    assert RollbackResult.from_json('{"dest": "/d", "tag": "v1", "previous": null, '
                                    '"took": 0.2}') == RollbackResult("/d", "v1", None)


def test_the_lock_release_line_round_trips_and_eof_is_not_a_release() -> None:
    outcome = DeployRecord(result=HostStatus.FAILED, current="v1", kind=ErrorKind.HOOK,
                           reason="post hook failed", exit_code=4)
    line = release_line(outcome)
    assert line.startswith("release {") and line.endswith("\n")
    assert parse_release_line(line) == outcome
    assert parse_release_line("") is None  # EOF: the deploy died
    assert parse_release_line("release {not json") == DeployRecord()  # released, unreadable


def test_the_instructions_name_their_failures_kind() -> None:
    assert Instruction.ACTIVATE.step is ErrorKind.ACTIVATE
    assert Instruction.RELEASE.step is ErrorKind.RELEASE
    assert Instruction.PROBE.step is ErrorKind.INTERNAL


# --- the agent's real output parses -------------------------------------------------------


def _agent(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    from roost.target.agent import main
    code = main(list(argv))
    return code, capsys.readouterr().out.strip().splitlines()[-1]


def test_what_the_agent_prints_is_what_the_operator_parses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from roost.target import agentargv
    from roost.target.release import Dest
    dest = Dest(tmp_path / "app")
    for tag in ("v1", "v2"):
        (dest.releases / tag).mkdir(parents=True)
    d = str(dest.root)
    code, line = _agent(capsys, *agentargv.activate(d, "v1", 5, 30, post=["echo hi"]))
    first = ActivateResult.from_json(line)
    assert code == 0 and first.tag == "v1" and first.hooks[0].output == "hi\n"
    code, line = _agent(capsys, *agentargv.activate(d, "v2", 5, 30))
    assert ActivateResult.from_json(line).previous == "v1"
    code, line = _agent(capsys, *agentargv.health(d, "echo fine; exit 3", 30, "v1"))
    health = HealthResult.from_json(line)
    assert (code, health.ok, health.exit, health.tag, health.phase) == (
        0, False, 3, "v2", HookPhase.HEALTH)
    code, line = _agent(capsys, *agentargv.status(d))
    status = StatusResult.from_json(line)
    assert status.current == "v2" and [r.tag for r in status.releases] == ["v1", "v2"]
    assert status.lock == LockInfo(LockState.FREE)
    code, line = _agent(capsys, *agentargv.rollback(d))
    assert RollbackResult.from_json(line) == RollbackResult(d, "v1", "v2")
    code, line = _agent(capsys, *agentargv.unswitch(d, "v1"))
    assert RollbackResult.from_json(line) == RollbackResult(d, None, "v1")
    code, line = _agent(capsys, *agentargv.clean(d, "d1"))
    assert CleanResult.from_json(line) == CleanResult(d)
    # a failing hook: the typed error carries every hook's record
    (dest.releases / "v3").mkdir()
    code, line = _agent(capsys, *agentargv.activate(d, "v3", 5, 30, pre=["true"],
                                                    post=["echo bye; exit 2"]))
    error = ErrorRecord.from_json(line)
    assert (code, error.kind) == (EXIT_CODES[ErrorKind.HOOK], ErrorKind.HOOK)
    assert [(h.phase, h.exit, h.output) for h in error.hooks] == [
        (HookPhase.PRE, 0, ""), (HookPhase.POST, 2, "bye\n")]


def test_every_argv_builder_is_accepted_by_its_subcommands_parser() -> None:
    from roost.target import agentargv
    from roost.target.agent import AGENT_COMMANDS, build_parser
    fetch = agentargv.FetchArgs(
        "/w/payload.torrent", "/w/staging", "http://t:1/announce", 3, "6881-6999", 900,
        tree_manifest="/w/manifest.json", dest="/srv", reuse="copy", bind="::",
        announce_ip="fe80::1", allow=["10.0.0.0/8"], location="rack1",
        local_nets=("10.1.0.0/16", "fd00::/8"), upload_rate="10M",
        download_rate="20M", web_seeds=("http://w/a",),
        tls=agentargv.TlsFiles("/w/c.pem", "/w/k.pem", "/w/ca.pem"), quiet=True,
        progress_every=2.5)
    cases: list[tuple[list[str], dict[str, Any]]] = [
        (agentargv.prepare("/srv", "d1", "10.0.0.1", 80, address="10.0.0.2",
                           interface="eth0", allowed_signers="/etc/s"),
         {"deploy_id": "d1", "tracker_port": 80, "address": "10.0.0.2", "interface": None,
          "allowed_signers": "/etc/s"}),
        (agentargv.prepare("/srv", "d1", "h", 0, interface="eth0"), {"interface": "eth0"}),
        (agentargv.fetch(fetch), {"expected_peers": 3, "timeout": 900.0, "bind": "::",
                                  "reuse": "copy", "quiet": True, "location": "rack1",
                                  "local_net": ["10.1.0.0/16", "fd00::/8"],
                                  "progress_every": 2.5}),
        (agentargv.stage("/srv", "/w/manifest.json", "/srv/releases/.v1.tmp-d1"),
         {"no_switch": True, "tag": None}),
        (agentargv.activate("/srv", "v1", 3, 12.5, ["a"], ["b", "c"]),
         {"tag": "v1", "keep": 3, "hook_timeout": 12.5, "pre": ["a"], "post": ["b", "c"],
          "no_switch": False}),
        (agentargv.status("/srv"), {}),
        (agentargv.clean("/srv", "d1"), {"deploy_id": "d1"}),
        (agentargv.rollback("/srv", "v0"), {"to": "v0", "none": False}),
        (agentargv.unswitch("/srv", "v1"), {"none": True, "expect": "v1"}),
        (agentargv.health("/srv", "curl x", 5, "v0"),
         {"command": "curl x", "timeout": 5.0, "previous": "v0"}),
        (agentargv.lock("/srv", "d1", "a@b", "v1", True),
         {"who": "a@b", "tag": "v1", "break_lock": True}),
        (agentargv.origin("/b/app.bin", "d1", "10.0.0.1", 6969, interface="eth1"),
         {"path": "/b/app.bin", "deploy_id": "d1", "tracker_host": "10.0.0.1",
          "tracker_port": 6969, "interface": "eth1", "address": None}),
    ]
    cases.append((agentargv.seed("/p.torrent", "/p", "http://t/a", 4, "::1", super_seed=True,
                                 tree=True, upload_rate="1M", allow=["::1/128"], tls=fetch.tls),
                  {"super_seed": True, "bind": "::1", "expected_peers": 4, "tree": True}))
    seen = set()
    for argv, expect in cases:
        parser, _ = build_parser(argv[0])
        ns = parser.parse_args(argv[1:])
        assert ns.json is True, argv
        assert {k: getattr(ns, k) for k in expect} == expect, argv
        seen.add(argv[0])
    # every subcommand the operator runs has its builder; `roost agent` runs under systemd,
    # and `roost session` (issue 20) is the transport's channel, started by the transport
    assert set(AGENT_COMMANDS) - seen <= {"agent", "session"}


def test_preflight_prints_what_the_operator_parses(tmp_path: Path) -> None:
    """preflight.py travels alone and imports nothing of roost: its output and its lock
    states are checked against the protocol here instead."""
    import subprocess
    import sys

    import roost.target.preflight as preflight
    dest = tmp_path / "app"
    (dest / ".roost").mkdir(parents=True)
    (dest / ".roost" / "deploy.lock").write_text('{"deploy_id": "d0"}')  # stale
    proc = subprocess.run(
        [sys.executable, "-I", "-c", Path(preflight.__file__).read_text(), "--dest", str(dest),
         "--tag", "v1", "--tracker-host", "127.0.0.1", "--port-range", "0", "--wait", "0.1"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    facts = PreflightFacts.from_json(proc.stdout.splitlines()[0])
    assert facts.lock is LockState.STALE and facts.address == "127.0.0.1" and facts.port
    assert facts.python[:2] == tuple(sys.version_info[:2])
    said = set(re.findall(r'return "(\w+)"', Path(preflight.__file__).read_text()))
    assert said and said <= {s.value for s in LockState}


# --- the pull coordinator's signed orders ------------------------------------------------

_RELEASE: dict[str, Any] = {
    "kind": "release", "deploy_id": "d1", "seq": 7,  # the envelope's own: ignored here
    "tag": "v1", "manifest": {"tag": "v1"}, "torrent_sha256": "ab" * 32,
    "announce_url": "http://10.0.0.1:6969/announce", "expected_peers": 3,
    "expires": 1_900_000_000.5, "route": ["10.0.0.1", 6969], "port_range": "6881-6999",
    "upload_rate": None, "download_rate": "10M", "web_seeds": ["http://seed/x"]}


def test_orders_round_trip() -> None:
    from roost.target.protocol import ActivateOrder, ReleaseOrder, RollbackOrder

    release = ReleaseOrder.from_dict(_RELEASE)
    assert release.route == ("10.0.0.1", 6969) and release.web_seeds == ("http://seed/x",)
    assert ReleaseOrder.from_dict(release.to_dict()) == release
    assert "kind" not in release.to_dict()  # the envelope's fields stay the envelope's
    activate = ActivateOrder("v1", ("a0", "a1"), keep=3, pre=("make check",),
                             health_check="true")
    assert ActivateOrder.from_json(activate.to_json()) == activate
    assert ActivateOrder.from_dict({"tag": "v1", "hosts": ["a0"]}).hook_timeout == 300.0
    rollback = RollbackOrder("v1", ("a0",))
    assert RollbackOrder.from_json(rollback.to_json()) == rollback


@pytest.mark.parametrize("change, words", [
    ({"route": "10.0.0.1:6969"}, "field 'route' has the wrong type"),
    ({"route": ["10.0.0.1", 70000]}, "route is not [address, port]"),
    ({"route": ["10.0.0.1", True]}, "route is not [address, port]"),
    ({"web_seeds": [1]}, "an item of 'web_seeds' has the wrong type"),
    ({"web_seeds": ["x" * 5000]}, "an item of 'web_seeds' has the wrong type"),
    ({"torrent_sha256": "zz" * 32}, "torrent_sha256 is not 64 hex digits"),
    ({"tag": "../etc"}, "is not a release tag"),
    ({"expected_peers": -1}, "field 'expected_peers' is negative"),
    ({"expires": "soon"}, "field 'expires' has the wrong type"),
    ({"announce_url": None}, "field 'announce_url' has the wrong type"),
    ({"manifest": None}, "missing field 'manifest'"),
])
def test_a_malformed_release_order_is_one_protocol_error(change: dict[str, Any],
                                                         words: str) -> None:
    from roost.target.protocol import ReleaseOrder

    body = {k: v for k, v in {**_RELEASE, **change}.items() if v is not None
            or k not in ("manifest",)}
    with pytest.raises(ProtocolError, match=re.escape(words)) as info:
        ReleaseOrder.from_dict(body)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("body, words", [
    ({"tag": "v1", "hosts": "a0"}, "field 'hosts' has the wrong type"),
    ({"tag": "v1", "hosts": [["a0"]]}, "an item of 'hosts' has the wrong type"),
    ({"tag": "v1", "hosts": ["a0"], "pre": [3]}, "an item of 'pre' has the wrong type"),
    ({"tag": "v1", "hosts": ["a0"], "keep": "all"}, "field 'keep' has the wrong type"),
    ({"tag": "v1", "hosts": ["a0"], "hook_timeout": True},
     "field 'hook_timeout' has the wrong type"),
    ({"hosts": ["a0"]}, "missing field 'tag'"),
])
def test_a_malformed_activation_order_is_one_protocol_error(body: dict[str, Any],
                                                            words: str) -> None:
    from roost.target.protocol import ActivateOrder

    with pytest.raises(ProtocolError, match=re.escape(words)):
        ActivateOrder.from_dict(body)


def test_the_coordinator_publishes_what_the_pull_agent_parses(tmp_path: Path) -> None:
    """The bodies a real coordinator signs parse as the orders the agent reads."""
    import asyncio

    from roost.deploy.config import DeployConfig, HostSpec
    from roost.deploy.coordinator import Coordinator
    from roost.deploy.run import new_deploy
    from roost.target.protocol import ActivateOrder, Instruction, RollbackOrder
    from tests.pull.keys import make_key

    key = make_key(tmp_path, "publisher")
    deploy = new_deploy(DeployConfig(), [HostSpec("a0", "a0")], "v1")

    async def main() -> list[dict[str, Any]]:
        coordinator = Coordinator(deploy, key, "127.0.0.1", 0)
        await coordinator.publish(Instruction.ACTIVATE, 60,
                                  ActivateOrder("v1", ("a0",), pre=("true",)))
        await coordinator.publish(Instruction.ROLLBACK, 60, RollbackOrder("v1", ("a0",)))
        return [json.loads(e["body"]) for e in coordinator.envelopes]

    activate, rollback = asyncio.run(main())
    assert activate["kind"] == "activate" and activate["deploy_id"] == deploy.deploy_id
    assert ActivateOrder.from_dict(activate) == ActivateOrder("v1", ("a0",), pre=("true",))
    assert RollbackOrder.from_dict(rollback) == RollbackOrder("v1", ("a0",))
