"""A full peer table in a fleet that starts at once (issue 18), on a fake clock.

A rule of roost.core.admission that only matters when a swarm has more hosts
than a table has slots (docs/sim.md, "Peer tables above 60 hosts"): idle
peers that never traded with us are evicted in each table's own order, not
oldest first.
"""

from __future__ import annotations

from roost.core.admission import EVICTED, Admission, PeerView


def _fill(adm: Admission, keys: list[tuple[str, int]], now: float) -> list[PeerView]:
    views: list[PeerView] = []
    for key in keys:
        assert adm.handshaken(key, now, views).admit
        views.append(PeerView(key, trading=False, last_useful=now, traded=False))
    return views


def test_tables_of_a_fleet_evict_different_fresh_peers() -> None:
    # 40 hosts, each with the same 4 peers that connected in the same order at
    # the same instant (the first hosts to start), none traded yet: evicting
    # the oldest made every host evict the same peer
    first = [(f"10.0.0.{i}", 6881) for i in range(1, 5)]
    victims = []
    for host in range(40):
        adm = Admission(max_peers=4, salt=b"-RO0100-host%03d" % host)
        views = _fill(adm, first, 0.0)
        newcomer = (f"10.0.1.{host}", 6881)
        decision = adm.handshaken(newcomer, 0.0, views)
        assert decision.admit and decision.evict in first
        assert adm.refused[EVICTED] == 1
        victims.append(decision.evict)
    assert len(set(victims)) == len(first)  # every one of them, not the oldest each time
    assert max(victims.count(v) for v in first) < 20


def test_a_fresh_idle_peer_goes_before_one_that_traded() -> None:
    adm = Admission(max_peers=2, salt=b"x")
    old, fresh = ("10.0.0.1", 1), ("10.0.0.2", 1)
    views = _fill(adm, [old, fresh], 0.0)
    views = [
        PeerView(old, False, 1.0, traded=True),  # idle since 1.0
        PeerView(fresh, False, 5.0, traded=False),  # joined at 5.0, nothing passed yet
    ]
    decision = adm.handshaken(("10.0.0.9", 1), 10.0, views)
    assert decision.admit and decision.evict == fresh
