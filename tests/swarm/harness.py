"""Run real `roost seed` / `roost fetch` processes on loopback and watch them.

Each process prints JSON event lines; a reader thread collects them so a
test can wait for an event (bounded by a timeout) and inspect the history.
Every process started here is ended by PID at teardown.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class RoostProc:
    def __init__(self, argv: list[str], name: str, bind: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.argv = [
            sys.executable,
            "-m",
            "roost",
            *argv,
            "--json",
            "--port",
            str(port),
            "--bind",
            bind,
        ]
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def wait_event(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if event.get("event") == name:
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._pending(name)):
                    raise AssertionError(
                        f"{self.name}: no {name!r} event in {timeout} s; exit "
                        f"{self.proc.poll()}; stderr: {''.join(self.stderr)[-2000:]}"
                    )
                self._cond.wait(min(left, 0.2))

    def _pending(self, name: str) -> bool:
        return any(e.get("event") == name for e in self.events)

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("event") == name]

    @property
    def port(self) -> int:
        return int(self.wait_event("started", 30)["port"])

    def wait(self, timeout: float = 120.0) -> int:
        return self.proc.wait(timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(10)


class Procs:
    """A registry that ends every process it started (fixture teardown)."""

    def __init__(self) -> None:
        self.all: list[RoostProc] = []

    def start(
        self, argv: list[str], name: str, bind: str = "127.0.0.1", port: int = 0
    ) -> RoostProc:
        proc = RoostProc(argv, name, bind, port)
        self.all.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.all:
            proc.stop()


def make_tree(root: Path, total: int, seed: int = 1) -> Path:
    """A directory payload of a few files (one empty) with pseudo-random bytes."""
    root.mkdir(parents=True)
    (root / "sub").mkdir()
    sizes = [total // 2, total // 3, total - total // 2 - total // 3]
    names = ["big.bin", "sub/mid.bin", "sub/tail.bin"]
    state = hashlib.sha256(str(seed).encode()).digest()
    for name, size in zip(names, sizes, strict=False):
        chunks = []
        made = 0
        while made < size:
            state = hashlib.sha256(state).digest()
            block = state * 2048
            chunks.append(block)
            made += len(block)
        (root / name).write_bytes(b"".join(chunks)[:size])
    (root / "empty.txt").write_bytes(b"")
    return root


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
