"""The typed host protocol (roost.target.protocol): records round-trip, bad input from a
host is one ProtocolError line, and the operator side holds no untyped status or
error-kind strings any more."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from roost.target.protocol import (
    EXIT_CODES,
    ActivateResult,
    MAX_LINE,
    MAX_TEXT,
    ErrorKind,
    ErrorRecord,
    EventName,
    FetchEvent,
    HookPhase,
    HookRecord,
    HostStatus,
    PrepareRequest,
    PrepareResult,
    ProtocolError,
    kind_of_exit,
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

_STATUSES = "|".join(re.escape(s.value) for s in HostStatus)
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
]


def untyped(text: str) -> list[str]:
    return [f"{line_no}: {what}: {line.strip()}"
            for line_no, line in enumerate(text.splitlines(), 1)
            for pattern, what in _UNTYPED if pattern.search(line)]


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
    assert not untyped('        return self.status is HostStatus.FAILED')
    assert not untyped('            raise HostFailure(ErrorKind.PYTHON, "no python")')


@pytest.mark.parametrize("path", sorted((ROOT / "roost" / "deploy").glob("*.py"))
                         + sorted((ROOT / "roost" / "commands").glob("*.py")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_untyped_status_or_error_kind(path: Path) -> None:
    assert untyped(path.read_text()) == []


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
