"""Pinned results of fixed simulator runs (bench.sim_fingerprint).

Speed-ups of the core and of the simulator's driver must not change what a
run does, event for event. The digests were first recorded on main (06065d5)
before the seventh pass (docs/sim.md), which kept them; then main's
2eea627 (the picker, request and wire changes merged from issue-16cpu and
issue-21h) changed three of them on its own (the same digests with and
without the seventh pass). Then issue-21s stopped sending a Have to a peer
that holds the piece, on purpose: fewer messages (small-full 54,472 ->
48,027 events, crowd-lean 84,185 -> 69,975, faults-zones 41,605 -> 38,613,
corrupt-loss 20,033 -> 19,380), completion times within the seeds' spread
(docs/sim.md, "No Have to a peer that holds the piece"). Then issue-18rtt
stopped dialling a peer that had dialled us and said where it listens, when
the tracker lists that address later: every pair of hosts reconnected at the
first re-announce and the new connection replaced the old (docs/sim.md,
"Round trips ... branch issue-18rtt"). Fewer events (small-full 48,027 ->
41,011, crowd-lean 69,975 -> 60,813, faults-zones 38,613 -> 35,168,
corrupt-loss 19,380 -> 16,820), completion times within the seeds' spread;
(Its round-trip pipeline left all four unchanged.) Then issue-21ss made a
super-seeding origin renew the offers of a peer that says it is not
interested (it holds them): small-full 41,011 -> 41,239 events (last host
7.644 -> 7.611 s), faults-zones 35,168 -> 34,271 (first 0.472 -> 0.607 s,
p50 0.827 -> 0.818 s, last 1.812 -> 1.784 s); the other two unchanged;
these are its (docs/sim.md, "An origin's offers to a peer that lost
interest"). Then issue-18speed made the network event-driven (a step
touches only the pipes whose head message finishes in it): a head's bytes
left are now computed from the time they were last exact instead of
subtracted step by step, so times moved at float rounding: every
receiver's completion time within 7e-16 of the old one (relative), small-full
41,239 -> 41,245 events, the others' counts unchanged (docs/sim.md, "The
event-driven network"). Then the zone's import shares (issue 18, 2026-12-07:
a zone's hosts split what the zone lacks instead of each fetching it from
outside) changed faults-zones on purpose, the only zoned one: 34,271 ->
28,129 events, p50 2.746 -> 1.317 s, last 5.984 -> 5.404 s (over seeds 1-8
of the same scenario p50 fell in all 8, the last host from -0.71 to +1.45 s;
docs/sim.md, "Zones: one importer per piece"). Then the send window of
64 KiB (a control message waits behind little of a peer's uploads), the
eviction order of fresh idle peers, and the super-seeder's accounting of
what a peer asked for changed all four on purpose: first / p50 / last host
small-full 1.644 / 2.147 / 2.554 -> 1.641 / 2.137 / 2.261 s (41,245 ->
43,317 events), crowd-lean 0.098 / 1.462 / 1.553 -> 0.098 / 1.429 / 1.537
(60,813 -> 68,191), faults-zones 1.138 / 1.317 / 5.404 -> 0.989 / 1.312 /
5.412 (28,129 -> 30,305), corrupt-loss 1.862 / 2.239 / 2.972 -> 1.769 /
2.241 / 2.559 (16,820 -> 18,434) (docs/sim.md, "Control messages no
longer wait behind queued uploads"). A change
that alters results on purpose updates them here and says why in its commit
and in docs/sim.md.
"""

from __future__ import annotations

import pytest

from bench.sim_fingerprint import SCENARIOS, fingerprint

PINNED = {
    "small-full": ("e62ffeda1a0119661db989c9364c9960237f057c0afcf88e773544799bacbbd2", 43317),
    "crowd-lean": ("e011aeb6d79fa9d55094232f5b61befa4fd06767a86ac77839e582255dc0b7db", 68191),
    "faults-zones": ("34490b3e155d80945fe4de9c03301d62fd16bc8891f9405ed9669120a93e13d7", 30305),
    "corrupt-loss": ("46b9e2bf0f762c0e32907338aff09d975ffebc2b4ca68735cd6f8d30548ca33c", 18434),
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
            # the eighth pass: a full table's eviction looks at the idle views only
            views = member.peers.views()
            assert member.peers.idle_views() == [v for v in views if not v.trading]
            checked += 1
        return False

    for name in ("crowd-lean", "faults-zones"):
        World(SCENARIOS[name]).run(check, every=1500)
    assert checked > 500
