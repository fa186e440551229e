"""Conn.outstanding keeps a running count of requested picker blocks.

fill_requests reads the count on every call (a hot path), so it is kept up
to date by every change instead of re-summed. These tests compare it with a
fresh sum after every step, first on the container alone, then on a
connection of a real SwarmMember driven by a remote's bytes through
requests, pieces, short pieces, rejects, endgame cancels, chokes and snubs.
"""

from __future__ import annotations

import random

import pytest

from roost.core.bitfield import Bitfield
from roost.core.conn import Outstanding
from roost.core.member import SNUB_SECONDS, MemberConfig
from roost.core.wire import BLOCK_SIZE
from roost.errors import UsageError
from tests.core.member_kit import Kit


def resummed(requests: dict[tuple[int, int], int] | list[tuple[tuple[int, int], int]]) -> int:
    items = requests.items() if isinstance(requests, dict) else requests
    return sum(-(-length // BLOCK_SIZE) for _, length in items)


@pytest.mark.parametrize("seed", range(20))
def test_count_matches_a_reference_dict(seed: int) -> None:
    rng = random.Random(seed)
    out, ref = Outstanding(), {}
    keys = [(i, b * BLOCK_SIZE) for i in range(4) for b in range(8)]
    for _ in range(500):
        key = rng.choice(keys)
        op = rng.randrange(5)
        if op == 0:  # ask (or ask again, replacing the length)
            length = rng.choice([1, BLOCK_SIZE - 1, BLOCK_SIZE, 3 * BLOCK_SIZE, 16 * BLOCK_SIZE])
            out[key] = ref[key] = length
        elif op == 1:
            assert out.pop(key) == ref.pop(key, None)
        elif op == 2 and key in ref:
            assert key in out
            del out[key]
            del ref[key]
        elif op == 3:
            assert out.get(key) == ref.get(key)
        elif rng.random() < 0.05:
            out.clear()
            ref.clear()
        assert out.blocks == resummed(ref)
        assert len(out) == len(ref) and bool(out) == bool(ref)
        assert sorted(out.items()) == sorted(ref.items())


@pytest.mark.parametrize("seed", range(10))
def test_count_survives_every_path_that_changes_requests(seed: int) -> None:
    rng = random.Random(seed)
    kit = Kit(pieces=40, piece_length=8 * BLOCK_SIZE, config=MemberConfig(big_block=4 * BLOCK_SIZE))
    roost_peer = {b"m": {}, b"roost_block": 4 * BLOCK_SIZE}  # merged requests
    remote = kit.connect(have=Bitfield.full(40), extended=roost_peer)
    other = kit.connect(have=Bitfield.full(40))
    remote.say(remote.wire.send_unchoke())
    conn = kit.member.conns[remote.cid]
    seen = set()
    merged = False
    for _ in range(300):
        if remote.cid not in kit.member.conns or kit.member.complete:
            break
        entries = conn.outstanding.items()
        op = rng.randrange(7)
        wire = remote.wire
        if op == 0 or not entries:
            kit.advance(0.5)  # a tick refills
            seen.add("fill")
            merged |= any(length > BLOCK_SIZE for _, length in conn.outstanding.items())
        else:
            (index, begin), length = rng.choice(entries)
            if op == 1:  # what we asked for
                remote.say(wire.send_piece(index, begin, kit.block(index, begin, length)))
                seen.add("piece")
            elif op == 2:  # a short answer: released, asked again elsewhere
                remote.say(wire.send_piece(index, begin, bytes(max(1, length - 1))))
                seen.add("short piece")
            elif op == 3:
                remote.say(wire.send_reject(index, begin, length))
                seen.add("reject")
            elif op == 4:  # the other peer delivers the first block first: endgame cancel
                other.say(other.wire.send_unchoke())
                seen.add("other")
            elif op == 5:
                remote.say(wire.send_choke() + wire.send_unchoke())
                seen.add("choke")
            else:
                kit.advance(SNUB_SECONDS + 1)
                seen.add("snub")
        kit.check()
        assert conn.outstanding.blocks == resummed(conn.outstanding.items())
        if remote.cid in kit.member.conns and conn.in_picker:
            # what we asked and what the picker booked are the same requests
            asked = {(i, b, n) for (i, b), n in conn.outstanding.items()}
            assert asked == set(kit.member.picker.requests_of(conn.id))
    assert {"fill", "piece", "short piece", "reject", "choke", "snub"} <= seen
    assert merged, "no merged (multi-block) request was exercised"


def test_a_fast_peer_is_asked_for_a_fraction_of_a_second_of_its_rate() -> None:
    # every host is asked for about what each host keeps in flight, so a piece
    # waits that long at every hop: a second of the rate made fleets slow
    kit = Kit(pieces=8)
    remote = kit.connect(have=Bitfield.full(8))
    conn = kit.member.conns[remote.cid]
    conn.floor = 16 * BLOCK_SIZE
    rate = 8 * 1024 * 1024  # bytes/s, measured
    conn.down.rate = rate
    in_flight = conn.pipeline_blocks() * BLOCK_SIZE
    assert rate * 0.1 <= in_flight <= rate * 0.3


def test_a_coarser_picker_block_asks_whole_blocks_and_at_least_one() -> None:
    """MemberConfig.picker_block (the simulator's coarsening): every request is
    one or more whole picker blocks, the pipeline is never empty when a block
    is bigger than the floor, and the payload still arrives and checks."""
    big = 4 * BLOCK_SIZE
    config = MemberConfig(big_block=big, picker_block=big)
    kit = Kit(pieces=6, piece_length=2 * big, config=config)
    remote = kit.connect(have=Bitfield.full(6), extended={b"m": {}, b"roost_block": big})
    remote.say(remote.wire.send_unchoke())
    conn = kit.member.conns[remote.cid]
    assert kit.member.picker.block_size == big
    for _ in range(50):
        if kit.member.complete:
            break
        asked = remote.requests()
        assert asked, "the pipeline ran empty"
        for req in asked:
            piece = kit.member.picker.piece_size(req.index)
            assert req.begin % big == 0 and req.length == min(big, piece - req.begin)
            remote.answer(req)
        kit.check()
        kit.advance(0.5)
    assert kit.member.complete
    # a floor below one block still asks one block
    conn.floor, conn.down.rate = BLOCK_SIZE, 0.0
    assert conn.pipeline_blocks() == 1


@pytest.mark.parametrize("picker_block", [BLOCK_SIZE // 2, 3 * BLOCK_SIZE // 2, 8 * BLOCK_SIZE])
def test_a_picker_block_must_be_whole_16k_blocks_within_big_block(picker_block: int) -> None:
    with pytest.raises(UsageError, match="picker_block"):
        Kit(config=MemberConfig(big_block=4 * BLOCK_SIZE, picker_block=picker_block))
