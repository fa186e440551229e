"""How often a fleet's hosts talk to the deploy process (roost/deploy/pace.py), and the
pieces that carry it out: fetch's progress cadence, the kernel's watch on each SSH
socket, the --key read once."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roost.deploy import pace
from roost.deploy.host import HostRun
from roost.deploy.hosts import HostSpec
from roost.deploy.transport import _client_keys, watch_socket
from roost.engine.reporter import Reporter
from roost.target.fetch_seed import _seconds


def test_a_fleets_progress_lines_stay_within_the_budget() -> None:
    assert pace.progress_every(1) == pace.MIN_PROGRESS_EVERY
    assert pace.progress_every(50) == pace.MIN_PROGRESS_EVERY
    assert pace.progress_every(500) == 10.0
    assert pace.progress_every(10_000) == pace.MAX_PROGRESS_EVERY
    for n in (100, 200, 800):  # lines per second over the fleet, between the bounds
        assert n / pace.progress_every(n) == pytest.approx(pace.PROGRESS_BUDGET)


def test_asyncssh_keepalives_only_where_the_kernel_cannot_watch() -> None:
    assert pace.ssh_keepalive(10_000, kernel_watches=True) == 0.0
    assert pace.ssh_keepalive(8, kernel_watches=False) == pace.KEEPALIVE_IDLE
    # through a ProxyJump at 10,000 hosts: at most KEEPALIVE_BUDGET requests a second
    assert 10_000 / pace.ssh_keepalive(10_000, kernel_watches=False) == pace.KEEPALIVE_BUDGET


def _progress(reporter: Reporter) -> None:
    reporter.progress(done=1, total=2, down_rate=3.0, up_rate=0.0, peers=1, state="downloading")


def test_progress_lines_are_spaced_and_events_never_held_back() -> None:
    out = io.StringIO()
    reporter = Reporter(as_json=True, stream=out, progress_every=3600)
    _progress(reporter)
    _progress(reporter)  # within the hour: dropped
    reporter.event("complete", bytes=2)
    _progress(reporter)
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["progress", "complete"]
    every_tick = io.StringIO()
    reporter = Reporter(as_json=True, stream=every_tick)
    for _ in range(3):
        _progress(reporter)
    assert len(every_tick.getvalue().splitlines()) == 3


def test_a_seeders_lines_are_further_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])  # the reporter's clock
    out = io.StringIO()
    reporter = Reporter(as_json=True, stream=out, progress_every=1.0)

    def seeding() -> None:
        reporter.progress(done=2, total=2, down_rate=0.0, up_rate=5.0, peers=1, state="seeding")

    _progress(reporter)
    now[0] += 2.0  # past the downloading interval, within the seeding one (15 s)
    seeding()
    assert len(out.getvalue().splitlines()) == 1
    now[0] += 14.0
    seeding()
    assert len(out.getvalue().splitlines()) == 2


def test_the_first_bytes_gained_are_told_at_once() -> None:
    """A deploy marks `first_bytes` at the first line whose bytes grew past the first
    line's: that line goes out at once, not up to progress_every later; then paced."""
    out = io.StringIO()
    reporter = Reporter(as_json=True, stream=out, progress_every=3600)

    def progress(done: int) -> None:
        reporter.progress(done=done, total=9, down_rate=0.0, up_rate=0.0, peers=1,
                          state="downloading")

    progress(4)  # what was held (reused) before any transfer
    progress(4)  # nothing gained: paced
    progress(5)  # the first bytes: at once
    progress(6)  # paced again
    progress(7)
    assert [json.loads(line)["bytes_done"] for line in out.getvalue().splitlines()] == [4, 5]


class _Lines:
    """A fetch's stdout as the deploy reads it (roost.deploy.transport.Stream)."""

    def __init__(self, lines: list[dict[str, object]]) -> None:
        self._lines = [json.dumps(line) for line in lines]

    async def lines(self) -> AsyncIterator[str]:
        for line in self._lines:
            yield line

    async def wait(self) -> int:
        return 0

    def close(self) -> None:
        pass

    async def send(self, text: str, eof: bool = False) -> None:
        pass


def test_first_bytes_counts_from_what_the_fetch_held_at_its_start() -> None:
    """The `started` event says what was held (reused) before any transfer: the first
    progress line past it is the host's first_bytes, even when it is the first line."""
    run = HostRun(HostSpec(name="h", address="127.0.0.1"))
    run.fetch_stream = _Lines([
        {"event": "started", "peer_id": "-RO0100-abcdefghijkl", "have": 1, "bytes_done": 100},
        {"event": "progress", "bytes_done": 150, "bytes_total": 200},
        {"event": "complete", "bytes": 200, "downloaded": 100},
    ])
    asyncio.run(run.follow_fetch(asyncio.Event()))
    assert "first_bytes" in run.times
    assert run.times["fetch_running"] <= run.times["first_bytes"] <= run.times["fetched"]


def test_progress_every_takes_seconds_only() -> None:
    assert _seconds("2.5") == 2.5
    for bad in ("-1", "nan", "4000", "soon"):
        with pytest.raises(Exception, match="seconds"):
            _seconds(bad)


def test_the_kernel_watches_each_ssh_socket() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    try:
        assert watch_socket(client)
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == pace.KEEPALIVE_IDLE
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == pace.KEEPALIVE_PROBES
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == (
            pace.USER_TIMEOUT_S * 1000)
    finally:
        client.close()
        server.close()
    assert not watch_socket(None)  # a ProxyJump channel: asyncssh keeps its keepalive


def test_the_key_is_read_once_per_deploy(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    first = _client_keys(str(key))
    assert first is _client_keys(str(key))
    assert first[0].public_data == _client_keys(str(key))[0].public_data
    # one asyncssh cannot read stays a path: asyncssh says why at connect, per host
    assert _client_keys(str(tmp_path / "missing")) == [str(tmp_path / "missing")]
