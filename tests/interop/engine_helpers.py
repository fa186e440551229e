"""Real peers for the engine interop tests: `roost tracker`, aria2c, libtorrent.

Everything runs on 127.0.0.1. Every process started here is ended by its own
PID (never by name) when its owner is closed, and every wait is bounded.
roost seed / roost fetch processes come from tests.swarm.harness.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import require_module, require_tool

MIB = 1024 * 1024


def free_port() -> int:
    """A TCP port that was free a moment ago (for clients that cannot take port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, cond: Callable[[], bool], timeout: float, diag: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{diag()}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def payload_sha256s(path: Path) -> dict[str, str]:
    """SHA-256 of every regular file of a payload (a file, or a directory tree)."""
    if path.is_file():
        return {path.name: file_sha256(path)}
    return {
        str(p.relative_to(path)): file_sha256(p) for p in sorted(path.rglob("*")) if p.is_file()
    }


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; only this one PID."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


class TrackerProcess:
    """`roost tracker` as a real process on 127.0.0.1, port 0, driven by its admin API."""

    def __init__(self, log: Path) -> None:
        self.token = secrets.token_urlsafe(24)
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "roost",
                "tracker",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--json",
                "--interval",
                "1",
                "--min-interval",
                "1",
                "--admin-token",
                self.token,
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        try:
            assert self.proc.stdout is not None
            ready, _, _ = select.select([self.proc.stdout], [], [], 30)
            if not ready:
                raise AssertionError("roost tracker did not start within 30 s")
            self.port = int(json.loads(self.proc.stdout.readline())["port"])
        except BaseException:
            self.close()
            raise

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def register(self, torrent: bytes, secret: str, expected_peers: int) -> dict[str, Any]:
        """Serve this torrent's info-hash under `secret` (the announce URL's last part)."""
        status, reply = self._request(
            "POST",
            "/admin/swarms",
            {
                "torrent": base64.b64encode(torrent).decode(),
                "token": secret,
                "expected_peers": expected_peers,
            },
        )
        assert status == 201, reply
        return dict(reply)

    def status(self, info_hash: bytes) -> dict[str, Any]:
        status, reply = self._request("GET", f"/admin/swarms/{info_hash.hex()}")
        assert status == 200, reply
        return dict(reply)

    def announce_url(self, secret: str) -> str:
        return f"http://127.0.0.1:{self.port}/announce/{secret}"

    def close(self) -> None:
        stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


class Aria2c:
    """One aria2c process (Debian's), seeding or fetching one torrent on loopback."""

    def __init__(self, torrent: Path, directory: Path, log: Path) -> None:
        self.log = log
        self.port = free_port()
        args = [
            require_tool("aria2c"),
            f"--dir={directory}",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--disable-ipv6=true",
            f"--listen-port={self.port}",
            "--bt-tracker-interval=1",
            "--bt-stop-timeout=0",
            "--summary-interval=0",
            "--file-allocation=none",
            "--console-log-level=notice",
            "--seed-ratio=0.0",  # seed until we stop it
            "--check-integrity=true",  # data already on disk is hashed, then seeded
            str(torrent),
        ]
        with log.open("wb") as out:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT
            )

    def tail(self) -> str:
        try:
            return f"aria2c log (tail):\n{self.log.read_text(errors='replace')[-3000:]}"
        except OSError:
            return "aria2c log: unreadable"

    def close(self) -> None:
        stop_process(self.proc)


class LtPeer:
    """A libtorrent 2.x session (PyPI wheel) in this process, with one torrent.

    Loopback needs several connections per IP; uTP is off so every connection
    is TCP; encryption is disabled (roost speaks plain BEP 3, no MSE/PE)."""

    def __init__(self, torrent: bytes, save: Path, *, seed: bool) -> None:
        lt: Any = require_module("libtorrent")
        self.port = free_port()
        self.session = lt.session(
            {
                "listen_interfaces": f"127.0.0.1:{self.port}",
                "enable_dht": False,
                "enable_lsd": False,
                "enable_upnp": False,
                "enable_natpmp": False,
                "enable_incoming_utp": False,
                "enable_outgoing_utp": False,
                "allow_multiple_connections_per_ip": True,
                "in_enc_policy": int(lt.enc_policy.disabled),
                "out_enc_policy": int(lt.enc_policy.disabled),
                "stop_tracker_timeout": 2,
                "alert_mask": int(lt.alert.category_t.error_notification),
            }
        )
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(lt.bdecode(torrent))
        params.save_path = str(save)
        self.handle = self.session.add_torrent(params)
        if seed:
            self.handle.force_recheck()
        self.errors: list[str] = []

    def seeding(self) -> bool:
        return bool(self.handle.status().is_seeding)

    def diag(self) -> str:
        for alert in self.session.pop_alerts():
            self.errors.append(alert.message())
        st = self.handle.status()
        return (
            f"libtorrent: state={st.state} progress={st.progress:.3f} peers={st.num_peers} "
            f"seeds={st.num_seeds} tracker={st.current_tracker!r} "
            f"errors={self.errors[-10:]}"
        )

    def close(self) -> None:
        self.session.remove_torrent(self.handle)
        self.session.pause()
        del self.session
