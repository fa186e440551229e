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
