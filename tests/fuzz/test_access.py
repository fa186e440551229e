"""Access control: wrong or missing secrets, unregistered torrents, strangers.

  * announces and scrapes with a wrong or missing swarm secret, or for an
    info-hash the secret is not for, get a bencoded failure reason and are
    counted in roost_tracker_rejected_total{kind=...}, read from /metrics;
  * admin API calls without valid credentials get 401, change nothing, and
    are counted in roost_tracker_admin_denied_total;
  * a real `roost seed` process closes a connection whose handshake names
    another info-hash (and reports it as peer_closed), while a correct
    handshake on the same port is still answered.
All on 127.0.0.1; the tracker on port 0 as tests/tracker/* start it, the seed
process ended by PID at teardown.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest

from roost.commands.make import make_torrent
from roost.core import bencode
from roost.core.metainfo import parse
from roost.tracker.server import TrackerConfig
from tests.fuzz.targets import REMOTE_ID, handshake
from tests.swarm.harness import Procs, RoostProc, make_tree
from tests.tracker.conftest import RunningTracker

IH = b"\x11" * 20
OTHER = b"\x22" * 20  # registered too, under its own secret
STRANGER = b"\x33" * 20  # never registered


@pytest.fixture
def tracker() -> Iterator[RunningTracker]:
    running = RunningTracker(TrackerConfig(host="127.0.0.1", port=0))
    try:
        for ih in (IH, OTHER):
            status, _ = running.admin("POST", "/admin/swarms", {"info_hash": ih.hex()})
            assert status == 201
        yield running
    finally:
        running.stop()


def http_get(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def metric(t: RunningTracker, name: str, **labels: str) -> float:
    """One sample from the tracker's /metrics page, as an operator would read it."""
    status, raw = http_get(t.port, "/metrics")
    assert status == 200
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in raw.decode().splitlines():
        key, _, value = line.rpartition(" ")
        if key == want:
            return float(value)
    return 0.0


def query(info_hash: bytes) -> str:
    peer = b"-AC0001-" + b"p" * 12
    return (
        f"info_hash={quote_from_bytes(info_hash, safe='')}&peer_id={quote_from_bytes(peer)}"
        "&port=6881&uploaded=0&downloaded=0&left=10&compact=1"
    )


def failure_reason(status: int, raw: bytes) -> str:
    assert status == 200
    body = bencode.decode(raw)
    assert isinstance(body, dict) and b"failure reason" in body, body
    reason = body[b"failure reason"]
    assert isinstance(reason, bytes)
    return reason.decode()


def token_of(t: RunningTracker, ih: bytes) -> str:
    return t.server.tracker.swarms[ih].record.token


# --- announces and scrapes ---------------------------------------------------------------

ANNOUNCES: dict[str, tuple[Callable[[RunningTracker], str], bytes, str, str]] = {
    # case: (path builder, info-hash, expected kind, words in the failure reason)
    "missing secret": (lambda t: "/announce", IH, "secret", "missing secret"),
    "missing secret, trailing slash": (lambda t: "/announce/", IH, "secret", "missing secret"),
    "wrong secret": (lambda t: "/announce/" + "x" * 32, IH, "secret", "invalid secret"),
    "secret of another swarm": (
        lambda t: "/announce/" + token_of(t, OTHER),
        IH,
        "secret",
        "not registered",
    ),
    "unregistered info-hash": (
        lambda t: "/announce/" + token_of(t, IH),
        STRANGER,
        "unregistered",
        "not registered",
    ),
    "scrape without secret": (lambda t: "/scrape", IH, "secret", "missing secret"),
    "scrape wrong secret": (lambda t: "/scrape/" + "y" * 32, IH, "secret", "invalid secret"),
}


@pytest.mark.parametrize("case", sorted(ANNOUNCES))
def test_bad_announce_is_refused_and_counted(tracker: RunningTracker, case: str) -> None:
    path_of, info_hash, kind, words = ANNOUNCES[case]
    before = metric(tracker, "roost_tracker_rejected_total", kind=kind)
    announces = metric(tracker, "roost_tracker_announces_total", event="started")
    for _ in range(3):
        status, raw = http_get(tracker.port, f"{path_of(tracker)}?{query(info_hash)}")
        assert words in failure_reason(status, raw)
    assert metric(tracker, "roost_tracker_rejected_total", kind=kind) == before + 3
    assert metric(tracker, "roost_tracker_announces_total", event="started") == announces
    for ih in (IH, OTHER):
        assert not tracker.server.tracker.swarms[ih].peers, "a refused announce joined a swarm"


def test_good_announce_is_accepted(tracker: RunningTracker) -> None:
    """Control: the same query with the right secret joins the swarm."""
    status, raw = http_get(tracker.port, f"/announce/{token_of(tracker, IH)}?{query(IH)}")
    body = bencode.decode(raw)
    assert status == 200 and isinstance(body, dict) and b"failure reason" not in body, body
    assert len(tracker.server.tracker.swarms[IH].peers) == 1


def test_status_page_with_a_wrong_secret_is_refused_and_counted(tracker: RunningTracker) -> None:
    before = metric(tracker, "roost_tracker_rejected_total", kind="secret")
    status, raw = http_get(tracker.port, "/status/" + "z" * 32)
    assert status == 404 and json.loads(raw) == {"error": "invalid secret"}
    assert metric(tracker, "roost_tracker_rejected_total", kind="secret") == before + 1


# --- admin API without credentials ------------------------------------------------------

BAD_AUTH: dict[str, dict[str, str]] = {
    "no header": {},
    "empty bearer": {"Authorization": "Bearer "},
    "wrong token": {"Authorization": "Bearer " + "w" * 32},
    "basic scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
    "token without scheme": {"Authorization": "TOKEN"},  # replaced by the real token below
    "token prefix": {"Authorization": "PREFIX"},
}
ADMIN_CALLS = [
    ("GET", "/admin/swarms", None),
    ("POST", "/admin/swarms", {"info_hash": STRANGER.hex()}),
    ("GET", f"/admin/swarms/{IH.hex()}", None),
    ("PATCH", f"/admin/swarms/{IH.hex()}", {"expected_peers": 99}),
    ("DELETE", f"/admin/swarms/{IH.hex()}", None),
    ("POST", f"/admin/swarms/{IH.hex()}/failed", {"address": "10.0.0.1"}),
]


@pytest.mark.parametrize("case", sorted(BAD_AUTH))
def test_admin_without_credentials_is_refused_counted_and_changes_nothing(
    tracker: RunningTracker, case: str
) -> None:
    headers = dict(BAD_AUTH[case])
    real = tracker.server.admin_token
    if headers.get("Authorization") == "TOKEN":
        headers["Authorization"] = real
    elif headers.get("Authorization") == "PREFIX":
        headers["Authorization"] = "Bearer " + real[:-1]
    before = metric(tracker, "roost_tracker_admin_denied_total")
    swarms_before = {ih: s.record.expected_peers for ih, s in tracker.server.tracker.swarms.items()}
    for method, path, body in ADMIN_CALLS:
        conn = http.client.HTTPConnection("127.0.0.1", tracker.port, timeout=10)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        assert resp.status == 401, (method, path, resp.status, raw)
        assert "token" in json.loads(raw)["error"]
        assert real.encode() not in raw
    assert metric(tracker, "roost_tracker_admin_denied_total") == before + len(ADMIN_CALLS)
    swarms_after = {ih: s.record.expected_peers for ih, s in tracker.server.tracker.swarms.items()}
    assert swarms_after == swarms_before


def test_admin_with_credentials_works(tracker: RunningTracker) -> None:
    """Control: the same call with the token is served and not counted as denied."""
    before = metric(tracker, "roost_tracker_admin_denied_total")
    status, body = tracker.admin("GET", "/admin/swarms")
    assert status == 200 and len(body["swarms"]) == 2
    assert metric(tracker, "roost_tracker_admin_denied_total") == before


# --- a real seed and a stranger's handshake ---------------------------------------------


@pytest.fixture
def seed(tmp_path: Path) -> Iterator[tuple[int, bytes, RoostProc]]:
    src = make_tree(tmp_path / "origin" / "release", 256 * 1024)
    torrent = tmp_path / "release.torrent"
    torrent.write_bytes(make_torrent(src, [], piece_length=64 * 1024))
    info_hash = parse(torrent.read_bytes()).info_hash
    procs = Procs()
    try:
        proc = procs.start(
            ["seed", str(torrent), "-d", str(src.parent), "--no-tracker", "--skip-check"], "seed"
        )
        yield proc.port, info_hash, proc
    finally:
        procs.close()


def exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Send data; read until the peer closes or `timeout`. Returns (bytes, closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(got) < 1 << 20:  # bounded
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return got, True
            except TimeoutError:
                return got, False
            if not chunk:
                return got, True
            got += chunk
        return got, False


def test_seed_closes_a_handshake_for_another_info_hash(seed: tuple[int, bytes, RoostProc]) -> None:
    port, info_hash, proc = seed
    wrong = bytes(b ^ 0xFF for b in info_hash)
    got, closed = exchange(port, handshake(wrong))
    assert closed, "the seed kept a connection for a torrent it does not serve"
    assert info_hash not in got, "the seed revealed its info-hash to a stranger"

    def refusals() -> list[dict[str, object]]:
        return [e for e in proc.named("peer_closed") if "do not serve" in e.get("reason", "")]

    deadline = time.monotonic() + 10
    while not refusals() and time.monotonic() < deadline:  # the event may trail the close
        time.sleep(0.05)
    assert len(refusals()) == 1, proc.named("peer_closed")


def test_seed_still_answers_the_right_handshake(seed: tuple[int, bytes, RoostProc]) -> None:
    """Control, after a stranger: the right info-hash gets the seed's handshake back."""
    port, info_hash, _ = seed
    exchange(port, handshake(bytes(20)))  # a stranger first; it must not poison the port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(handshake(info_hash))
        got = b""
        while len(got) < 68:  # bounded by the socket timeout
            chunk = sock.recv(68 - len(got))
            assert chunk, "the seed closed a valid connection"
            got += chunk
    assert got[:20] == b"\x13BitTorrent protocol" and got[28:48] == info_hash
    assert got[48:68] != REMOTE_ID


def test_seed_closes_garbage_instead_of_a_handshake(seed: tuple[int, bytes, RoostProc]) -> None:
    port, _, _ = seed
    _, closed = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert closed
