"""The tracker under connection floods, as a real process with `ulimit -n 256`."""

from __future__ import annotations

import http.client
import json
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from roost.core.bencode import decode

INFO_HASH = bytes(range(20))


def limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def start_tracker() -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "roost", "tracker", "--port", "0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit_fds,
    )  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    if not ready:
        proc.kill()
        pytest.fail("tracker did not start within 20 s")
    return proc, json.loads(proc.stdout.readline())


def register(port: int, token: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/admin/swarms", body=json.dumps({"info_hash": INFO_HASH.hex()}),
                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    reply = json.loads(conn.getresponse().read())
    conn.close()
    return str(reply["token"])


def announce(port: int, secret: str, n: int) -> dict[bytes, Any]:
    query = (
        "info_hash=" + "".join(f"%{b:02X}" for b in INFO_HASH)
        + f"&peer_id=-XX0001-{n:012d}&port={6881 + n}&uploaded=0&downloaded=0&left=10"
    )  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", f"/announce/{secret}?{query}")
        body = conn.getresponse().read()
    finally:
        conn.close()
    got = decode(body)
    assert isinstance(got, dict)
    return got


def test_announces_keep_answering_under_500_idle_connections_at_ulimit_256() -> None:
    proc, info = start_tracker()
    idle: list[socket.socket] = []
    try:
        secret = register(info["port"], info["admin_token"])
        answered = 0
        for round_ in range(10):  # 10 x 50 = 500 idle connections that never send a byte
            for _ in range(50):
                idle.append(socket.create_connection(("127.0.0.1", info["port"]), timeout=5))
            time.sleep(0.1)
            started = time.monotonic()
            reply = announce(info["port"], secret, round_)
            assert b"failure reason" not in reply, reply
            assert time.monotonic() - started < 3.0
            answered += 1
        assert answered == 10
        # the tracker closed the oldest idle ones to stay under its descriptor limit
        time.sleep(0.5)
        closed = 0
        for sock in idle:
            sock.setblocking(False)
            try:
                closed += sock.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        assert closed >= 500 - 256, closed  # it cannot hold more than its limit
    finally:
        for sock in idle:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert "Too many open files" not in err and "Traceback" not in err, err[-3000:]
    # logged once per interval, not once per connection
    assert 1 <= err.count("connection cap") <= 3, err[-3000:]


def test_an_over_long_request_line_gets_a_bencoded_failure_reason() -> None:
    proc, info = start_tracker()
    try:
        with socket.create_connection(("127.0.0.1", info["port"]), timeout=10) as sock:
            sock.sendall(b"GET /announce/" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request"), head
        assert decode(body) == {b"failure reason": b"request line too long"}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert "Traceback" not in err, err[-3000:]
