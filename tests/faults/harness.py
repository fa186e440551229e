"""A roost swarm in the fleet lab: `roost tracker`, `roost seed` and `roost fetch`
as real processes in network namespaces, for the fault tests.

Theory of operation. Host 0 runs the tracker (with a state file, so it can be
restarted) and the origin; every other host runs `roost fetch`. The swarm is
registered by writing the tracker's state file before it starts, with the
expected peer count (receivers + origin), so fetches stop on their own once
every expected peer is complete, as in a deploy. Each process's JSON event
lines are read by a thread and stamped with time.monotonic() on arrival, so a
test can wait for an event (always with a timeout) and measure completion
times. Every process is started through Lab.spawn, so the lab's teardown
stops it even when a test fails; the test itself kills only by PID.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.lab import Host, Lab
from roost.commands.make import make_torrent
from roost.core.metainfo import Metainfo, parse
from roost.core.tracker_swarm import SwarmRecord
from roost.tracker import state as state_file

REPO = Path(__file__).resolve().parents[2]
TRACKER_PORT = 6969
PEER_PORT = 6881
MIB = 1024 * 1024


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def write_payload(path: Path, size: int, seed: int = 1) -> str:
    """Pseudo-random bytes (incompressible, reproducible); returns their SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = hashlib.sha256(str(seed).encode()).digest()
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            state = hashlib.sha256(state).digest()
            chunk = (state * 32768)[: min(left, 1 << 20)]  # 1 MiB per step
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verified_pieces(path: Path, meta: Metainfo, known: set[int] | None = None) -> set[int]:
    """Pieces of a single-file payload at `path` whose SHA-1 matches the torrent.

    The engine writes a piece only after it passed its hash, so this is the
    set a host holds and can serve (a piece being written may be missed: the
    count is conservative). Pieces in `known` were verified before and are
    not read again (a written piece stays written)."""
    info = meta.info
    have: set[int] = set(known or ())
    try:
        with path.open("rb") as f:
            for index in range(info.num_pieces):
                if index in have:
                    continue
                f.seek(index * info.piece_length)
                data = f.read(info.piece_size(index))
                if hashlib.sha1(data).digest() == info.piece_hash(index):
                    have.add(index)
    except OSError:
        pass
    return have


class LabProc:
    """One roost process in a lab host, with its JSON events stamped on arrival."""

    def __init__(self, lab: Lab, host: Host, argv: list[str], name: str) -> None:
        self.lab, self.host, self.name, self.argv = lab, host, name, argv
        self.proc = lab.spawn(
            host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=REPO
        )
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                with self._cond:
                    self.events.append((time.monotonic(), event))
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace"))

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for _, e in self.events if e.get("event") == name]

    def time_of(self, name: str) -> float | None:
        with self._cond:
            return next((t for t, e in self.events if e.get("event") == name), None)

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for _, event in self.events:
                    if event.get("event") == name:
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    break
                self._cond.wait(min(left, 0.2))
        # the process may have exited with the event still in the pipe
        time.sleep(0.2)
        found = self.named(name)
        if found:
            return found[0]
        raise AssertionError(
            f"{self.name}: no {name!r} event within {timeout:g} s (exit {self.proc.poll()}); "
            f"stderr: {self.tail()}"
        )

    def bytes_done(self) -> int:
        done = self.named("progress")
        return int(done[-1]["bytes_done"]) if done else 0

    def tail(self) -> str:
        return "".join(self.stderr)[-1500:]

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout:g} s") from None

    def kill(self) -> None:
        """SIGKILL, by PID (the process leads its own group: `ip netns exec` execs)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        self.lab.stop(self.proc)


@dataclass
class Payload:
    path: Path
    sha256: str
    torrent: Path
    meta: Metainfo
    token: str


class LabSwarm:
    """Tracker + origin on host 0, `roost fetch` on receivers, all in one lab."""

    def __init__(self, lab: Lab, size: int, *, piece: int = 256 * 1024, seed: int = 1) -> None:
        self.lab = lab
        assert lab.tmpdir is not None
        self.root = lab.tmpdir
        self.origin = lab.origin
        self.token = secrets.token_urlsafe(24)
        self.admin_token = secrets.token_urlsafe(24)
        url = f"http://{self.origin.ip}:{TRACKER_PORT}/announce/{self.token}"
        path = self.root / "origin" / "payload.bin"
        digest = write_payload(path, size, seed)
        torrent = self.root / "payload.torrent"
        torrent.write_bytes(make_torrent(path, [url], piece_length=piece))
        self.payload = Payload(path, digest, torrent, parse(torrent.read_bytes()), self.token)
        self.state = self.root / "tracker-state.json"
        self.tracker: LabProc | None = None
        self.seeder: LabProc | None = None
        self.fetches: dict[str, LabProc] = {}
        self._runs = 0

    # -- tracker -------------------------------------------------------------
    def register(self, expected_peers: int) -> None:
        """Write a fresh tracker state: this swarm, nobody finished yet."""
        record = SwarmRecord(self.payload.meta.info_hash, self.token, "faults", expected_peers)
        self.state.write_bytes(
            state_file.dumps(state_file.TrackerState(self.admin_token, [record]))
        )

    def start_tracker(self) -> LabProc:
        argv = [
            sys.executable,
            "-m",
            "roost",
            "tracker",
            "--host",
            self.origin.ip,
            "--port",
            str(TRACKER_PORT),
            "--interval",
            "2",
            "--min-interval",
            "1",
            "--state",
            str(self.state),
            "--json",
        ]
        self.tracker = LabProc(self.lab, self.origin, argv, "tracker")
        self.lab.wait_listen(self.origin, TRACKER_PORT)
        return self.tracker

    # -- peers ---------------------------------------------------------------
    def start_seed(
        self, *extra: str, host: Host | None = None, data: Path | None = None, name: str = "origin"
    ) -> LabProc:
        """`roost seed` of the payload (or of the copy in `data`) on `host` (the origin)."""
        host = host or self.origin
        argv = [
            sys.executable,
            "-m",
            "roost",
            "seed",
            str(self.payload.torrent),
            "-d",
            str(data or self.payload.path.parent),
            "--bind",
            host.ip,
            "--port",
            str(PEER_PORT),
            "--skip-check",
            "--json",
            "--quiet",
            *extra,
        ]
        proc = LabProc(self.lab, host, argv, name)
        proc.wait_event("started", 30)
        if name == "origin":
            self.seeder = proc
        return proc

    def dest(self, host: Host) -> Path:
        return self.root / f"run{self._runs}" / host.name

    def fetch_argv(self, host: Host, expected: int, timeout: float, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "roost",
            "fetch",
            str(self.payload.torrent),
            "-d",
            str(self.dest(host)),
            "--bind",
            host.ip,
            "--port",
            str(PEER_PORT),
            "--json",
            "--quiet",
            "--expected-peers",
            str(expected),
            "--timeout",
            f"{timeout:g}",
            *extra,
        ]

    def start_fetch(self, host: Host, expected: int, timeout: float, *extra: str) -> LabProc:
        proc = LabProc(
            self.lab, host, self.fetch_argv(host, expected, timeout, *extra), f"fetch-{host.name}"
        )
        self.fetches[host.name] = proc
        return proc

    def copy_of(self, host: Host) -> Path:
        return self.dest(host) / self.payload.path.name

    def new_run(self) -> None:
        """Fresh destinations for a second run in the same lab."""
        self._runs += 1
        self.fetches = {}

    def stop_all(self) -> None:
        for proc in [*self.fetches.values(), self.seeder, self.tracker]:
            if proc is not None:
                proc.stop()
