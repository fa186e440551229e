"""Real `roost agent` processes and a real `roost publish`, for the pull-mode tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AgentProc:
    """One `roost agent`; its JSON lines are kept in a log file we read back."""

    name: str
    dest: Path
    log: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    prefix: list[str] = field(default_factory=list)  # e.g. ip netns exec NS

    def start(self) -> AgentProc:
        out = self.log.open("ab")
        self.proc = subprocess.Popen([*self.prefix, *self.argv], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env(), start_new_session=True)
        out.close()
        return self

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    out.append(event)
        return out

    def reports(self, state: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == "report"
                and (state is None or e.get("state") == state)]

    def wait_for(self, check: Callable[[AgentProc], bool], timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(self):
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return check(self)
            time.sleep(0.1)
        return False

    def kill(self) -> None:
        """SIGKILL the agent's whole session (the agent and its fetch), like a power cut."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        # the fetch runs in its own session: stop it by its pid file if it outlived us
        for pidfile in (self.dest / ".roost" / "deploys").glob("*/fetch.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text())
                if b"roost" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)


def agent_argv(name: str, dest: Path, coordinator: str, signers: Path,
               python: Sequence[str] = (sys.executable, "-m", "roost")) -> list[str]:
    return [*python, "agent", "--coordinator", coordinator, "--allowed-signers", str(signers),
            "--dest", str(dest), "--name", name, "--poll-wait", "5"]


def publish_argv(src: Path, key: Path, listen: str, port: int, hosts: list[str],
                 *extra: str) -> list[str]:
    return [sys.executable, "-m", "roost", "publish", str(src), "--key", str(key),
            "--listen", listen, "--port", str(port), "--hosts", ",".join(hosts), "--json",
            *extra]


def run_publish(argv: list[str], timeout: float = 240) -> tuple[int, dict[str, Any], str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env())
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = {}
    return result.returncode, report, result.stderr


def current_of(dest: Path) -> str | None:
    try:
        return os.readlink(dest / "current").rsplit("/", 1)[-1]
    except FileNotFoundError:
        return None


def release_tree(base: Path, name: str, healthy: bool = True, size: int = 200_000) -> Path:
    root = base / name
    root.mkdir(parents=True)
    (root / "VERSION").write_text(name + "\n")
    (root / "data.bin").write_bytes(os.urandom(size))
    check = root / "check.sh"
    check.write_text("#!/bin/sh\necho \"checking $ROOST_TAG\"\n" + (
        "exit 0\n" if healthy else "echo 'FATAL: cannot reach its database' >&2\nexit 1\n"))
    check.chmod(0o755)
    return root


class FakeChannel:
    """A coordinator impersonator: serves whatever envelopes the test gives it and keeps
    the reports agents send (http.server in a thread; the test side may use anything)."""

    def __init__(self, envelopes: list[dict[str, Any]], torrent: bytes = b"") -> None:
        import http.server
        import threading

        self.envelopes = envelopes
        self.torrent = torrent
        self.reports: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, body: bytes, kind: str = "application/json") -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.startswith("/v1/channel"):
                    time.sleep(0.3)  # a short "long poll"
                    self._send(json.dumps({"version": 1, "envelopes": outer.envelopes}).encode())
                else:
                    self._send(outer.torrent, "application/x-bittorrent")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                outer.reports.append(json.loads(self.rfile.read(length)))
                self._send(b"{}")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ChannelTap:
    """Records every envelope a real coordinator serves (what an eavesdropper could keep)."""

    def __init__(self, url: str) -> None:
        import threading

        self.url = url
        self.seen: dict[str, dict[str, Any]] = {}
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import urllib.request

        # Long-poll from the last version seen, so the tap is woken by every change: a
        # fixed polling interval missed an envelope served for less than one interval
        # (activate -> finish -> close can take under 0.1 s on an idle machine).
        version = -1
        while not self.stopping:
            url = f"{self.url}/v1/channel?since={version}&wait=2"
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    answer = json.loads(r.read())
            except (OSError, ValueError):
                version = -1  # a new coordinator (the next deploy) numbers afresh
                time.sleep(0.05)
                continue
            version = int(answer["version"])
            for envelope in answer["envelopes"]:
                self.seen.setdefault(envelope["body"], envelope)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.seen.values() if json.loads(e["body"])["kind"] == kind]

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(timeout=5)
