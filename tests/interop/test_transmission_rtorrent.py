"""roost against Transmission 3.00 and rTorrent 0.9.8 (Debian), issue 21.

Real processes on 127.0.0.1 only, through `roost tracker` as in
test_engine_interop (whose Swarm this extends): each direction with each
client, and a mixed swarm of roost, Transmission and rTorrent. Every result
is checked byte for byte by SHA-256 against the source, and each test fails
when a roost process met something it could not handle (see
Swarm.complaints).

Transmission 3.00 advertises reqq 512 but refuses the 512th outstanding
request, about 10 s late: `roost fetch` from a Transmission seed used to
stall there on its last block. The fetch time is printed (run with -s to see
it), never asserted: wall-clock figures belong to bench/.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.client_helpers import RTorrent, Transmission
from tests.interop.engine_helpers import MIB, payload_sha256s
from tests.interop.test_engine_interop import Swarm, assert_identical

pytestmark = [pytest.mark.interop, pytest.mark.slow]

TIMEOUT = 40.0
#: the fetch-from-Transmission payload: big enough for Transmission's request
#: queue to fill (ROOST_INTEROP_MIB to measure with a bigger one)
FETCH_SIZE = int(os.environ.get("ROOST_INTEROP_MIB", "8")) * MIB + 4321


class ClientSwarm(Swarm):
    """Swarm with Transmission and rTorrent peers, ended before the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.transmissions: list[Transmission] = []
        self.rtorrents: list[RTorrent] = []

    def transmission(self, directory: Path) -> Transmission:
        home = self.root / f"transmission{len(self.transmissions)}"
        client = Transmission(self.torrent, directory, home)
        self.transmissions.append(client)
        self.wait("transmission's RPC", client.rpc_up, 20)
        client.add()
        return client

    def rtorrent(self, directory: Path) -> RTorrent:
        home = self.root / f"rtorrent{len(self.rtorrents)}"
        client = RTorrent(self.torrent_path, directory, home)
        self.rtorrents.append(client)
        return client

    def diag(self) -> str:
        parts = [super().diag()]
        parts.extend(c.tail() for c in self.transmissions)
        parts.extend(c.tail() for c in self.rtorrents)
        return "\n".join(parts)

    def close(self) -> None:
        try:
            for client in [*self.transmissions, *self.rtorrents]:
                with contextlib.suppress(Exception):  # keep ending the others
                    client.close()
        finally:
            super().close()


@pytest.fixture
def swarm() -> Iterator[ClientSwarm]:
    world = ClientSwarm()
    try:
        yield world
    finally:
        world.close()


EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # SHA-256 of b""


def assert_identical_files(directory: Path, source: Path) -> None:
    """Every non-empty file byte-exact (Transmission 3.00 does not create the
    zero-length files of a torrent; an empty file it did create is checked)."""
    want = {k: v for k, v in payload_sha256s(source).items() if v != EMPTY}
    got = {k: v for k, v in payload_sha256s(directory / source.name).items() if v != EMPTY}
    assert got == want, f"payload in {directory} differs from the source"


def single(swarm: ClientSwarm, size: int) -> Path:
    (swarm.root / "src").mkdir()
    path = swarm.root / "src" / "artifact.bin"
    path.write_bytes(os.urandom(size))
    return path


def test_roost_seeds_transmission_fetches(swarm: ClientSwarm) -> None:
    source = swarm.payload("multi")
    swarm.publish(source, expected_peers=2)
    swarm.roost_seed(source.parent)
    client = swarm.transmission(swarm.root / "tr")
    swarm.wait("transmission to complete", client.seeding, TIMEOUT)
    assert_identical_files(swarm.root / "tr", source)
    swarm.assert_clean()


def test_transmission_seeds_roost_fetches(swarm: ClientSwarm) -> None:
    source = single(swarm, FETCH_SIZE)
    swarm.publish(source, expected_peers=2)
    seeder = swarm.transmission(source.parent)
    swarm.wait("transmission to verify its seed data", seeder.seeding, 30)
    digest = payload_sha256s(source)[source.name]
    started = time.monotonic()
    fetch = swarm.roost_fetch(swarm.root / "roost", "--no-seed", "--sha256", digest)
    fetch.wait_event("complete", TIMEOUT)
    took = time.monotonic() - started
    # Transmission unchokes on its 10 s rechoke round: the time from the first
    # bytes (0.5 s progress lines) to complete is where a last-block stall shows
    first = next(e["t"] for e in fetch.events if e.get("bytes_done"))
    tail = fetch.named("complete")[0]["t"] - first
    print(
        f"\nroost fetch of {FETCH_SIZE} bytes from a Transmission seed: {took:.2f} s,"
        f" {tail:.2f} s from the first bytes to complete"
    )
    assert fetch.wait(30) == 0, swarm.diag()
    assert fetch.named("sha256_ok")
    assert_identical(swarm.root / "roost", source)
    swarm.assert_clean()


def test_roost_seeds_rtorrent_fetches(swarm: ClientSwarm) -> None:
    source = swarm.payload("multi")
    swarm.publish(source, expected_peers=2)
    swarm.roost_seed(source.parent)
    client = swarm.rtorrent(swarm.root / "rt")
    swarm.wait("rtorrent to complete", client.done, TIMEOUT)
    assert_identical(swarm.root / "rt", source)
    swarm.assert_clean()


def test_rtorrent_seeds_roost_fetches(swarm: ClientSwarm) -> None:
    source = single(swarm, FETCH_SIZE)
    swarm.publish(source, expected_peers=2)
    seeder = swarm.rtorrent(source.parent)
    swarm.wait("rtorrent to hash its seed data", seeder.done, 30)
    digest = payload_sha256s(source)[source.name]
    started = time.monotonic()
    fetch = swarm.roost_fetch(swarm.root / "roost", "--no-seed", "--sha256", digest)
    fetch.wait_event("complete", TIMEOUT)
    print(f"\nroost fetch from an rTorrent seed: {time.monotonic() - started:.2f} s")
    assert fetch.wait(30) == 0, swarm.diag()
    assert fetch.named("sha256_ok")
    assert_identical(swarm.root / "roost", source)
    swarm.assert_clean()


def test_mixed_swarm_of_roost_transmission_and_rtorrent(swarm: ClientSwarm) -> None:
    """A roost origin capped at 1 MiB/s, and a roost, a Transmission and an
    rTorrent peer: all complete byte-exact, and the tracker counts all 4 done."""
    source = swarm.payload("multi")
    swarm.publish(source, expected_peers=4)
    swarm.roost_seed(source.parent, "--upload-rate", "1M")
    fetch = swarm.roost_fetch(swarm.root / "roost")
    tr = swarm.transmission(swarm.root / "tr")
    rt = swarm.rtorrent(swarm.root / "rt")
    swarm.wait("transmission to complete", tr.seeding, 50)
    swarm.wait("rtorrent to complete", rt.done, 30)
    swarm.wait("the roost peer to complete", lambda: bool(fetch.named("complete")))
    for directory in ("roost", "rt"):
        assert_identical(swarm.root / directory, source)
    assert_identical_files(swarm.root / "tr", source)
    swarm.wait("the tracker to count all 4 peers done", swarm.swarm_done, 30)
    swarm.assert_clean()
