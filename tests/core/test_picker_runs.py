"""Requests as runs (roost.core.picker): a request is a run of blocks, booked at once.

The picker hands a roost peer runs of up to its big block (one wire request
each) and books the Piece that answers one with a few slice writes. These
tests check the runs themselves, what happens when a run meets blocks that
are not FREE, every way a run ends (answered, rejected, choked, cancelled in
endgame, failed hash), a property test of the picker's invariants with runs
of mixed sizes, and a member with a fake clock fed the bytes of a roost peer
(256 KiB requests) and of a plain one (16 KiB requests) at once.
"""

from __future__ import annotations

import random
from collections.abc import Hashable

from hypothesis import given, settings
from hypothesis import strategies as st

from roost.core.bitfield import Bitfield
from roost.core.member import MemberConfig
from roost.core.picker import FREE, RECEIVED, REQUESTED, PiecePicker
from roost.core.wire import BLOCK_SIZE, Block, Cancel, Request
from tests.core.member_kit import Kit

BS = BLOCK_SIZE


def picker(pieces: int = 2, blocks: int = 4, last: int | None = None, seed: int = 0,
           peers: tuple[str, ...] = ("a", "b", "c")) -> PiecePicker:
    plen = blocks * BS
    total = plen * (pieces - 1) + (plen if last is None else last)
    p = PiecePicker(pieces, plen, total, rng=random.Random(seed))
    for key in peers:
        p.add_peer(key, Bitfield.full(pieces))
    return p


def check_runs(p: PiecePicker) -> None:
    """Every request's blocks that are not RECEIVED are REQUESTED with its peer
    among their requesters; every REQUESTED block has a request covering it;
    the FREE and RECEIVED counts match the states."""
    covering: dict[tuple[int, int], set[Hashable]] = {}
    for key in list(p.peers()):
        for req in p.requests_of(key):
            first, stop = req.begin // BS, -(-(req.begin + req.length) // BS)
            assert req.begin % BS == 0 and 0 < req.length <= p.piece_size(req.index) - req.begin
            for j in range(first, stop):
                covering.setdefault((req.index, j), set()).add(key)
                state = p.block_state(req.index, j * BS)
                assert state in (REQUESTED, RECEIVED), (key, req, j)
                if state == REQUESTED:
                    assert key in p._partial[req.index].owners(j)
    for index, part in p._partial.items():
        assert part.free == part.state.count(FREE)
        assert part.received == part.state.count(RECEIVED)
        for j, state in enumerate(part.state):
            owners = part.owners(j)
            if state == REQUESTED:
                assert owners and set(owners) <= covering.get((index, j), set()), (index, j)
                assert len(owners) == len(set(owners))
            else:
                assert not owners, (index, j, state)
        assert (index in p._with_free) == (part.free > 0)


def test_a_run_is_one_request_and_its_answer_one_booking() -> None:
    p = picker(pieces=3, blocks=4, last=BS + 5)
    picked = p.pick("a", 100, run=4)
    assert sorted(picked) == [Block(0, 0, 4 * BS), Block(1, 0, 4 * BS), Block(2, 0, BS + 5)]
    assert p.requests_of("a") == set(picked)
    check_runs(p)
    new, complete, cancels = p.span_received("a", 2, 0, BS + 5)
    assert (new, complete, cancels) == ([(0, BS + 5)], True, [])
    assert Block(2, 0, BS + 5) not in p.requests_of("a")
    assert p.piece_state(2) == "verifying"
    check_runs(p)


def test_runs_are_capped_by_run_and_by_the_blocks_asked() -> None:
    p = picker(pieces=1, blocks=8)
    assert p.pick("a", 3, run=2) == [Block(0, 0, 2 * BS), Block(0, 2 * BS, BS)]
    assert p.pick("b", 100, run=16) == [Block(0, 3 * BS, 5 * BS)]
    check_runs(p)


def test_a_run_ends_at_a_block_that_is_not_free() -> None:
    p = picker(pieces=1, blocks=6)
    p.span_received("b", 0, 2 * BS, BS)  # unrequested, still needed: kept
    assert p.pick("c", 1) == [Block(0, 0, BS)]
    assert p.pick("a", 100, run=6) == [Block(0, BS, BS), Block(0, 3 * BS, 3 * BS)]
    check_runs(p)


def test_a_rejected_run_is_free_again_and_asked_whole() -> None:
    p = picker(pieces=1, blocks=4)
    (run,) = p.pick("a", 4, run=4)
    state = p.pick_state("b")
    p.request_rejected("a", run)
    assert p.pick_state("b") != state  # blocks went back to FREE
    assert all(p.block_state(0, j * BS) == FREE for j in range(4))
    assert p.pick("b", 4, run=4) == [run]
    check_runs(p)


def test_a_choke_frees_every_run_and_returns_them() -> None:
    p = picker(pieces=2, blocks=4)
    picked = p.pick("a", 8, run=4)
    assert p.cancel_peer_requests("a") == sorted(picked)
    assert p.requests_of("a") == set()
    assert sorted(p.pick("b", 8, run=4)) == sorted(picked)
    check_runs(p)


def test_an_endgame_duplicate_run_cancels_the_run_it_duplicates() -> None:
    p = picker(pieces=1, blocks=4)
    (run,) = p.pick("a", 4, run=4)
    assert p.in_endgame
    assert p.pick("b", 4, run=4) == [run]  # the same blocks, once more
    assert p.pick("c", 4, run=4) == []  # endgame_dup = 2
    check_runs(p)
    new, complete, cancels = p.span_received("b", 0, 0, 4 * BS)
    assert new == [(0, 4 * BS)] and complete
    assert cancels == [("a", run)]
    assert p.requests_of("a") == set() == p.requests_of("b")
    check_runs(p)


def test_a_block_delivered_inside_a_longer_run_leaves_the_run_to_finish() -> None:
    # a Cancel for the whole run would throw away what the peer is already
    # sending; the run stays asked, and only its late block is waste
    p = picker(pieces=1, blocks=4)
    (run,) = p.pick("a", 4, run=4)
    new, complete, cancels = p.span_received("b", 0, BS, BS)
    assert (new, complete, cancels) == ([(BS, 2 * BS)], False, [])
    assert p.requests_of("a") == {run}
    check_runs(p)
    new, complete, cancels = p.span_received("a", 0, 0, 4 * BS)
    assert new == [(0, BS), (2 * BS, 4 * BS)] and complete and cancels == []
    assert p.requests_of("a") == set()
    check_runs(p)


def test_the_last_block_of_a_longer_run_delivered_by_another_cancels_the_run() -> None:
    p = picker(pieces=1, blocks=2)
    (run,) = p.pick("a", 2, run=2)
    assert p.span_received("b", 0, 0, BS)[2] == []
    new, complete, cancels = p.span_received("c", 0, BS, BS)
    assert new == [(BS, 2 * BS)] and complete and cancels == [("a", run)]
    check_runs(p)


def test_a_failed_piece_frees_its_blocks_and_names_every_sender() -> None:
    p = picker(pieces=1, blocks=4)
    p.pick("a", 2, run=2)
    p.pick("b", 2, run=2)
    p.span_received("a", 0, 0, 2 * BS)
    assert p.span_received("b", 0, 2 * BS, 2 * BS)[1]
    assert p.piece_failed(0) == {"a", "b"}
    assert all(p.block_state(0, j * BS) == FREE for j in range(4))
    assert p.pick("c", 4, run=4) == [Block(0, 0, 4 * BS)]
    check_runs(p)


def test_have_by_other_means_cancels_whole_runs() -> None:
    p = picker(pieces=1, blocks=4)
    (run,) = p.pick("a", 4, run=4)
    assert p.have(0) == [("a", run)]
    assert p.requests_of("a") == set() and p.complete()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**16), st.lists(st.tuples(st.integers(0, 7), st.integers(0, 2),
                                                 st.integers(0, 63)), max_size=80))
def test_runs_keep_the_invariants_through_any_sequence(
    seed: int, ops: list[tuple[int, int, int]]
) -> None:
    p = picker(pieces=4, blocks=4, last=2 * BS + 7, seed=seed)
    keys = ["a", "b", "c"]
    runs = {"a": 4, "b": 1, "c": 2}  # a roost peer, a plain one, something between
    for op, who, arg in ops:
        key = keys[who]
        mine = sorted(p.requests_of(key)) if key in p.peers() else []
        if key not in p.peers():
            p.add_peer(key, Bitfield.full(4))
        elif op <= 1:
            p.pick(key, 1 + arg % 8, run=runs[key])
        elif op == 2 and mine:  # its answer to one of its requests
            req = mine[arg % len(mine)]
            _, complete, _ = p.span_received(key, *req)
            if complete:
                if arg % 3:
                    p.piece_verified(req.index)
                else:
                    p.piece_failed(req.index)
        elif op == 3:  # one block, unrequested (or answering someone else's)
            index = arg % 4
            nblocks = p.num_blocks(index)
            begin = (arg // 4) % nblocks * BS
            length = min(BS, p.piece_size(index) - begin)
            if p.piece_state(index) in ("fresh", "partial"):
                _, complete, _ = p.span_received(key, index, begin, length)
                if complete:
                    p.piece_verified(index)
        elif op == 4 and mine:
            p.request_rejected(key, mine[arg % len(mine)])
        elif op == 5:
            p.cancel_peer_requests(key)
        elif op == 6:
            p.remove_peer(key)
        elif op == 7 and not p.complete():
            missing = [i for i in range(4) if p.piece_state(i) in ("fresh", "partial")]
            if missing and arg % 5 == 0:
                p.have(missing[arg % len(missing)])
        check_runs(p)


def test_a_member_asks_a_roost_peer_in_runs_and_a_plain_peer_in_blocks() -> None:
    """Bytes in, fake clock: a roost peer (big blocks) gets one Request per
    piece, a plain peer 16 KiB Requests; both answer, one rejects a run and
    then chokes; the payload completes and checks."""
    piece = 16 * BS
    kit = Kit(pieces=12, piece_length=piece, config=MemberConfig(big_block=piece))
    fast = kit.connect(have=Bitfield.full(12), extended={b"m": {}, b"roost_block": piece})
    plain = kit.connect(have=Bitfield.full(12))
    fast.say(fast.wire.send_unchoke())
    plain.say(plain.wire.send_unchoke())
    asked_fast = list(fast.requests())
    assert asked_fast and all(r.begin == 0 and r.length == kit.info.piece_size(r.index)
                              for r in asked_fast)
    assert plain.requests() and all(r.length == BS for r in plain.requests())
    rejected = asked_fast[0]  # a run rejected: its blocks are asked again
    fast.messages.remove(rejected)
    fast.say(fast.wire.send_reject(rejected.index, rejected.begin, rejected.length))
    for _ in range(400):
        if kit.member.complete:
            break
        for remote in (fast, plain):
            for cancel in remote.of(Cancel):  # a Cancel takes its request back
                remote.messages.remove(cancel)
                remote.messages.remove(Request(cancel.index, cancel.begin, cancel.length))
            for req in remote.requests()[:3]:
                remote.answer(req)
        kit.check()
        kit.advance(0.5)
    assert kit.member.complete
    assert not kit.reports("hash_failed")
    # endgame duplicates answered before their Cancel (the same as with the
    # per-block picker, 1.1 pieces here)
    assert kit.member.wasted_bytes <= 2 * piece


def test_a_roost_peer_is_asked_whole_pieces_and_the_pipeline_rounds_down() -> None:
    """A pipeline of 2.5 pieces asks 2 whole pieces, not 2 and a half: a
    piece asked in parts arrives as two messages and a copy, and the
    requests after it stay out of step with the pieces."""
    piece = 16 * BS
    kit = Kit(pieces=12, piece_length=piece, config=MemberConfig(big_block=piece))
    remote = kit.connect(have=Bitfield.full(12), extended={b"m": {}, b"roost_block": piece})
    conn = kit.member.conns[remote.cid]
    conn.down.rate = 40 * BS / 0.25  # PIPELINE_SECONDS of it: 40 blocks
    remote.say(remote.wire.send_unchoke())
    size = kit.info.piece_size
    first = remote.requests()
    assert len(first) == 2 and all((r.begin, r.length) == (0, size(r.index)) for r in first)
    remote.answer(first[0])
    again = [r for r in remote.requests() if r not in first]
    assert len(again) == 1 and (again[0].begin, again[0].length) == (0, size(again[0].index))
    # less than a piece of room: asked only when nothing else is in flight
    conn.down.rate = 0.0
    conn.floor = 8 * BS
    kit.member._pipeline_floor = 8 * BS
    for req in remote.requests():
        remote.answer(req)
    assert [r.length for r in remote.requests()] == [8 * BS]
