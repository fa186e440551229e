"""Fuzz the tracker's HTTP surface: the JSON admin API, /status, and announce/scrape.

A real TrackerServer on 127.0.0.1 port 0 (as tests/tracker/* start it). With a
valid admin token, any body to any admin endpoint must get a clear 2xx/4xx
JSON answer — never a 500 — and any announce/scrape query must get HTTP 200
with a bencoded dictionary that is never the "internal tracker error"
fallback. The admin_api corpus (10^6-deep JSON, 5000-digit numbers, bad
base64 torrents...) is replayed against every body-taking endpoint.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.core import bencode
from roost.tracker.server import TrackerConfig
from tests.fuzz import strategies as S
from tests.fuzz.conftest import FUZZ, examples
from tests.fuzz.targets import IH
from tests.tracker.conftest import RunningTracker

CORPUS = Path(__file__).resolve().parent / "corpus"
ADMIN_OK = {200, 201, 400, 404, 409, 413}


@pytest.fixture(scope="module")
def tracker() -> Iterator[RunningTracker]:
    running = RunningTracker(TrackerConfig(host="127.0.0.1", port=0))
    try:
        status, _ = running.admin("POST", "/admin/swarms", {"info_hash": IH.hex()})
        assert status in (200, 201)
        yield running
    finally:
        running.stop()


def request(
    t: RunningTracker, method: str, path: str, body: bytes | None = None, auth: bool = True
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", t.port, timeout=20)
    headers = {"Authorization": f"Bearer {t.server.admin_token}"} if auth else {}
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def internal_failures(t: RunningTracker) -> float:
    value = t.server.metrics.registry.get_sample_value(
        "roost_tracker_rejected_total", {"kind": "internal"}
    )
    return value or 0.0


BODY_ENDPOINTS = [
    ("POST", "/admin/swarms"),
    ("PATCH", f"/admin/swarms/{IH.hex()}"),
    ("POST", f"/admin/swarms/{IH.hex()}/failed"),
]

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_fields = st.sampled_from(
    ["info_hash", "torrent", "token", "name", "expected_peers", "peer_id", "address"]
)
_field_values = st.one_of(
    json_values,
    st.sampled_from([IH.hex(), "ab" * 20, "x" * 40, "tok-" + "a" * 20, "10.0.0.1:6881", "::1"]),
    st.integers(-1, 10_000_001),
)
admin_bodies = st.one_of(
    st.dictionaries(_fields, _field_values, max_size=4).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=60),
)


def assert_clean_admin_answer(status: int, raw: bytes, what: str) -> None:
    assert status in ADMIN_OK, f"{what}: HTTP {status} {raw[:200]!r}"
    body = json.loads(raw)
    assert isinstance(body, dict)
    if status >= 400:
        assert isinstance(body.get("error"), str) and body["error"]


@settings(FUZZ, max_examples=examples(120))
@given(st.sampled_from(BODY_ENDPOINTS), admin_bodies)
def test_admin_api_answers_any_body_cleanly(
    tracker: RunningTracker, endpoint: tuple[str, str], body: bytes
) -> None:
    method, path = endpoint
    status, raw = request(tracker, method, path, body)
    assert_clean_admin_answer(status, raw, f"{method} {path} {body[:80]!r}")


ADMIN_CORPUS = sorted((CORPUS / "admin_api").glob("*.bin"))


@pytest.mark.parametrize("path", ADMIN_CORPUS, ids=lambda p: p.stem)
def test_admin_corpus_replay(tracker: RunningTracker, path: Path) -> None:
    data = path.read_bytes()
    for method, target in BODY_ENDPOINTS:
        status, raw = request(tracker, method, target, data)
        assert_clean_admin_answer(status, raw, f"{method} {target} <- {path.name}")


@settings(FUZZ, max_examples=examples(80))
@given(
    st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT"]),
    st.sampled_from(["/admin/swarms/", "/status/", "/admin/swarms/%s/failed", "/metrics"]),
    st.text("abcdef0123456789%-_.~/", max_size=50),
)
def test_any_path_gets_a_non_500_answer(
    tracker: RunningTracker, method: str, prefix: str, tail: str
) -> None:
    path = prefix % tail if "%s" in prefix else prefix + tail
    if method == "DELETE" and tail.lower() == IH.hex():
        return  # keep the swarm the other tests use
    status, _ = request(tracker, method, path)
    assert status < 500, (method, path, status)


@settings(FUZZ, max_examples=examples(120))
@given(st.sampled_from(["announce", "scrape"]), S.tracker_query_inputs)
def test_announce_and_scrape_answer_any_query_with_bencoding(
    tracker: RunningTracker, kind: str, query: bytes
) -> None:
    token = tracker.server.tracker.swarms[IH].record.token
    before = internal_failures(tracker)
    # http.client refuses control characters and spaces in a URL; send them escaped
    safe = bytes(b if 0x21 <= b < 0x7F and b != 0x23 else 0x25 for b in query)
    status, raw = request(tracker, "GET", f"/{kind}/{token}?{safe.decode('ascii')}", auth=False)
    assert status == 200, (status, raw[:200])
    body: Any = bencode.decode(raw)
    assert isinstance(body, dict)
    assert internal_failures(tracker) == before, body
