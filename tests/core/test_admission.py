"""The connection admission policy (roost.core.admission), driven by a fake clock."""

from __future__ import annotations

from roost.core.admission import (
    ADDRESS_FULL,
    EVICTED,
    HANDSHAKE_LATE,
    PENDING_FULL,
    TABLE_FULL,
    Admission,
    PeerView,
)


def test_pending_connections_take_no_slot_of_max_peers() -> None:
    adm = Admission(max_peers=2, pending_budget=10, pending_per_address=10)
    for port in range(10):
        assert adm.arrive(("10.0.0.1", port), now=0.0) == []
    # ten idle sockets, yet the table still has both slots for real peers
    assert adm.handshaken(("10.0.0.9", 1), 0.1, []).admit
    assert adm.room_to_dial(connecting=0) == 1


def test_a_full_pending_budget_drops_the_oldest_not_the_newcomer() -> None:
    adm = Admission(max_peers=60, pending_budget=3, pending_per_address=10)
    for port in range(3):
        adm.arrive(("10.0.0.1", port), now=float(port))
    assert adm.arrive(("10.0.0.2", 9), now=5.0) == [("10.0.0.1", 0)]
    assert ("10.0.0.2", 9) in adm.pending
    assert adm.refused[PENDING_FULL] == 1


def test_per_address_cap_churns_only_that_address() -> None:
    adm = Admission(max_peers=60, pending_budget=100, pending_per_address=2)
    adm.arrive(("10.0.0.7", 1), 0.0)
    adm.arrive(("10.0.0.1", 1), 0.0)
    adm.arrive(("10.0.0.1", 2), 1.0)
    assert adm.arrive(("10.0.0.1", 3), 2.0) == [("10.0.0.1", 1)]
    assert ("10.0.0.7", 1) in adm.pending
    assert adm.refused[ADDRESS_FULL] == 1


def test_handshake_deadline_on_the_fake_clock() -> None:
    adm = Admission(max_peers=60, handshake_seconds=5.0)
    adm.arrive(("10.0.0.1", 1), now=100.0)
    adm.arrive(("10.0.0.2", 1), now=102.0)
    assert adm.next_deadline() == 105.0
    assert adm.overdue(104.9) == []
    assert adm.overdue(105.0) == [("10.0.0.1", 1)]
    assert adm.next_deadline() == 107.0
    assert adm.refused[HANDSHAKE_LATE] == 1
    # a dripping peer that handshakes after its deadline was already dropped
    assert adm.overdue(200.0) == [("10.0.0.2", 1)]
    assert adm.next_deadline() is None


def test_full_table_evicts_the_longest_idle_peer_that_does_not_trade() -> None:
    adm = Admission(max_peers=3)
    views: list[PeerView] = []
    for i, (trading, useful) in enumerate([(True, 1.0), (False, 5.0), (False, 2.0)]):
        key = (f"10.0.0.{i}", 1)
        adm.arrive(key, 0.0)
        assert adm.handshaken(key, 0.0, views).admit
        views.append(PeerView(key, trading=trading, last_useful=useful))
    decision = adm.handshaken(("10.0.0.9", 1), 10.0, views)
    assert decision.admit and decision.evict == ("10.0.0.2", 1)
    assert adm.refused[EVICTED] == 1
    assert ("10.0.0.9", 1) in adm.ready and ("10.0.0.2", 1) not in adm.ready


def test_full_table_of_trading_peers_refuses_the_newcomer() -> None:
    adm = Admission(max_peers=2)
    views: list[PeerView] = []
    for i in range(2):
        key = (f"10.0.0.{i}", 1)
        adm.handshaken(key, 0.0, views)
        views.append(PeerView(key, trading=True, last_useful=0.0))
    decision = adm.handshaken(("10.0.0.9", 1), 1.0, views)
    assert not decision.admit and decision.evict is None and decision.reason == TABLE_FULL
    assert adm.refused[TABLE_FULL] == 1


def test_ready_per_address_cap_applies_outside_loopback_only() -> None:
    adm = Admission(max_peers=100, ready_per_address=2)
    views: list[PeerView] = []
    for port in range(2):
        key = ("10.0.0.1", port)
        adm.handshaken(key, 0.0, views)
        views.append(PeerView(key, trading=True, last_useful=0.0))
    assert not adm.handshaken(("10.0.0.1", 5), 1.0, views).admit
    loop_views: list[PeerView] = []
    for port in range(5):
        key = ("127.0.0.1", port)
        assert adm.handshaken(key, 0.0, loop_views).admit
        loop_views.append(PeerView(key, trading=True, last_useful=0.0))


def test_gone_frees_slots() -> None:
    adm = Admission(max_peers=1)
    adm.handshaken(("10.0.0.1", 1), 0.0, [])
    assert adm.room_to_dial(0) == 0
    adm.gone(("10.0.0.1", 1))
    assert adm.room_to_dial(0) == 1
    adm.arrive(("10.0.0.2", 1), 0.0, incoming=False)
    assert adm.room_to_dial(0) == 0  # a dial in progress holds its slot


def test_refusals_are_reported_at_most_once_per_interval() -> None:
    adm = Admission(max_peers=1, report_seconds=10.0)
    assert adm.report(0.0) is None
    adm.count("address not allowed", ("10.0.0.1", 1))
    assert adm.report(0.0) == {"address not allowed": 1}
    for port in range(500):
        adm.count("address not allowed", ("10.0.0.1", port))
    assert adm.report(5.0) is None
    assert adm.report(10.0) == {"address not allowed": 500}
    assert adm.last_refused["address not allowed"] == ("10.0.0.1", 499)
    assert adm.report(30.0) is None


def test_a_fleet_starting_at_once_fits_in_the_default_pending_budget() -> None:
    """Every host of a fleet dials ~max_peers others in the same instant: a
    burst of 2 x max_peers handshakes from distinct hosts is held, not
    dropped (with 32, the dropped dialers waited 5 s to try again)."""
    adm = Admission(max_peers=60)
    for host in range(120):
        assert adm.arrive((f"10.0.{host // 250}.{host % 250 + 1}", 6881), now=0.0) == []
    assert adm.refused[PENDING_FULL] == 0
