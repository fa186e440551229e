"""A connection's round trip (Conn.rtt) and what follows it: the request
pipeline and the super-seeding origin's offers (issue 18, docs/sim.md "Round
trips"). Pure: a fake clock, bytes in; the remote's answer to our handshake
comes `rtt` simulated seconds after it (member_kit.Kit.connect)."""

from __future__ import annotations

import ipaddress

import pytest

from roost.core.bitfield import Bitfield
from roost.core.conn import PIPELINE_SECONDS, RTT_MIN_SECONDS, RoundTrip, rtt_units
from roost.core.member import MemberConfig
from roost.core.wire import BLOCK_SIZE, Have, Request
from tests.core.member_kit import Kit

PIECE = 32 * BLOCK_SIZE  # 512 KiB: one piece is the floor of one source (MIN_PIPELINE_BYTES)
ROOST_PEER = {b"m": {}, b"roost_block": PIECE}


def far_kit() -> Kit:
    return Kit(pieces=16, piece_length=PIECE, config=MemberConfig(big_block=PIECE))


def asked_bytes(requests: list[Request]) -> int:
    return sum(r.length for r in requests)


def test_the_round_trip_is_measured_from_our_handshake_to_the_answer() -> None:
    kit = far_kit()
    far = kit.connect(have=Bitfield.full(16), extended=ROOST_PEER, rtt=0.1)
    near = kit.connect(have=Bitfield.full(16), extended=ROOST_PEER)
    assert kit.member.conns[far.cid].rtt.seconds == pytest.approx(0.1)
    assert kit.member.conns[near.cid].rtt.seconds == 0.0


def test_a_far_peer_keeps_more_than_one_piece_in_flight() -> None:
    # 100 ms away at 1.5 MB/s: a 512 KiB piece takes 0.35 s to send, so with
    # one in flight the peer's link to us idles a round trip after each piece
    kit = far_kit()
    far = kit.connect(have=Bitfield.full(16), extended=ROOST_PEER, rtt=0.1)
    kit.member.conns[far.cid].down.rate = 1.5e6
    far.say(far.wire.send_unchoke())
    asked = far.requests()
    assert asked_bytes(asked) >= 2 * PIECE
    assert all(r.length == PIECE for r in asked)  # still whole pieces, one request each


def test_a_near_peer_keeps_the_pipeline_it_had() -> None:
    # below RTT_MIN_SECONDS nothing changes: one piece, the floor (the rate's
    # PIPELINE_SECONDS is less than a piece)
    kit = far_kit()
    near = kit.connect(have=Bitfield.full(16), extended=ROOST_PEER, rtt=RTT_MIN_SECONDS / 20)
    conn = kit.member.conns[near.cid]
    conn.down.rate = 1.5e6
    assert 1.5e6 * PIPELINE_SECONDS < PIECE
    near.say(near.wire.send_unchoke())
    assert asked_bytes(near.requests()) == PIECE


@pytest.mark.parametrize("rate", [2e5, 1.5e6, 2e7])
def test_without_a_round_trip_the_pipeline_is_the_rate_and_the_floor(rate: float) -> None:
    kit = far_kit()
    near = kit.connect(have=Bitfield.full(16), extended=ROOST_PEER)
    conn = kit.member.conns[near.cid]
    conn.floor, conn.down.rate = 4 * BLOCK_SIZE, rate
    assert conn.pipeline_blocks() == max(4, int(rate * PIPELINE_SECONDS) // BLOCK_SIZE)


def test_the_pipeline_covers_the_rate_over_the_round_trip_too() -> None:
    kit = far_kit()
    far = kit.connect(have=Bitfield.full(16), extended=ROOST_PEER, rtt=0.3)
    conn = kit.member.conns[far.cid]
    conn.floor, conn.down.rate = 4 * BLOCK_SIZE, 2e7
    assert conn.pipeline_blocks() * BLOCK_SIZE >= 2e7 * (PIPELINE_SECONDS + 0.3) - BLOCK_SIZE


def test_with_many_sources_a_far_peer_keeps_the_floor_below_a_piece() -> None:
    # the floor shares FLOOR_TOTAL_BYTES among the sources: below a piece each,
    # the other sources keep our link busy while one idles for a round trip
    # (whole pieces there cost zones with latency: docs/sim.md, "Round trips")
    kit = far_kit()
    far = kit.connect(have=Bitfield.full(16), extended=ROOST_PEER, rtt=0.3)
    conn = kit.member.conns[far.cid]
    conn.floor, conn.down.rate = PIECE // 2, 5e5
    assert conn.pipeline_blocks() * BLOCK_SIZE == PIECE // 2
    conn.floor = PIECE  # few sources: the round trip asks a second piece
    assert conn.pipeline_blocks() * BLOCK_SIZE == 2 * PIECE


def test_runs_in_flight_cover_the_round_trip_past_a_tolerance() -> None:
    assert rtt_units(0.0, 0.1, PIECE) == 1  # no rate measured yet
    assert rtt_units(1e6, 0.0, PIECE) == 1
    # a round trip under a tenth of a piece's time: one piece, as without one
    assert rtt_units(PIECE / 1.0, 0.05, PIECE) == 1
    assert rtt_units(PIECE / 1.0, 0.2, PIECE) == 2
    assert rtt_units(PIECE / 1.0, 1.0, PIECE) == 2  # the next request crosses while one is sent
    assert rtt_units(PIECE / 1.0, 1.5, PIECE) == 3


def test_the_lowest_sample_wins() -> None:
    rtt = RoundTrip()
    assert rtt.seconds == 0.0
    rtt.sample(0.3)
    rtt.probe_at = 10.0
    rtt.answered(10.1)
    rtt.answered(20.0)  # no probe out: no sample
    assert rtt.seconds == pytest.approx(0.1)
    rtt.sample(-1.0)  # a clock that went back counts as none
    assert rtt.seconds == 0.0


def offered(remote: object) -> int:
    return len(remote.of(Have))  # type: ignore[attr-defined]


def test_the_origin_offers_a_far_peer_its_round_trips_worth_more() -> None:
    # the super-seeding origin: an offer's slot frees a few round trips after
    # the piece was sent, so a far peer holds more offers at the same rate
    config = MemberConfig(super_seed=True, big_block=PIECE)
    kit = Kit(pieces=64, piece_length=PIECE, complete=True, config=config)
    near = kit.connect(extended=ROOST_PEER, interested=True)
    far = kit.connect(extended=ROOST_PEER, interested=True, rtt=0.2)
    first = offered(near)
    assert offered(far) == first  # no rate measured yet: the floors alone
    for remote in (near, far):
        kit.member.conns[remote.cid].up.rate = 5e6
    kit.advance(0.6)  # a tick sweeps the offers
    assert offered(near) == first
    assert offered(far) > first


def test_a_far_peer_in_another_zone_gets_no_round_trip_offers() -> None:
    # it gets one request in flight (Conn.remote): more offers there would lock
    # pieces behind the narrow link between zones
    config = MemberConfig(super_seed=True, big_block=PIECE,
                          local_nets=[ipaddress.ip_network("10.0.0.0/24")])
    kit = Kit(pieces=64, piece_length=PIECE, complete=True, config=config)
    here = kit.connect(ip="10.0.0.5", extended=ROOST_PEER, interested=True, rtt=0.2)
    away = kit.connect(ip="10.7.0.5", extended=ROOST_PEER, interested=True, rtt=0.2)
    assert kit.member.conns[away.cid].remote and not kit.member.conns[here.cid].remote
    first = offered(away)
    for remote in (here, away):
        kit.member.conns[remote.cid].up.rate = 5e6
    kit.advance(0.6)
    assert offered(here) > first
    assert offered(away) == first
