"""Pinned results of fixed simulator runs (bench.sim_fingerprint).

Speed-ups of the core and of the simulator's driver must not change what a
run does, event for event. These digests were recorded on main (06065d5)
before the seventh pass (docs/sim.md). A change that alters results on
purpose updates them here and says why in its commit and in docs/sim.md.
"""

from __future__ import annotations

import pytest

from bench.sim_fingerprint import SCENARIOS, fingerprint

PINNED = {
    "small-full": ("3df2539ca44e212a8b270119194b6cadc61cff5866aa9f879428feca814cbf25", 54699),
    "crowd-lean": ("c91cba6530290150b4da0c532cfc24a412699cfc3803a5ca04ccf7119e077484", 84185),
    "faults-zones": ("c568346a7d9edd37f13712fc2efe130a2dce586a5a50b865a628820b1782f150", 41281),
    "corrupt-loss": ("71581afcf8538249333ec5b6d6c8d811785cbd9b7eb520db6e9e857806be7c92", 20645),
}


def test_every_scenario_is_pinned() -> None:
    assert set(PINNED) == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_a_fixed_run_gives_its_pinned_result(name: str) -> None:
    digest, events = fingerprint(SCENARIOS[name])
    assert (digest, events) == PINNED[name], (
        f"{name}: the simulation's result changed (events {events}, pinned {PINNED[name][1]})"
    )


def test_the_cores_indices_agree_with_a_full_scan_throughout_a_run() -> None:
    """The seventh pass replaced scans of every connection by indices kept up
    to date (PeerTable, Admission, SwarmMember._sources); checked here against
    the scans they replaced, every 1,500 events of two runs with faults and a full table."""
    from roost.core.conn import pipeline_floor
    from roost.sim.world import World

    checked = 0

    def check(world: World) -> bool:
        nonlocal checked
        for host in world.hosts:
            member = host.member
            if member is None:
                continue
            conns = list(member.conns.values())
            ready = [c for c in conns if c.ready]
            admitted = member.peers.admitted()
            assert [c for c in admitted if c.ready] == ready
            sources = sum(1 for c in conns if not c.peer_choking and not c.closed)
            assert member._sources == sources
            assert member._pipeline_floor == pipeline_floor(sources)
            adm = member.peers.admission
            pending = adm.pending
            assert adm.next_deadline() == (
                min(t for t, _ in pending.values()) + adm.handshake_seconds if pending else None
            )
            assert list(adm._incoming) == [k for k, (_, inc) in pending.items() if inc]
            assert adm._outgoing == sum(1 for _, inc in pending.values() if not inc)
            for addr, at in member.peers._by_addr.items():
                assert at == [c for c in conns if c.address == addr]
            checked += 1
        return False

    for name in ("crowd-lean", "faults-zones"):
        World(SCENARIOS[name]).run(check, every=1500)
    assert checked > 500
