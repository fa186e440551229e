"""The real aiohttp server on 127.0.0.1 port 0: API, hostile input, persistence."""

from __future__ import annotations

import base64
import socket
import stat
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import pytest

from roost.core import bencode
from roost.core.metainfo import parse
from roost.core.tracker_swarm import TrackerPolicy
from roost.tracker.state import StateError

from .helpers import announce_query, make_torrent, pid

IH = b"\xab" * 20


def register(t: Any, ih: bytes = IH, **extra: Any) -> dict[str, Any]:
    status, body = t.admin("POST", "/admin/swarms", {"info_hash": ih.hex(), **extra})
    assert status in (200, 201), body
    return body  # type: ignore[no-any-return]


def announce(t: Any, token: str, query: bytes) -> dict[bytes, Any]:
    status, raw = t.get(f"/announce/{token}?{query.decode()}")
    assert status == 200
    body = bencode.decode(raw)
    assert isinstance(body, dict)
    return body


def failure_of(status: int, raw: bytes) -> str:
    assert status == 200, (status, raw)
    body = bencode.decode(raw)
    assert isinstance(body, dict) and set(body) == {b"failure reason"}, body
    reason = body[b"failure reason"]
    assert isinstance(reason, bytes)
    return reason.decode()


def raw_request(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send raw bytes, read until the server closes or the timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while len(chunks) < 1000:  # bounded
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def metric(t: Any, name: str) -> float:
    status, text = t.get("/metrics")
    assert status == 200
    for line in text.decode().splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_register_announce_status_scrape(start_tracker: Any) -> None:
    t = start_tracker()
    reg = register(t, name="app-1.2", expected_peers=2)
    assert reg["announce_url"] == f"http://127.0.0.1:{t.port}/{reg['token']}/announce"
    token = reg["token"]
    first = announce(t, token, announce_query(IH, pid(1), port=7001, left=0))
    assert first[b"peers"] == b"" and first[b"roost.expected"] == 2
    second = announce(t, token, announce_query(IH, pid(2), port=7002, left=10, event="started"))
    assert second[b"peers"] == bytes([127, 0, 0, 1]) + (7001).to_bytes(2, "big")
    assert (second[b"complete"], second[b"incomplete"], second[b"roost.complete_peers"]) == (
        1,
        1,
        1,
    )
    for path in (f"/status/{token}",):
        status, raw = t.get(path)
        assert status == 200
    status, st = t.admin("GET", f"/admin/swarms/{IH.hex()}")
    assert status == 200 and st["totals"]["complete"] == 1 and st["expected_peers"] == 2
    assert {p["port"] for p in st["peers"]} == {7001, 7002}
    assert all(abs(p["last_seen"] - time.time()) < 30 for p in st["peers"])
    status, raw = t.get(f"/scrape/{token}?info_hash={quote_from_bytes(IH, safe='')}")
    files = bencode.decode(raw)[b"files"]  # type: ignore[index]
    assert files[IH] == {b"complete": 1, b"downloaded": 0, b"incomplete": 1}  # type: ignore[index]
    assert metric(t, 'roost_tracker_announces_total{event="started"}') == 1


def hostile_requests(token: str) -> list[tuple[str, str]]:
    good = announce_query(IH, pid(1)).decode()
    bad_hash = announce_query(b"\x01" * 19, pid(1)).decode()
    long_hash = announce_query(b"\x01" * 21, pid(1)).decode()
    return [
        (f"/announce/{token}?{bad_hash}", "info_hash: must be 20 bytes"),
        (f"/announce/{token}?{long_hash}", "info_hash: must be 20 bytes"),
        (f"/announce/{token}?" + good.replace("port=6881", "port=0"), "invalid port"),
        (f"/announce/{token}?" + good.replace("port=6881", "port=70000"), "invalid port"),
        (f"/announce/{token}?" + good.replace("port=6881", "port=-5"), "invalid port"),
        (f"/announce/{token}?" + good.replace("port=6881", "port=%00"), "invalid port"),
        (f"/announce/{token}?" + good + "&x=%G1", "malformed percent-encoding"),
        (f"/announce/{token}?" + good + "&pad=" + "A" * 9000, "query too long"),
        (f"/announce/{token}?" + "&".join(["a=b"] * 100), "too many query parameters"),
        (f"/announce/{token}", "missing info_hash"),
        (f"/announce/{token}?" + good + "&numwant=-1", "invalid numwant"),
        (f"/announce/{token}?" + good + "&event=%FF%FE", "invalid event"),
        (f"/announce/{token}?" + announce_query(b"\x77" * 20, pid(1)).decode(), "not registered"),
        ("/announce/wrong-secret-0000000000?" + good, "invalid secret"),
        ("/announce/short?" + good, "invalid secret"),
        ("/announce?" + good, "missing secret"),
        ("/announce/?" + good, "secret"),
        ("/scrape/wrong-secret-0000000000", "invalid secret"),
        ("/scrape?" + good, "missing secret"),
        (f"/scrape/{token}?info_hash=abc", "must be 20 bytes"),
    ]


def test_hostile_input_gets_bencoded_failures_and_server_keeps_serving(start_tracker: Any) -> None:
    t = start_tracker()
    token = register(t)["token"]
    for target, reason in hostile_requests(token):
        assert reason in failure_of(*t.get(target)), target
    # percent-encoded NUL and non-UTF-8 bytes are fine bytes to us: a reasoned failure
    reply = raw_request(
        t.port,
        b"GET /announce/"
        + token.encode()
        + b"?info_hash="
        + b"%00%ff" * 10
        + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 200") and b"d14:failure reason" in reply, reply[:200]
    # raw (unencoded) bytes >= 0x80 or NUL are not HTTP (RFC 3986): the HTTP layer
    # refuses them with a 400 before any handler runs; never a 500 or a traceback
    for junk in (b"\xff\xfe\x80", b"\x00\x00"):
        reply = raw_request(
            t.port,
            b"GET /announce/"
            + token.encode()
            + b"?info_hash="
            + junk
            + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        assert reply.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400")), reply[:200]
        assert reply.endswith(b"d14:failure reason22:malformed HTTP requeste"), reply[-200:]
        assert b"Traceback" not in reply
    assert metric(t, 'roost_tracker_rejected_total{kind="secret"}') >= 5
    assert metric(t, 'roost_tracker_rejected_total{kind="unregistered"}') == 1
    assert metric(t, 'roost_tracker_rejected_total{kind="malformed"}') >= 10
    # still serving real announces
    assert announce(t, token, announce_query(IH, pid(9)))[b"incomplete"] == 1


def test_http_level_abuse_does_not_kill_the_server(start_tracker: Any) -> None:
    t = start_tracker()
    token = register(t)["token"]
    huge = b"GET /announce/x?" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    reply = raw_request(t.port, huge)
    assert reply.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))  # refused by the HTTP layer
    assert b"Traceback" not in reply
    raw_request(t.port, b"\x16\x03\x01\x02\x00garbage, not HTTP\r\n\r\n")
    raw_request(t.port, b"GET /announce/" + token.encode(), timeout=0.5)  # half a request
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", t.port)):
            pass  # connect and hang up
    assert announce(t, token, announce_query(IH, pid(1)))[b"incomplete"] == 1
    status, _ = t.get("/no/such/path")
    assert status == 404


def test_admin_api_auth_and_validation(start_tracker: Any) -> None:
    t = start_tracker(admin_token="admin-token-for-tests-0001")
    assert t.admin("GET", "/admin/swarms", token="wrong")[0] == 401
    conn_status, body = t.admin("GET", "/admin/swarms", token="admin-token-for-tests-0001")
    assert conn_status == 200 and body == {"swarms": []}
    assert metric(t, "roost_tracker_admin_denied_total") == 1
    assert t.admin("POST", "/admin/swarms", b"{not json")[0] == 400
    assert t.admin("POST", "/admin/swarms", {"info_hash": "abc"})[0] == 400
    assert t.admin("POST", "/admin/swarms", {"info_hash": IH.hex(), "token": "x y"})[0] == 400
    assert t.admin("POST", "/admin/swarms", {"info_hash": IH.hex(), "expected_peers": -1})[0] == 400
    status, reg = t.admin("POST", "/admin/swarms", {"info_hash": IH.hex(), "token": "A" * 20})
    assert status == 201 and reg["token"] == "A" * 20
    other = {"info_hash": ("cd" * 20), "token": "A" * 20}
    assert t.admin("POST", "/admin/swarms", other)[0] == 409  # a secret is per swarm
    status, upd = t.admin("PATCH", f"/admin/swarms/{IH.hex()}", {"expected_peers": 5})
    assert status == 200 and upd["expected_peers"] == 5 and upd["token"] == "A" * 20
    assert t.admin("GET", "/admin/swarms/" + "00" * 20)[0] == 404
    assert t.admin("GET", "/admin/swarms/zz")[0] == 404
    assert t.admin("DELETE", f"/admin/swarms/{IH.hex()}")[0] == 200
    assert "invalid secret" in failure_of(
        *t.get("/announce/" + "A" * 20 + "?" + announce_query(IH, pid(1)).decode())
    )


def test_register_by_torrent_and_mark_failed(start_tracker: Any) -> None:
    t = start_tracker()
    data = make_torrent(b"x" * 40000, "payload.bin", "http://example.invalid/announce")
    meta = parse(data)
    status, reg = t.admin(
        "POST",
        "/admin/swarms",
        {"torrent": base64.b64encode(data).decode(), "expected_peers": 3},
    )
    assert (
        status == 201 and reg["info_hash"] == meta.info_hash.hex() and reg["name"] == "payload.bin"
    )
    ih, token = meta.info_hash, reg["token"]
    announce(t, token, announce_query(ih, pid(1), left=0, port=7001))
    announce(t, token, announce_query(ih, pid(2), left=5, port=7002))
    path = f"/admin/swarms/{ih.hex()}/failed"
    assert t.admin("POST", path, {})[0] == 400
    assert t.admin("POST", path, {"peer_id": "nothex"})[0] == 400
    assert t.admin("POST", path, {"address": "not-an-ip"})[0] == 400
    status, res = t.admin("POST", path, {"address": "127.0.0.1:7002"})
    assert status == 200 and res["added"] == 1 and res["complete_peers"] == 2
    status, res = t.admin("POST", path, {"peer_id": pid(3).hex()})
    assert status == 200 and res["added"] == 1
    t.run(t.server.set_expected_peers(ih, 4))
    assert t.call(t.server.status, ih)["expected_peers"] == 4
    t.run(t.server.set_expected_peers(ih, 3))
    body = announce(t, token, announce_query(ih, pid(1), left=0, port=7001))
    assert (body[b"roost.expected"], body[b"roost.complete_peers"]) == (3, 3)
    assert t.admin("GET", f"/admin/swarms/{ih.hex()}")[1]["done"] is True


def test_restart_keeps_registrations_and_secrets(start_tracker: Any, tmp_path: Path) -> None:
    state = tmp_path / "tracker.json"
    t1 = start_tracker(state_path=state)
    token = register(t1, expected_peers=2)["token"]
    announce(t1, token, announce_query(IH, pid(1), left=0))
    admin_token = t1.server.admin_token
    t1.stop()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".tracker.json.*"))  # no temp file left behind
    t2 = start_tracker(state_path=state)
    assert t2.server.admin_token == admin_token
    body = announce(t2, token, announce_query(IH, pid(2), left=9))
    assert body[b"roost.complete_peers"] == 1  # completion marks survived
    assert body[b"roost.expected"] == 2
    assert body[b"complete"] == 0  # live peers did not: they come back by announcing


def test_corrupt_state_is_a_clear_error(start_tracker: Any, tmp_path: Path) -> None:
    state = tmp_path / "tracker.json"
    state.write_text('{"version": 1, "swarms": [{"info_hash": "zz"}]}')
    with pytest.raises(StateError, match="corrupt"):
        start_tracker(state_path=state)


def test_torrent_directory_registration(start_tracker: Any, tmp_path: Path) -> None:
    tdir = tmp_path / "torrents"
    tdir.mkdir()
    tok = "dirtoken-0123456789abcdef"
    data = make_torrent(b"y" * 20000, "rel.tar", f"http://h:1/announce/{tok}")
    (tdir / "rel.torrent").write_bytes(data)
    (tdir / "junk.torrent").write_bytes(b"not a torrent")
    ih = parse(data).info_hash
    t = start_tracker(torrent_dir=tdir, rescan_interval=0.2, housekeeping_interval=0.1)
    assert announce(t, tok, announce_query(ih, pid(1)))[b"incomplete"] == 1
    other = make_torrent(b"z" * 20000, "second.tar", "http://h:1/announce")
    (tdir / "second.torrent").write_bytes(other)
    (tdir / "rel.torrent").unlink()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        swarms = t.admin("GET", "/admin/swarms")[1]["swarms"]
        if [s["name"] for s in swarms] == ["second.tar"]:
            break
        time.sleep(0.05)
    assert [s["name"] for s in swarms] == ["second.tar"]  # generated token for this one
    assert "invalid secret" in failure_of(
        *t.get(f"/announce/{tok}?" + announce_query(ih, pid(1)).decode())
    )


def test_silent_peers_expire_on_the_server(start_tracker: Any) -> None:
    t = start_tracker(policy=TrackerPolicy(peer_timeout=0.3), housekeeping_interval=0.05)
    token = register(t)["token"]
    announce(t, token, announce_query(IH, pid(1)))
    assert len(t.admin("GET", f"/admin/swarms/{IH.hex()}")[1]["peers"]) == 1
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and t.admin("GET", f"/admin/swarms/{IH.hex()}")[1]["peers"]:
        time.sleep(0.05)
    assert t.admin("GET", f"/admin/swarms/{IH.hex()}")[1]["peers"] == []


def test_metrics_is_prometheus_text(start_tracker: Any) -> None:
    t = start_tracker()
    register(t, name="app")
    conn_status, text = t.get("/metrics")
    assert conn_status == 200
    assert b"# TYPE roost_tracker_peers gauge" in text
    assert f'roost_tracker_expected_peers{{info_hash="{IH.hex()}",name="app"}} 0.0'.encode() in text


def test_ipv6_listener_and_peers6(start_tracker: Any) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    t = start_tracker(host="::1")
    token = register_v6(t)
    q1 = announce_query(IH, pid(1), port=7001).decode()
    q2 = announce_query(IH, pid(2), port=7002).decode()
    for q in (q1, q2):
        reply = raw_request6(
            t.port,
            f"GET /announce/{token}?{q} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        )
    body = bencode.decode(reply.split(b"\r\n\r\n", 1)[1])
    assert body[b"peers6"] == bytes(15) + b"\x01" + (7001).to_bytes(2, "big")  # type: ignore[index]
    assert t.server.url.startswith("http://[::1]:")


def register_v6(t: Any) -> str:
    return t.run(t.server.register(IH))["token"]  # type: ignore[no-any-return]


def raw_request6(port: int, data: bytes) -> bytes:
    with socket.create_connection(("::1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while len(chunks) < 1000:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_ip_policy_and_location_over_http(start_tracker: Any) -> None:
    import ipaddress

    trusted = TrackerPolicy(
        ip_override="trusted", trusted_networks=(ipaddress.ip_network("127.0.0.0/8"),)
    )
    for policy, want in ((TrackerPolicy(), "127.0.0.1"), (trusted, "10.1.2.3")):
        t = start_tracker(policy=policy)
        token = register(t)["token"]
        announce(t, token, announce_query(IH, pid(1), ip="10.1.2.3", location="rack-9"))
        (peer,) = t.admin("GET", f"/admin/swarms/{IH.hex()}")[1]["peers"]
        assert (peer["address"], peer["location"]) == (want, "rack-9")


def test_embeds_in_another_asyncio_program() -> None:
    """The deploy command's way: same event loop, no threads, no signals touched."""
    import asyncio
    import signal

    import aiohttp
    from yarl import URL

    from roost.tracker.server import TrackerConfig, TrackerServer

    async def main() -> dict[bytes, Any]:
        before = signal.getsignal(signal.SIGTERM)
        async with TrackerServer(TrackerConfig(port=0)) as tracker:
            reg = await tracker.register(IH, expected_peers=1)
            query = announce_query(IH, pid(1), left=0).decode()
            async with aiohttp.ClientSession() as http:
                url = URL(f"{reg['announce_url']}?{query}", encoded=True)
                async with http.get(url) as resp:
                    body = bencode.decode(await resp.read())
            assert tracker.status(IH)["done"] is True
        assert signal.getsignal(signal.SIGTERM) == before
        assert isinstance(body, dict)
        return body

    body = asyncio.run(main())
    assert (body[b"roost.expected"], body[b"roost.complete_peers"]) == (1, 1)
