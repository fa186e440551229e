"""Real clients nobody here wrote (aria2c, libtorrent) complete downloads through
the roost tracker on loopback, and aria2c survives a tracker restart."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from roost.core.metainfo import parse
from roost.core.tracker_swarm import TrackerPolicy
from tests.conftest import require_module, require_tool

from .helpers import make_torrent

pytestmark = [pytest.mark.interop, pytest.mark.slow]

POLICY = TrackerPolicy(interval=1, min_interval=1, peer_timeout=30)
SIZE = 3 * 1024 * 1024 + 12345  # not a whole number of pieces


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def procs() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start processes; every one is ended by its PID afterwards, even on failure."""
    started: list[subprocess.Popen[bytes]] = []

    def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def aria2c_args(directory: Path, torrent: Path, port: int) -> list[str]:
    return [
        require_tool("aria2c"),
        f"--dir={directory}",
        "--seed-ratio=0.0",  # keep seeding after the download until we stop it
        "--check-integrity=true",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        f"--listen-port={port}",
        "--bt-tracker-interval=1",
        "--summary-interval=0",
        "--file-allocation=none",
        "--console-log-level=notice",
        str(torrent),
    ]


class LtClient:
    """A libtorrent session on loopback with one torrent."""

    def __init__(self, torrent: bytes, save: Path, seed: bool = False) -> None:
        lt: Any = require_module("libtorrent")
        self.session = lt.session(
            {
                "listen_interfaces": "127.0.0.1:0",
                "enable_dht": False,
                "enable_lsd": False,
                "enable_upnp": False,
                "enable_natpmp": False,
                "allow_multiple_connections_per_ip": True,
                "stop_tracker_timeout": 2,
            }
        )
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(lt.bdecode(torrent))
        params.save_path = str(save)
        self.handle = self.session.add_torrent(params)
        if seed:
            self.handle.force_recheck()

    def seeding(self) -> bool:
        return bool(self.handle.status().is_seeding)

    def close(self) -> None:
        self.session.remove_torrent(self.handle)
        self.session.pause()
        del self.session


@pytest.fixture
def lt_clients() -> Iterator[Callable[..., LtClient]]:
    made: list[LtClient] = []

    def make(*args: Any, **kwargs: Any) -> LtClient:
        client = LtClient(*args, **kwargs)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            client.close()


def setup_swarm(t: Any, tmp_path: Path) -> tuple[bytes, bytes, bytes, Path]:
    """Payload in tmp/seed, torrent announcing to `t`; returns (payload, ih, torrent, path)."""
    payload = os.urandom(SIZE)
    (tmp_path / "seed").mkdir()
    (tmp_path / "fetch").mkdir()
    (tmp_path / "seed" / "payload.bin").write_bytes(payload)
    ih = parse(make_torrent(payload, "payload.bin", "http://placeholder/announce")).info_hash
    reg = t.run(t.server.register(ih, name="payload", expected_peers=2))
    # libtorrent's SSRF mitigation accepts a tracker on a loopback address only when
    # its path starts with /announce: the secret-last form, which the tracker still serves
    old_form = f"http://127.0.0.1:{t.port}/announce/{reg['token']}"
    torrent = make_torrent(payload, "payload.bin", old_form)
    path = tmp_path / "payload.torrent"
    path.write_bytes(torrent)
    return payload, ih, torrent, path


def check_done(t: Any, ih: bytes, payload: bytes, fetched: Path) -> None:
    assert fetched.read_bytes() == payload
    wait_for("both peers to report completion", lambda: t.call(t.server.status, ih)["done"], 10)
    status = t.call(t.server.status, ih)
    assert status["complete_peers"] == 2 and status["totals"]["complete"] == 2


def test_aria2c_seeds_libtorrent_fetches(
    start_tracker: Any, tmp_path: Path, procs: Any, lt_clients: Any
) -> None:
    t = start_tracker(policy=POLICY)
    payload, ih, torrent, path = setup_swarm(t, tmp_path)
    procs(aria2c_args(tmp_path / "seed", path, free_port()), tmp_path / "aria2c.log")
    client = lt_clients(torrent, tmp_path / "fetch")
    wait_for("libtorrent to finish", client.seeding)
    check_done(t, ih, payload, tmp_path / "fetch" / "payload.bin")


def test_libtorrent_seeds_aria2c_fetches(
    start_tracker: Any, tmp_path: Path, procs: Any, lt_clients: Any
) -> None:
    t = start_tracker(policy=POLICY)
    payload, ih, torrent, path = setup_swarm(t, tmp_path)
    seeder = lt_clients(torrent, tmp_path / "seed", seed=True)
    wait_for("libtorrent to verify the seed data", seeder.seeding, 30)
    procs(aria2c_args(tmp_path / "fetch", path, free_port()), tmp_path / "aria2c.log")
    fetched = tmp_path / "fetch" / "payload.bin"
    wait_for(
        "aria2c to finish",
        lambda: (
            fetched.exists()
            and fetched.stat().st_size == SIZE
            and t.call(t.server.status, ih)["done"]
        ),
    )
    check_done(t, ih, payload, fetched)


def test_restart_aria2c_keeps_announcing_on_the_old_url(
    start_tracker: Any, tmp_path: Path, procs: Any, lt_clients: Any
) -> None:
    state = tmp_path / "tracker-state.json"
    t1 = start_tracker(policy=POLICY, state_path=state)
    payload, ih, torrent, path = setup_swarm(t1, tmp_path)
    aria_port = free_port()
    procs(aria2c_args(tmp_path / "seed", path, aria_port), tmp_path / "aria2c.log")

    def aria_in(t: Any) -> bool:
        peers = t.call(t.server.status, ih)["peers"]
        return any(p["port"] == aria_port and p["completed"] for p in peers)

    wait_for("aria2c's first announce", lambda: aria_in(t1), 30)
    port = t1.port
    t1.stop()  # the tracker goes away: live peers are lost, the state file is not
    time.sleep(1.5)  # aria2c's announces fail meanwhile
    t2 = start_tracker(policy=POLICY, state_path=state, port=port)
    wait_for("aria2c to re-announce on the old URL", lambda: aria_in(t2), 30)
    text = t2.get("/metrics")[1].decode()
    assert 'roost_tracker_rejected_total{kind="secret"}' not in text
    # and the rebuilt swarm works: a fresh libtorrent fetches from aria2c
    client = lt_clients(torrent, tmp_path / "fetch")
    wait_for("libtorrent to finish after the restart", client.seeding)
    check_done(t2, ih, payload, tmp_path / "fetch" / "payload.bin")
