"""Piece picker, with states built from strings such as availability "1110"."""

from __future__ import annotations

import random
from collections.abc import Hashable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from roost.core.bitfield import Bitfield
from roost.core.picker import FREE, RECEIVED, REQUESTED, PiecePicker
from roost.core.wire import Block
from roost.errors import RemoteProtocolError, RoostError

BS = 4  # tiny blocks keep the arithmetic readable


def bits(s: str) -> Bitfield:
    bf = Bitfield(len(s))
    for i, c in enumerate(s):
        if c == "1":
            bf.set(i)
    return bf


def make(
    have: str,
    peers: dict[Hashable, str] | None = None,
    *,
    blocks: int = 1,
    last: int | None = None,
    seed: int = 1,
    random_first: int = 0,
    endgame_dup: int = 2,
) -> PiecePicker:
    """A picker over len(have) pieces of `blocks` blocks of BS bytes; the last
    piece has `last` bytes. Peers are given as bitfield strings."""
    n = len(have)
    plen = blocks * BS
    total = plen * (n - 1) + (plen if last is None else last)
    p = PiecePicker(
        n,
        plen,
        total,
        block_size=BS,
        have=bits(have),
        rng=random.Random(seed),
        random_first=random_first,
        endgame_dup=endgame_dup,
    )
    for key, s in (peers or {}).items():
        p.add_peer(key, bits(s))
    return p


def pieces(reqs: list[Block]) -> list[int]:
    return [r.index for r in reqs]


def finish(p: PiecePicker, key: Hashable, reqs: list[Block]) -> None:
    for r in reqs:
        out = p.block_received(key, r.index, r.begin, r.length)
        if out.piece_complete:
            p.piece_verified(r.index)


def test_availability_from_strings() -> None:
    p = make("0000", {"a": "1100", "b": "0110", "s": "1111"})
    assert [p.availability(i) for i in range(4)] == [2, 3, 2, 1]
    p.peer_has("a", 3)
    assert p.availability(3) == 2
    p.remove_peer("s")
    assert [p.availability(i) for i in range(4)] == [1, 2, 1, 1]
    p.remove_peer("a")
    assert [p.availability(i) for i in range(4)] == [0, 1, 1, 0]


def test_peer_completing_its_bitfield_becomes_a_seed() -> None:
    p = make("000", {"a": "110", "b": "100"})
    p.peer_has("a", 2)
    assert [p.availability(i) for i in range(3)] == [2, 1, 1]
    p.remove_peer("a")
    assert [p.availability(i) for i in range(3)] == [1, 0, 0]


def test_rarest_first() -> None:
    p = make("0000", {"s": "1111", "b": "1110", "c": "0110"})
    # availability 2 3 3 1: piece 3 first, then 0, then 1 and 2 in either order
    got = pieces(p.pick("s", 4))
    assert got[:2] == [3, 0]
    assert sorted(got[2:]) == [1, 2]


def test_rarest_only_among_what_the_peer_has() -> None:
    p = make("0000", {"b": "1110", "c": "0110", "d": "0011"})
    assert pieces(p.pick("b", 1)) == [0]  # availability 1 2 3 1; b lacks 3


def test_we_never_pick_what_we_have_or_what_the_peer_lacks() -> None:
    p = make("1010", {"a": "1110"})
    assert pieces(p.pick("a", 10)) == [1]
    assert p.pick("a", 10) == []  # nothing else: not endgame-duplicable either


def test_random_first_spreads_the_first_pieces() -> None:
    firsts = set()
    for seed in range(20):
        p = make("0" * 50, {"s": "1" * 50}, seed=seed, random_first=4)
        firsts.add(p.pick("s", 1)[0].index)
    assert len(firsts) > 5
    # after random_first pieces, rarest first takes over
    p = make("1111" + "0" * 6, {"s": "1" * 10, "b": "0000000001"}, random_first=4)
    assert pieces(p.pick("s", 1)) != [9]  # 9 is the most common piece


def test_partial_pieces_first_and_own_first() -> None:
    p = make("000", {"a": "111", "b": "111"}, blocks=4)
    first = p.pick("a", 2)
    assert len({r.index for r in first}) == 1
    mine = first[0].index
    # b finishes a's partial piece before starting another
    got = p.pick("b", 3)
    assert pieces(got)[:2] == [mine, mine] and got[2].index != mine
    other = got[2].index
    # a prefers the piece it works on... which has no free block; then b's partial
    assert pieces(p.pick("a", 1)) == [other]
    # blocks are handed out in order and never twice
    assert {(r.index, r.begin) for r in first} == {(mine, 0), (mine, 4)}


def test_allowed_restricts() -> None:
    p = make("0000", {"a": "1111"})
    assert set(pieces(p.pick("a", 5, allowed={2}))) == {2}
    assert p.pick("a", 5, allowed={2}) == []
    assert p.pick("a", 1, allowed=set()) == []


def test_geometry_of_last_piece_and_block() -> None:
    p = make("00", {"a": "11"}, blocks=3, last=5)  # last piece: blocks of 4 and 1
    reqs = p.pick("a", 10)
    assert sorted((r.index, r.begin, r.length) for r in reqs) == [
        (0, 0, 4), (0, 4, 4), (0, 8, 4), (1, 0, 4), (1, 4, 1),
    ]  # fmt: skip
    assert p.bytes_left() == 17
    finish(p, "a", reqs)
    assert p.complete() and p.bytes_left() == 0 and p.missing_count() == 0


def test_bad_block_geometry_is_remote_error() -> None:
    p = make("00", {"a": "11"}, blocks=3, last=5)
    for index, begin, length in [(0, 2, 4), (0, 0, 3), (1, 4, 4), (1, 8, 1), (5, 0, 4)]:
        with pytest.raises(RemoteProtocolError):
            p.block_received("a", index, begin, length)


def test_receive_verify_and_duplicates() -> None:
    p = make("00", {"a": "11"}, blocks=2)
    reqs = p.pick("a", 2)
    assert all(r.index == reqs[0].index for r in reqs)
    i = reqs[0].index
    o1 = p.block_received("a", i, 0, BS)
    assert o1.new and not o1.piece_complete
    assert not p.block_received("a", i, 0, BS).new  # duplicate
    o2 = p.block_received("a", i, BS, BS)
    assert o2.new and o2.piece_complete
    assert p.piece_state(i) == "verifying"
    assert not p.block_received("a", i, 0, BS).new
    p.piece_verified(i)
    assert p.piece_state(i) == "have" and p.missing_count() == 1
    with pytest.raises(RoostError):
        p.piece_verified(i)


def test_piece_failed_returns_senders_and_frees_blocks() -> None:
    p = make("0", {"a": "1", "b": "1", "c": "1"}, blocks=2)
    ra = p.pick("a", 1)
    rb = p.pick("b", 1)
    finish(p, "a", ra)
    out = p.block_received("b", rb[0].index, rb[0].begin, rb[0].length)
    assert out.piece_complete
    assert p.piece_failed(0) == {"a", "b"}
    assert p.block_state(0, 0) == FREE and p.block_state(0, BS) == FREE
    assert len(p.pick("c", 5)) == 2


def test_cancel_peer_requests_and_reject_free_blocks() -> None:
    p = make("00", {"a": "11", "b": "11"}, blocks=2)
    reqs = p.pick("a", 3)
    assert p.requests_of("a") == set(reqs)
    p.request_rejected("a", reqs[0])
    assert p.block_state(reqs[0].index, reqs[0].begin) == FREE
    assert set(p.cancel_peer_requests("a")) == set(reqs[1:])
    assert p.requests_of("a") == set()
    assert all(p.block_state(r.index, r.begin) == FREE for r in reqs)
    assert len(p.pick("b", 10)) == 4


def test_endgame_duplicates_and_cancels() -> None:
    p = make("0", {"a": "1", "b": "1", "c": "1"}, blocks=2, endgame_dup=2)
    ra = p.pick("a", 5)
    assert len(ra) == 2
    assert p.in_endgame
    assert p.pick("a", 5) == []  # never its own blocks twice
    rb = p.pick("b", 5)
    assert set(rb) == set(ra)  # duplicates from another peer
    assert p.pick("c", 5) == []  # duplicate cap reached
    r = rb[0]
    out = p.block_received("b", r.index, r.begin, r.length)
    assert out.new and out.cancels == [("a", r)]
    assert r not in p.requests_of("a")
    # a chokes us: its remaining block stays requested by b
    p.cancel_peer_requests("a")
    r2 = ra[1] if ra[1] != r else ra[0]
    assert p.block_state(r2.index, r2.begin) == REQUESTED
    p.cancel_peer_requests("b")
    assert p.block_state(r2.index, r2.begin) == FREE
    assert p.block_state(r.index, r.begin) == RECEIVED


def test_endgame_duplicates_go_to_idle_peers_one_piece_at_a_time() -> None:
    """A duplicate is likely sent twice (it is on the wire before the Cancel):
    only a peer with nothing else of ours to fetch gets one, a piece per pick."""
    p = make("000", {"a": "111", "b": "111", "c": "111"}, blocks=2)
    ra = p.pick("a", 10)
    assert len(ra) == 6 and p.in_endgame
    rb = p.pick("b", 10)
    assert len(rb) == 2 and len(set(pieces(rb))) == 1  # one piece's blocks
    assert p.pick("b", 10) == []  # busy with its duplicates: no more
    rc = p.pick("c", 10)
    assert len(rc) == 2 and set(pieces(rc)).isdisjoint(pieces(rb))
    for r in rb:  # b delivers: idle again, it may take the last piece
        p.block_received("b", r.index, r.begin, r.length)
    rb2 = p.pick("b", 10)
    assert len(rb2) == 2 and set(pieces(rb2)).isdisjoint(pieces(rb) + pieces(rc))


def test_unrequested_block_accepted_when_needed() -> None:
    p = make("00", {"a": "11", "b": "11"}, blocks=2)
    out = p.block_received("b", 1, 0, BS)
    assert out.new and p.piece_state(1) == "partial"
    assert [(r.index, r.begin) for r in p.pick("a", 1)] == [(1, BS)]


def test_is_interesting() -> None:
    p = make("10", {"a": "10", "b": "01", "s": "11"})
    assert not p.is_interesting("a")
    assert p.is_interesting("b") and p.is_interesting("s")
    finish(p, "b", p.pick("b", 1))
    assert not p.is_interesting("b") and not p.is_interesting("s")
    assert p.complete()


def test_have_cancels_outstanding() -> None:
    p = make("00", {"a": "11"}, blocks=2)
    reqs = p.pick("a", 4)
    cancels = p.have(reqs[0].index)
    assert {r for _, r in cancels} == {r for r in reqs if r.index == reqs[0].index}
    assert p.piece_state(reqs[0].index) == "have"


def test_prefer() -> None:
    p = make("0000", {"s": "1111", "b": "1110"})
    p.prefer(1)
    assert pieces(p.pick("s", 1)) == [1]


def test_peer_exhaustion_is_reset_by_have() -> None:
    p = make("000", {"a": "100", "b": "111"})
    assert pieces(p.pick("a", 1)) == [0]
    assert p.pick("a", 1) == []
    p.peer_has("a", 2)
    assert pieces(p.pick("a", 1)) == [2]


# ------------------------------------------------------------ simulation / properties


def check_invariants(p: PiecePicker) -> None:
    """Cross-check the internal structures against a brute-force view."""
    owners_seen: dict[Block, set[Hashable]] = {}
    for key in list(p.peers()):
        for r in p.requests_of(key):
            owners_seen.setdefault(r, set()).add(key)
            assert p.block_state(r.index, r.begin) in (REQUESTED, RECEIVED)
    for i in range(p.num_pieces):
        state = p.piece_state(i)
        for j in range(p.num_blocks(i)):
            r = p.block(i, j)
            s = p.block_state(i, r.begin)
            if s == REQUESTED:
                assert r in owners_seen, (i, j)
            if s == FREE:
                assert r not in owners_seen
        fresh = state == "fresh"
        in_bucket = [i in b for b in p._buckets]
        assert any(in_bucket) == fresh
        if fresh:
            assert in_bucket.index(True) == p._avail[i]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 12), st.integers(1, 4), st.integers(1, 6))
def test_random_swarm_downloads_everything(seed: int, n: int, blocks: int, npeers: int) -> None:
    rng = random.Random(seed)
    p = PiecePicker(n, blocks * BS, n * blocks * BS - rng.randrange(BS), block_size=BS, rng=rng)
    peers = {k: "".join(rng.choice("01") for _ in range(n)) for k in range(npeers)}
    peers[npeers] = "1" * n  # one seed so the download can finish
    for k, s in peers.items():
        p.add_peer(k, bits(s))
    outstanding: dict[int, list[Block]] = {k: [] for k in peers}
    received_new: set[tuple[int, int]] = set()
    bad_piece = rng.randrange(n)
    for _step in range(10_000):
        if p.complete():
            break
        k = rng.choice(list(peers))
        action = rng.random()
        if action < 0.5:
            outstanding[k] += p.pick(k, rng.randint(1, 4))
        elif action < 0.9 and outstanding[k]:
            r = outstanding[k].pop(rng.randrange(len(outstanding[k])))
            if r not in p.requests_of(k):
                continue  # cancelled (endgame) or freed
            out = p.block_received(k, r.index, r.begin, r.length)
            if out.new:
                assert (r.index, r.begin) not in received_new
                received_new.add((r.index, r.begin))
            for other, c in out.cancels:
                assert c == r and other != k
            if out.piece_complete:
                if r.index == bad_piece:
                    bad_piece = -1
                    assert k in p.piece_failed(r.index)
                    received_new = {b for b in received_new if b[0] != r.index}
                else:
                    p.piece_verified(r.index)
        elif action < 0.95:
            p.cancel_peer_requests(k)
            outstanding[k] = []
        else:
            i = rng.randrange(n)
            p.peer_has(k, i)
        check_invariants(p)
    assert p.complete(), "the swarm with a seed must finish"
    assert p.bytes_left() == 0


def test_bigger_blocks_fixed_per_picker() -> None:
    p = PiecePicker(2, 64 * 1024, 100 * 1024, block_size=32 * 1024)
    p.add_peer_have_all("s")
    reqs = p.pick("s", 10)
    assert sorted((r.index, r.begin, r.length) for r in reqs) == [
        (0, 0, 32768), (0, 32768, 32768), (1, 0, 32768), (1, 32768, 4096),
    ]  # fmt: skip


def test_large_torrent_completes_in_bounded_rounds() -> None:
    """256 MiB in 16 KiB pieces (16k pieces) with 64 peers: a full simulated download.
    Each round every peer delivers two blocks, so 16k pieces need at least 128 rounds;
    a picker that stalls or re-asks needlessly runs past the bound. (Speed is the
    benchmarks' business, not a wall-clock assertion here.)"""
    n = 16384
    rng = random.Random(7)
    p = PiecePicker(n, 16384, n * 16384, rng=rng)
    for k in range(64):
        bf = Bitfield(n)
        for i in rng.sample(range(n), n // 2):
            bf.set(i)
        p.add_peer(k, bf)
    queues: dict[int, list[Block]] = {k: p.pick(k, 8) for k in range(64)}
    rounds = 0
    while not p.complete() and rounds < 160:
        rounds += 1
        for k in range(64):
            for r in queues[k][:2]:
                out = p.block_received(k, r.index, r.begin, r.length)
                if out.piece_complete:
                    p.piece_verified(r.index)
            queues[k] = [r for r in queues[k][2:] if r in p.requests_of(k)]
            queues[k] += p.pick(k, 8 - len(queues[k]))
    assert p.complete(), f"{rounds} rounds"
    assert rounds >= n // 128


def test_own_partial_piece_before_older_partials() -> None:
    p = make("00", {"a": "11", "b": "10"}, blocks=4)
    assert [(r.index, r.begin) for r in p.pick("b", 1)] == [(0, 0)]  # piece 0 started first
    assert [(r.index, r.begin) for r in p.pick("a", 1, allowed={1})] == [(1, 0)]
    assert [(r.index, r.begin) for r in p.pick("a", 1)] == [(1, BS)]  # its own piece first
    assert [(r.index, r.begin) for r in p.pick("a", 4)][:3] == [(1, 2 * BS), (1, 3 * BS), (0, BS)]


def test_rarest_tie_break_differs_between_hosts() -> None:
    chosen = {make("0" * 40, {"s": "1" * 40}, seed=s).pick("s", 1)[0].index for s in range(20)}
    assert len(chosen) > 5


def from_availability(avail: str, have: str | None = None) -> PiecePicker:
    """A picker whose piece i is held by int(avail[i]) peers named 0, 1, ...
    (peer j has piece i when j < avail[i])."""
    n = len(avail)
    counts = [int(c) for c in avail]
    peers: dict[Hashable, str] = {
        j: "".join("1" if j < c else "0" for c in counts) for j in range(max(counts))
    }
    return make(have or "0" * n, peers)


def test_pickers_from_availability_strings() -> None:
    p = from_availability("1110")
    assert [p.availability(i) for i in range(4)] == [1, 1, 1, 0]
    assert sorted(pieces(p.pick(0, 10))) == [0, 1, 2]
    p = from_availability("3121", have="0100")
    p.add_peer_have_all("s")
    # s can serve anything: rarest missing first (3 held by 1 peer, then 2, then 0)
    assert pieces(p.pick("s", 3)) == [3, 2, 0]
    assert p.in_endgame  # every missing block is requested
    assert pieces(p.pick(2, 3)) == [0]  # peer 2 has only piece 0: an endgame duplicate


def test_a_piece_refused_by_an_unchoking_peer_is_asked_of_others() -> None:
    # piece 0 is partial; "origin" refuses it (its super-seed offer moved on).
    # Partial-first picking would ask "origin" for it again forever.
    p = make("000", {"origin": "110", "b": "000"}, blocks=2)
    first = p.pick("origin", 1)
    assert len(first) == 1
    refused = first[0].index
    p.request_rejected("origin", first[0])
    p.peer_lacks("origin", refused)
    assert p.availability(refused) == 0
    assert refused not in pieces(p.pick("origin", 8))
    assert not p.is_interesting("b")
    p.peer_has("b", refused)
    assert pieces(p.pick("b", 8)) == [refused, refused]
    # a Have from "origin" again makes it a source once more
    p.peer_has("origin", refused)
    assert p.availability(refused) == 2


def test_peer_lacks_keeps_seeds_and_counts_needed() -> None:
    p = make("100", {"a": "110"}, blocks=1)
    p.add_peer_have_all("seed")
    p.peer_lacks("seed", 1)  # a seed refusing is busy, not missing the piece
    assert p.availability(1) == 2
    p.peer_lacks("a", 1)
    assert not p.is_interesting("a") and p.availability(1) == 1
    p.peer_lacks("a", 1)  # twice is harmless
    assert p.availability(1) == 1


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2), st.integers(0, 3)), max_size=60))
def test_pick_state_only_repeats_while_a_pick_would_come_back_short(
    ops: list[tuple[int, int, int]],
) -> None:
    # peers skip a pick while pick_state is what it was when their last pick
    # fell short; that is only sound if such a pick could not find anything
    p = make("0000", {"a": "1100", "b": "0110", "c": "0000"}, blocks=2)
    keys = ["a", "b", "c"]
    dry: dict[str, tuple[int, int] | None] = {}
    outstanding: list[tuple[str, Block]] = []
    for op, who, arg in ops:
        key = keys[who]
        if op == 0:
            p.peer_has(key, arg)
        elif op in (1, 2):
            state = p.pick_state(key)
            picks = p.pick(key, 1 + arg % 3)
            if state is not None and dry.get(key) == state:
                assert picks == [], f"{key} skipped a pick that would have found {picks}"
            dry[key] = state if len(picks) < 1 + arg % 3 else None
            outstanding += [(key, r) for r in picks]
        elif op == 3 and outstanding:
            owner, req = outstanding.pop(arg % len(outstanding))
            if (
                req in p.requests_of(owner)
                and p.block_received(owner, req.index, req.begin, req.length).piece_complete
            ):
                if arg % 2:
                    p.piece_verified(req.index)
                else:
                    p.piece_failed(req.index)
        elif op == 4 and outstanding:
            owner, req = outstanding.pop(arg % len(outstanding))
            if req in p.requests_of(owner):
                p.request_rejected(owner, req)
        elif op == 5:
            p.remove_peer(key)
            p.add_peer(key, bits("1001" if arg % 2 else "0111"))
            outstanding = [(k, r) for k, r in outstanding if k != key]


def test_preloaded_blocks_are_never_requested_and_the_piece_completes_without_them() -> None:
    p = PiecePicker(2, 4 * 16384, 8 * 16384)
    p.add_peer("a", Bitfield.full(2))
    p.preload(0, [0, 2])
    assert p.block_state(0, 0) == RECEIVED and p.block_state(0, 2 * 16384) == RECEIVED
    picked = p.pick("a", 100)
    assert {(r.index, r.begin) for r in picked if r.index == 0} == {(0, 16384), (0, 3 * 16384)}
    assert not p.block_received("a", 0, 16384, 16384).piece_complete
    assert p.block_received("a", 0, 3 * 16384, 16384).piece_complete
    p.piece_failed(0)  # a bad hash: every block is fetched again, the preloaded ones too
    assert p.block_state(0, 0) == FREE


def test_a_reserved_piece_is_never_requested_nor_duplicated_until_had() -> None:
    p = PiecePicker(3, 4 * 16384, 12 * 16384)
    p.add_peer("a", Bitfield.full(3))
    p.add_peer("b", Bitfield.full(3))
    p.reserve(1)
    picked = p.pick("a", 100) + p.pick("b", 100)  # b gets endgame duplicates at most
    assert picked and all(r.index != 1 for r in picked)
    with pytest.raises(RoostError):
        p.reserve(1)  # no longer fresh
    assert p.have(1) == [] and not p.complete()
    for r in [r for r in p.requests_of("a")]:
        if p.block_received("a", r.index, r.begin, r.length).piece_complete:
            p.piece_verified(r.index)
    assert p.complete()


def test_preload_refuses_what_does_not_fit() -> None:
    p = PiecePicker(2, 4 * 16384, 8 * 16384)
    with pytest.raises(RoostError):
        p.preload(0, [0, 1, 2, 3])  # the whole piece: it is held, not partly
    with pytest.raises(RoostError):
        p.preload(0, [4])
    p.preload(1, [1])
    with pytest.raises(RoostError):
        p.preload(1, [2])  # no longer fresh


@settings(max_examples=200, deadline=None)
@example(seed=0, ops=[(0, 0, 0, 1), (0, 2, 0, 3), (0, 0, 0, 1), (0, 0, 0, 1), (0, 0, 0, 1),
                      (0, 0, 0, 1), (0, 0, 0, 2), (0, 1, 0, 2), (1, 0, 43, 3)])
@given(st.integers(0, 2**32), st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3),
                                                 st.integers(0, 99), st.integers(1, 4)),
                                       max_size=40))
def test_a_span_is_block_received_for_each_of_its_blocks(
    seed: int, ops: list[tuple[int, int, int, int]]
) -> None:
    # twin pickers, the same picks; one takes each span block by block, the other at once
    one, span = (make("00000", {k: "11111" for k in "abcd"}, blocks=4, last=9, seed=seed)
                 for _ in range(2))
    keys = list("abcd")
    for op, who, at, count in ops:
        key = keys[who]
        if op == 0:
            assert one.pick(key, count * 2) == span.pick(key, count * 2)
            continue
        index = at % 5
        size = one.piece_size(index)
        nblocks = -(-size // BS)
        first = (at // 5) % nblocks
        begin = first * BS
        length = min(count * BS, size - begin)
        outcomes = [one.block_received(key, index, b, min(BS, size - b))
                    for b in range(begin, begin + length, BS)]
        new, complete, cancels = span.span_received(key, index, begin, length)
        assert [b for start, stop in new for b in range(start, stop, BS)] == [
            b for b, o in zip(range(begin, begin + length, BS), outcomes, strict=True) if o.new]
        assert complete == any(o.piece_complete for o in outcomes)
        # the same cancels, in the order of the blocks; two peers' cancels of one block
        # are sent to different peers, so their order between them is free
        by_block = [c for o in outcomes for c in o.cancels]
        assert [c[1].begin for c in cancels] == sorted(c[1].begin for c in cancels)
        assert sorted(cancels, key=repr) == sorted(by_block, key=repr)
        if complete and op == 2:
            one.piece_verified(index)
            span.piece_verified(index)
        for i in range(5):
            assert one.piece_state(i) == span.piece_state(i)
        for k in keys:
            assert one.requests_of(k) == span.requests_of(k)
        assert one.in_endgame == span.in_endgame


def test_a_span_that_does_not_fit_the_layout_is_refused() -> None:
    p = make("00", {"a": "11"}, blocks=4, last=9)
    with pytest.raises(RemoteProtocolError):
        p.span_received("a", 0, 2, 4)  # not on a block boundary
    with pytest.raises(RemoteProtocolError):
        p.span_received("a", 0, 0, 6)  # ends inside a block, before the piece's end
    with pytest.raises(RemoteProtocolError):
        p.span_received("a", 1, 8, 4)  # past the short last piece's end (9 bytes)
    assert p.span_received("a", 1, 8, 1) == ([(8, 9)], False, [])


def test_a_have_no_pick_can_take_leaves_the_peers_pick_state_alone() -> None:
    # most Haves in a swarm are of pieces we have or fetch every block of from
    # others already: they count for availability, but must not make the
    # peer pick again (a pick that comes back empty, on every Have batch)
    p = make("1000", {"a": "0000", "b": "0110"}, blocks=2)
    assert len(p.pick("b", 2)) == 2  # every block of one piece b has
    taken = next(iter(p.requests_of("b"))).index
    state = p.pick_state("a")
    p.peer_has("a", 0)  # we have it
    p.peer_has("a", taken)  # every block of it is requested from b
    assert p.pick_state("a") == state
    assert not p.peer_has_all_of("a", [0, taken])  # again: nothing new either
    assert p.availability(taken) == 2 and p.is_interesting("a")
    fresh = 3 - taken  # the other piece b has: not started
    assert p.peer_has_all_of("a", [fresh])
    assert p.pick_state("a") != state
    assert p.pick("a", 2) != []


def test_a_batch_of_haves_counts_as_the_same_haves_one_by_one() -> None:
    one, batch = make("0000", {"a": "0000"}, blocks=2), make("0000", {"a": "0000"}, blocks=2)
    for index in (2, 0, 2, 1):
        one.peer_has("a", index)
    batch.peer_has_all_of("a", [2, 0, 2, 1])
    for p in (one, batch):
        assert [p.availability(i) for i in range(4)] == [1, 1, 1, 0]
    batch.peer_has_all_of("a", [3])  # every piece now: a seed, counted once
    assert [batch.availability(i) for i in range(4)] == [1, 1, 1, 1]
    assert batch.pick("a", 8) != []
