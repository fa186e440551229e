"""The swarm member's policy, driven with a fake clock: bytes and events in,
actions out, no sockets (see member_kit)."""

from __future__ import annotations

import itertools

from roost.core.actions import (
    Announce,
    AnnounceAnswered,
    Close,
    Connect,
    Connected,
    Flush,
    Flushed,
    HeldLocally,
    SendBlock,
    WantWritable,
    WriteReady,
)
from roost.core.bitfield import Bitfield
from roost.core.conn import (
    MIN_PIPELINE_BYTES,
    REFUSAL_SECONDS,
    RESERVED_KEY,
    SMALL_PIPELINE_BYTES,
    pipeline_floor,
)
from roost.core.member import (
    HANDSHAKE_TIMEOUT,
    RECHOKE_TICKS,
    SNUB_SECONDS,
    TICK,
    MemberConfig,
)
from roost.core.offers import (
    OFFER_BYTES,
    OFFERS_PER_PEER,
    STALE_OFFER_SECONDS,
    TOTAL_OFFER_BYTES,
)
from roost.core.uploads import WRITE_WINDOW
from roost.core.wire import (
    BLOCK_SIZE,
    Cancel,
    Choke,
    ExtendedHandshake,
    Have,
    HaveNone,
    Interested,
    NotInterested,
    Piece,
    RejectRequest,
    Request,
    Unchoke,
)
from tests.core.member_kit import Kit, Remote


def unchoked(remote: Remote) -> bool:
    """Whether the last choke message the remote got was an Unchoke."""
    last = [m for m in remote.messages if isinstance(m, (Choke, Unchoke))]
    return bool(last) and isinstance(last[-1], Unchoke)


# ---- choking ----


def test_interest_fills_free_slots_at_once_and_the_rechoke_trims_to_the_slots() -> None:
    kit = Kit(pieces=40, complete=True, config=MemberConfig(unchoke_slots=2))
    remotes = [kit.connect(interested=True) for _ in range(5)]
    # a free slot is filled at once (up to slots + 1), without waiting for a round
    assert [unchoked(r) for r in remotes] == [True, True, True, False, False]
    kit.advance(TICK)  # the first tick is a rechoke round
    assert sum(unchoked(r) for r in remotes) == 2
    # a choked peer's request is refused (Reject, it speaks BEP 6), unless the
    # piece is one of its allowed-fast set
    choked = next(r for r in remotes if not unchoked(r))
    fast = kit.member.conns[choked.cid].fast_for_it
    assert len(fast) == 8
    slow = min(set(range(40)) - fast)
    choked.say(choked.wire.send_request(slow, 0, BLOCK_SIZE))
    choked.say(choked.wire.send_request(min(fast), 0, BLOCK_SIZE))
    assert choked.of(RejectRequest) == [RejectRequest(slow, 0, BLOCK_SIZE)]
    assert [(p.index, p.begin) for p in choked.of(Piece)] == [(min(fast), 0)]


def test_a_closed_unchoked_peer_frees_its_slot_for_another() -> None:
    kit = Kit(complete=True, config=MemberConfig(unchoke_slots=1))
    remotes = [kit.connect(interested=True) for _ in range(3)]
    kit.advance(TICK)
    # one regular slot; with 3 candidates > 1 slot and a single slot, no optimistic one
    assert sum(unchoked(r) for r in remotes) == 1
    holder = next(r for r in remotes if unchoked(r))
    kit.hang_up(holder)
    others = [r for r in remotes if r is not holder]
    assert sum(unchoked(r) for r in others) == 1


def test_not_interested_gives_the_slot_back() -> None:
    kit = Kit(complete=True, config=MemberConfig(unchoke_slots=1))
    a = kit.connect(interested=True)
    b = kit.connect(interested=True)
    kit.advance(TICK)
    first = a if unchoked(a) else b
    other = b if first is a else a
    first.say(first.wire.send_not_interested())
    assert not unchoked(first) and unchoked(other)


def test_rechoke_rounds_come_every_rechoke_ticks() -> None:
    kit = Kit(complete=True, config=MemberConfig(unchoke_slots=2))
    remotes = [kit.connect(interested=True) for _ in range(6)]
    kit.advance(TICK)
    chokes = sum(len(r.of(Choke)) for r in remotes)
    kit.advance(TICK * (RECHOKE_TICKS - 1) - 0.01)  # no round in between
    assert sum(len(r.of(Choke)) for r in remotes) == chokes
    kit.advance(0.02)
    assert sum(unchoked(r) for r in remotes) == 2


def test_seeding_serves_requests_in_windows_and_waits_for_room() -> None:
    kit = Kit(pieces=40, piece_length=BLOCK_SIZE, complete=True)
    remote = kit.connect(interested=True)
    assert unchoked(remote)
    whole = WRITE_WINDOW // BLOCK_SIZE  # pieces that fill one window
    data = b"".join(remote.wire.send_request(i, 0, BLOCK_SIZE) for i in range(whole))
    data += remote.wire.send_request(whole, 0, BLOCK_SIZE)
    actions = remote.say(data)
    sent = [a for a in actions if isinstance(a, SendBlock)]
    assert whole >= 2
    assert sum(a.length for a in sent) == WRITE_WINDOW  # the rest waits for room
    assert actions[-1] == WantWritable(remote.cid)
    actions = kit.run(kit.member.event(WriteReady(remote.cid), kit.now))
    spans = [(a.index, a.length) for a in actions if isinstance(a, SendBlock)]
    assert spans == [(whole, BLOCK_SIZE)]
    assert [p.index for p in remote.of(Piece)] == list(range(whole + 1))


# ---- downloading: pipelining, endgame, snubbing, rejects ----


def test_endgame_asks_a_second_peer_and_cancels_when_the_first_delivers() -> None:
    kit = Kit(pieces=2)
    a = kit.connect(have=Bitfield.full(2))
    a.say(a.wire.send_unchoke())
    asked_a = a.requests()
    assert len(asked_a) == 8  # every block of the payload, from the first peer
    b = kit.connect(have=Bitfield.full(2))
    b.say(b.wire.send_unchoke())
    asked_b = b.requests()
    assert asked_b
    assert {(r.index, r.begin) for r in asked_b} <= {(r.index, r.begin) for r in asked_a}
    dup = asked_b[0]
    same = next(r for r in asked_a if (r.index, r.begin) == (dup.index, dup.begin))
    a.answer(same)
    assert Cancel(dup.index, dup.begin, dup.length) in b.of(Cancel)
    late = b.answer(dup)  # it was already on its way: wasted, not written twice
    assert not late and kit.member.wasted_bytes == dup.length


def test_many_peers_serving_us_are_each_asked_for_less() -> None:
    """An uploader serves each of its k peers at R/k, so every byte we queue at
    it is a wait of k/R for the next piece at that hop: with many sources the
    floor per peer shrinks (their floors together ~4 MiB), with few it stays."""
    assert pipeline_floor(1) == pipeline_floor(8) == MIN_PIPELINE_BYTES
    assert pipeline_floor(16) == MIN_PIPELINE_BYTES // 2
    assert pipeline_floor(60) == pipeline_floor(10_000) == SMALL_PIPELINE_BYTES
    kit = Kit(pieces=400)  # 64 KiB pieces, 16 KiB requests (no big blocks)
    seeds = [kit.connect(have=Bitfield.full(400)) for _ in range(40)]
    asked = []
    for seed in seeds:
        seed.say(seed.wire.send_unchoke())
        asked.append(sum(r.length for r in seed.requests()))
    assert asked[0] == MIN_PIPELINE_BYTES  # alone, as before
    assert asked[-1] == SMALL_PIPELINE_BYTES  # the 40th source
    for seed in seeds[4:]:  # most choke us: the floor grows back
        seed.say(seed.wire.send_choke())
    first = seeds[0]
    for req in first.requests():
        first.answer(req)
    assert sum(r.length for r in first.requests()) == MIN_PIPELINE_BYTES


def test_a_peer_that_sends_nothing_is_snubbed_and_its_requests_go_elsewhere() -> None:
    kit = Kit(pieces=8)
    slow = kit.connect(have=Bitfield.full(8))
    slow.say(slow.wire.send_unchoke())
    asked = slow.requests()
    assert len(asked) == 32  # every block of the payload
    kit.advance(SNUB_SECONDS + 2 * TICK)
    cancels = slow.of(Cancel)
    assert len(cancels) == len(asked), "a snubbed peer's requests are cancelled"
    conn = kit.member.conns[slow.cid]
    assert conn.snubbed and conn.pipeline_blocks() == 1
    fast = kit.connect(have=Bitfield.full(8))
    fast.say(fast.wire.send_unchoke())
    # the freed blocks went to another peer, all but the one the snubbed peer
    # was asked again (a busy peer gets no endgame duplicate)
    (((index, begin), length),) = conn.outstanding.items()
    got = {(r.index, r.begin) for r in fast.requests()}
    assert got | {(index, begin)} == {(r.index, r.begin) for r in asked}
    assert (index, begin) not in got
    # snubbed, it is asked for one block at a time; a block ends the snub
    slow.say(slow.wire.send_piece(index, begin, kit.block(index, begin, length)))
    assert not conn.snubbed


def test_a_reject_while_unchoked_moves_the_piece_elsewhere_then_asks_again_later() -> None:
    kit = Kit(pieces=4)
    bits = Bitfield(4)
    bits.set(2)
    remote = kit.connect(have=bits)
    remote.say(remote.wire.send_unchoke())
    asked = remote.requests()
    assert asked and {r.index for r in asked} == {2}
    remote.say(b"".join(remote.wire.send_reject(r.index, r.begin, r.length) for r in asked))
    member = kit.member
    assert member.picker.availability(2) == 0
    assert isinstance(remote.messages[-1], NotInterested)
    remote.messages.clear()
    kit.advance(TICK)
    assert not remote.requests(), "asked the refusing peer again at once"
    kit.advance(REFUSAL_SECONDS)
    assert member.picker.availability(2) == 1
    assert any(isinstance(m, Interested) for m in remote.messages)
    assert {r.index for r in remote.requests()} == {2}


def test_a_reject_after_a_choke_is_the_chokes_not_the_pieces() -> None:
    kit = Kit(pieces=4)
    remote = kit.connect(have=Bitfield.full(4))
    remote.say(remote.wire.send_unchoke())
    asked = remote.requests()
    remote.say(remote.wire.send_choke())
    remote.say(b"".join(remote.wire.send_reject(r.index, r.begin, r.length) for r in asked))
    assert kit.member.picker.availability(asked[0].index) == 1
    assert not kit.member.conns[remote.cid].outstanding


def test_download_rate_cap_pauses_reading_until_tokens_return() -> None:
    from roost.core.actions import PauseReading, ResumeReading

    kit = Kit(pieces=8, config=MemberConfig(download_rate=64 * 1024))
    remote = kit.connect(have=Bitfield.full(8))
    remote.say(remote.wire.send_unchoke())
    for req in remote.requests()[:8]:
        remote.answer(req)
    assert kit.of(PauseReading) and not kit.of(ResumeReading)
    kit.advance(5.0)
    assert kit.of(ResumeReading)


# ---- bad data ----


def test_a_peer_that_sent_a_whole_bad_piece_is_banned() -> None:
    kit = Kit(pieces=2)
    liar = kit.connect(have=Bitfield.full(2))
    liar.say(liar.wire.send_unchoke())
    for req in liar.requests():
        if req.index == 0:
            liar.answer(req, bytes(req.length))  # zeros, not the data
    kit.check()
    assert kit.reports("hash_failed") == [{"piece": 0, "peers": 1}]
    (ban,) = kit.reports("peer_banned")
    assert "failed its hash check" in ban["reason"]
    assert liar.closed is not None and liar.closed.startswith("banned:")
    assert Close(liar.cid, liar.closed, True) in kit.actions
    assert liar.peer_id in kit.member.peers.banned_ids
    # it cannot come back under the same peer id
    again = kit.connect(have=Bitfield.full(2))
    assert again.closed is None  # a different peer id is fine


def test_smart_ban_finds_the_one_corrupt_sender_among_several() -> None:
    kit = Kit(pieces=1, piece_length=4 * BLOCK_SIZE)
    honest = kit.connect(have=Bitfield.full(1))
    liar = kit.connect(have=Bitfield.full(1))
    honest.say(honest.wire.send_unchoke())
    assert len(honest.requests()) == 4
    liar.say(liar.wire.send_unchoke())  # endgame: the same blocks, asked again
    dups = liar.requests()
    assert len(dups) >= 2
    corrupt = set()
    for req in dups[:2]:  # the liar delivers two blocks first, corrupt
        data = bytearray(kit.block(req.index, req.begin, req.length))
        data[100] ^= 0xFF
        liar.answer(req, bytes(data))
        corrupt.add(req.begin)
    for req in honest.requests():
        if req.begin not in corrupt:
            honest.answer(req)
    kit.check()
    assert kit.reports("hash_failed") == [{"piece": 0, "peers": 2}]
    assert not kit.reports("peer_banned"), "two senders: nobody is banned yet"
    # fetched again; this time the liar stays silent and the honest peer delivers
    for _ in range(10):
        honest.messages = [m for m in honest.messages if not isinstance(m, Request)]
        liar.messages.clear()
        kit.advance(TICK)
        for req in honest.requests():
            honest.answer(req)
        kit.check()
        if kit.member.complete:
            break
    assert kit.member.complete
    (ban,) = kit.reports("peer_banned")
    assert ban["reason"] == "sent a corrupt block of piece 0"
    assert liar.closed is not None and honest.closed is None


def test_a_broken_frame_closes_and_bans_only_that_connection() -> None:
    kit = Kit(complete=True)
    good = kit.connect(interested=True)
    bad = kit.connect(interested=True)
    bad.say(b"\x00\x00\x00\x05\x04\x00\x00\x00\x63")  # Have of piece 99 of 8
    assert bad.closed is not None and bad.closed.startswith("banned:")
    assert good.closed is None and good.cid in kit.member.conns


# ---- super-seeding ----


def test_super_seeding_reveals_small_pieces_by_the_megabyte() -> None:
    """A peer's offer slot frees only when its piece spread (about a second), so
    4 offers of 16 KiB pieces held the origin to a fifth of its link; it offers
    OFFER_BYTES' worth of small pieces at a time instead."""
    kit = Kit(
        pieces=160, piece_length=BLOCK_SIZE, complete=True, config=MemberConfig(super_seed=True)
    )
    a = kit.connect(interested=True)
    b = kit.connect(interested=True)
    offered_a = {m.index for m in a.of(Have)}
    offered_b = {m.index for m in b.of(Have)}
    assert len(offered_a) == len(offered_b) == OFFER_BYTES // BLOCK_SIZE
    assert not offered_a & offered_b


def test_a_small_swarms_origin_keeps_its_link_full_of_offers() -> None:
    """Told the swarm has 2 receivers, the origin offers each half of TOTAL_OFFER_BYTES
    (the per-peer megabyte alone held it to a sixth of its link at N=2), each piece
    still to one peer only; not told, the first peer to connect gets the floor only."""
    pieces = 2 * TOTAL_OFFER_BYTES // BLOCK_SIZE
    told = Kit(pieces=pieces, piece_length=BLOCK_SIZE, complete=True,
               config=MemberConfig(super_seed=True, expected_peers=2))
    a, b = told.connect(interested=True), told.connect(interested=True)
    offered_a = {m.index for m in a.of(Have)}
    offered_b = {m.index for m in b.of(Have)}
    assert len(offered_a) == len(offered_b) == TOTAL_OFFER_BYTES // 2 // BLOCK_SIZE
    assert not offered_a & offered_b
    unknown = Kit(pieces=pieces, piece_length=BLOCK_SIZE, complete=True,
                  config=MemberConfig(super_seed=True))
    first = unknown.connect(interested=True)
    assert len({m.index for m in first.of(Have)}) == OFFER_BYTES // BLOCK_SIZE


def test_super_seeding_reveals_each_piece_to_one_peer_and_serves_only_that() -> None:
    # pieces of OFFER_BYTES / 4: the offer count is OFFERS_PER_PEER either way
    kit = Kit(
        pieces=16, piece_length=OFFER_BYTES // 4, complete=True,
        config=MemberConfig(super_seed=True),
    )
    a = kit.connect(interested=True)
    b = kit.connect(interested=True)
    assert a.of(HaveNone) and b.of(HaveNone), "a super-seed announces nothing at first"
    offered_a = {m.index for m in a.of(Have)}
    offered_b = {m.index for m in b.of(Have)}
    assert len(offered_a) == len(offered_b) == OFFERS_PER_PEER
    assert not offered_a & offered_b, "one piece is revealed to one peer at a time"
    hidden = next(i for i in range(16) if i not in offered_a)
    a.say(a.wire.send_request(hidden, 0, BLOCK_SIZE))
    assert RejectRequest(hidden, 0, BLOCK_SIZE) in a.of(RejectRequest)
    # a fetches one offered piece whole and b gets it from a: a's next offer comes
    piece = min(offered_a)
    size = kit.info.piece_size(piece)
    a.say(b"".join(a.wire.send_request(piece, o, BLOCK_SIZE) for o in range(0, size, BLOCK_SIZE)))
    for _ in range(size // WRITE_WINDOW):  # a window at a time, as the adapter makes room
        kit.run(kit.member.event(WriteReady(a.cid), kit.now))
    assert sum(len(p.block) for p in a.of(Piece) if p.index == piece) == size
    before = len(a.of(Have))
    b.say(b.wire.send_have(piece))
    assert len(a.of(Have)) == before + 1


# ---- handshakes and connections ----


def test_silent_connection_is_closed_at_the_handshake_deadline() -> None:
    kit = Kit()
    from roost.core.actions import Connected

    kit.run(kit.member.event(Connected(77, ("10.0.0.9", 5000)), kit.now))
    kit.advance(HANDSHAKE_TIMEOUT - 1)
    assert 77 in kit.member.conns
    kit.advance(2)
    assert 77 not in kit.member.conns and Close(77, "") in kit.actions
    # counted, not logged one by one: a flood of silent sockets costs one line
    assert not kit.reports("peer_closed")
    (refused,) = kit.reports("connections_refused")
    assert refused["counts"] == {"no handshake in time": 1}


def test_tracker_peers_are_dialled_and_never_ourselves() -> None:
    kit = Kit(trackers=True, config=MemberConfig(listen_host="10.1.1.1"))
    assert kit.of(Announce)[0].event == "started"
    peers = [("10.1.1.1", 6881), ("10.1.1.2", 6881), ("127.0.0.1", 6881)]
    kit.run(kit.member.event(AnnounceAnswered(peers, 30.0), kit.now))
    assert [c.address for c in kit.of(Connect)] == [("10.1.1.2", 6881)]
    kit.advance(29)
    assert len(kit.of(Announce)) == 1
    kit.advance(2)
    assert [a.event for a in kit.of(Announce)] == ["started", None]


def test_a_peer_that_dialled_us_is_not_dialled_when_the_tracker_lists_it_later() -> None:
    # it said where it listens (BEP 10 p) before the tracker listed that address:
    # dialling it again made a second connection that replaced the first, every
    # request in flight lost, in every pair of hosts at the first re-announce
    # (simulated, 16 hosts: all 136 connections at 5 s; docs/sim.md "Round trips")
    kit = Kit(trackers=True)
    kit.run(kit.member.event(AnnounceAnswered([], 5.0), kit.now))
    remote = kit.connect(ip="10.1.1.7", have=Bitfield.full(8),
                         extended={b"m": {}, b"p": 6881})
    kit.advance(5.5)  # the re-announce lists it
    kit.run(kit.member.event(AnnounceAnswered([("10.1.1.7", 6881)], 5.0), kit.now))
    kit.advance(10)
    assert not kit.of(Connect)
    kit.hang_up(remote)  # gone: it may be dialled again
    kit.advance(1)
    assert [c.address for c in kit.of(Connect)] == [("10.1.1.7", 6881)]


# ---- completion policy ----


def download_all(kit: Kit) -> Remote:
    seed = kit.connect(have=Bitfield.full(kit.info.num_pieces))
    seed.say(seed.wire.send_unchoke())
    for _ in range(20):
        for req in seed.requests():
            seed.answer(req)
        kit.check()
        if kit.member.complete:
            break
        kit.advance(TICK)
    assert kit.member.complete
    return seed


def test_a_fetch_without_seeding_stops_once_the_payload_is_flushed() -> None:
    kit = Kit(config=MemberConfig(seed=False), trackers=True)
    kit.run(kit.member.event(AnnounceAnswered([], 600.0), kit.now))
    seed = download_all(kit)
    assert kit.of(Flush) and not kit.stops()
    assert kit.of(Announce)[-1].event == "completed", "completed is announced at once"
    kit.run(kit.member.event(Flushed(), kit.now))
    (complete,) = kit.reports("complete")
    assert complete["bytes"] == kit.info.total_length
    assert [s.reason for s in kit.stops()] == ["complete"]
    assert seed.closed == "both seeds"


def test_a_lingering_fetch_leaves_when_nobody_is_interested_for_linger_seconds() -> None:
    kit = Kit(config=MemberConfig(linger=10.0))
    download_all(kit)
    kit.run(kit.member.event(Flushed(), kit.now))
    leecher = kit.connect(interested=True)
    kit.advance(9.0)
    assert not kit.stops(), "an interested peer keeps us seeding"
    leecher.say(leecher.wire.send_not_interested())
    kit.advance(9.0)
    assert not kit.stops()
    kit.advance(2.0)
    assert [s.reason for s in kit.stops()] == ["no interested peer for 10 s"]


def test_a_fetch_leaves_when_the_tracker_says_every_expected_peer_is_complete() -> None:
    kit = Kit(config=MemberConfig(linger=600.0), trackers=True)
    download_all(kit)
    kit.run(kit.member.event(Flushed(), kit.now))
    answer = AnnounceAnswered([], 30.0, expected_peers=3, complete_peers=2)
    kit.run(kit.member.event(answer, kit.now))
    kit.advance(TICK)
    assert not kit.stops()
    answer = AnnounceAnswered([], 30.0, expected_peers=3, complete_peers=3)
    kit.run(kit.member.event(answer, kit.now))
    kit.advance(TICK)
    assert [s.reason for s in kit.stops()] == ["every expected peer is complete"]


def test_a_seed_stays_unless_asked_to_stop_when_the_swarm_is_complete() -> None:
    for until_complete in (False, True):
        config = MemberConfig(linger=None, stop_when_swarm_complete=until_complete)
        kit = Kit(complete=True, config=config, trackers=True)
        answer = AnnounceAnswered([], 30.0, expected_peers=2, complete_peers=2)
        kit.run(kit.member.event(answer, kit.now))
        kit.advance(60.0)
        assert bool(kit.stops()) == until_complete


def test_a_disk_error_stops_the_member_with_the_error() -> None:
    from roost.core.actions import PieceChecked

    kit = Kit(pieces=2)
    seed = kit.connect(have=Bitfield.full(2))
    seed.say(seed.wire.send_unchoke())
    for req in seed.requests():
        seed.answer(req)
    action = kit.pending.pop(0)
    kit.run(kit.member.event(PieceChecked(action.index, False, "No space left"), kit.now))
    (stop,) = kit.stops()
    assert stop.reason == "disk error" and stop.error is not None and "No space" in stop.error


def test_a_fetch_that_is_complete_at_start_and_does_not_seed_ends_at_once() -> None:
    kit = Kit(complete=True, config=MemberConfig(seed=False))
    assert kit.of(Flush) and not kit.of(Connect)
    kit.run(kit.member.event(Flushed(), kit.now))
    assert [s.reason for s in kit.stops()] == ["complete"]


# ---- requests a peer sits on ----


def serve(kit: Kit, remote: Remote, count: int, *, keep: Request | None = None) -> None:
    """The remote answers up to `count` of its oldest requests, never `keep`."""
    for req in [r for r in remote.requests() if r != keep][:count]:
        remote.answer(req)
    kit.check()


def test_a_request_the_peer_sits_on_is_cancelled_and_asked_of_another_peer() -> None:
    kit = Kit(pieces=64)
    a = kit.connect(have=Bitfield.full(64))
    a.say(a.wire.send_unchoke())
    kept = a.requests()[0]
    only = Bitfield(64)
    only.set(kept.index)
    b = kit.connect(have=only)
    b.say(b.wire.send_unchoke())
    conn = kit.member.conns[a.cid]
    # a serves 8 blocks a tick (256 KiB/s), in order, except the one it sits on
    cancelled_at = None
    for step in range(40):
        serve(kit, a, 8, keep=kept)
        serve(kit, b, 8)
        kit.advance(TICK)
        if Cancel(kept.index, kept.begin, kept.length) in a.of(Cancel):
            cancelled_at = step * TICK
            break
    assert cancelled_at is not None, "the request a peer sat on was never cancelled"
    assert cancelled_at < SNUB_SECONDS, "re-asked by its rate, before any snub"
    assert not conn.snubbed
    assert (kept.index, kept.begin) not in conn.outstanding
    assert kept in b.requests(), "the block went to another peer that has it"
    assert conn.late_cap is not None and conn.pipeline_blocks() < 32, "pipeline shrunk"
    serve(kit, b, 8)
    assert kit.member.have[kept.index]


def test_a_request_still_in_the_queue_of_a_slow_peer_is_not_late() -> None:
    kit = Kit(pieces=64)
    a = kit.connect(have=Bitfield.full(64))
    a.say(a.wire.send_unchoke())
    # 2 blocks a tick: 64 KiB/s, the queue of 32 takes 8 s to drain in order
    for _ in range(30):
        serve(kit, a, 2)
        kit.advance(TICK)
    assert not a.of(Cancel), "a request served in the order asked was called late"


def test_requests_stay_one_below_the_peers_reqq() -> None:
    kit = Kit(pieces=8)
    a = kit.connect(have=Bitfield.full(8), extended={b"m": {}, b"reqq": 5})
    a.say(a.wire.send_unchoke())
    assert len(a.requests()) == 4  # Transmission 3.00 refuses the reqq-th


# ---- redialling ----


def dial_and_hang_up(kit: Kit, address: tuple[str, int]) -> None:
    """The member dialled `address`: it connects, shakes hands and hangs up."""
    cid = 900 + len(kit.of(Connect))
    remote = kit.remotes[cid] = Remote(kit, cid, address, b"-TR3000-" + bytes(12))
    kit.run(kit.member.event(Connected(cid, address, dialled=address), kit.now))
    remote.say(remote.wire.handshake_bytes())
    kit.hang_up(remote)


def test_a_peer_that_hangs_up_after_the_handshake_is_redialled_with_backoff() -> None:
    kit = Kit(trackers=True)
    address = ("10.9.9.9", 51413)
    kit.run(kit.member.event(AnnounceAnswered([address], 1800.0), kit.now))
    dial_times: list[float] = []
    end = kit.now + 1000
    while kit.now < end:
        dials = [c for c in kit.of(Connect) if c.address == address]
        if len(dials) > len(dial_times):
            dial_times.append(kit.now)
            dial_and_hang_up(kit, address)
        kit.advance(TICK)
    gaps = [round(b - a) for a, b in itertools.pairwise(dial_times)]
    assert gaps == [5, 10, 20, 40, 80, 160, 300, 300], "doubling, capped at 300 s"
    delays = [r["delay"] for r in kit.reports("peer_backoff")]
    assert delays[:5] == [10.0, 20.0, 40.0, 80.0, 160.0]
    assert all(r["peer"] == "10.9.9.9:51413" for r in kit.reports("peer_backoff"))


def test_backoff_resets_once_the_peer_trades_data() -> None:
    kit = Kit()
    conn_of = kit.member.peers
    address = ("10.9.9.9", 51413)
    for _ in range(3):
        dial_and_hang_up(kit, address)
    assert conn_of.backoff[address] == 20.0
    cid = 990
    remote = kit.remotes[cid] = Remote(kit, cid, address, b"-TR3000-" + bytes(12))
    kit.run(kit.member.event(Connected(cid, address, dialled=address), kit.now))
    remote.say(remote.wire.handshake_bytes() + remote.wire.send_have_all())
    remote.say(remote.wire.send_unchoke())
    remote.answer(remote.requests()[0])
    kit.hang_up(remote)
    assert address not in conn_of.backoff


def test_reserved_pieces_are_never_asked_for_until_held_locally_completes_them() -> None:
    # a tree fetch places wholly reused files while the swarm runs: their pieces are
    # reserved (never requested), then held, announced and served as they land
    kit = Kit(pieces=4)
    for index in (1, 2):
        kit.member.picker.reserve(index)
    seed = kit.connect(have=Bitfield.full(4))
    seed.say(seed.wire.send_unchoke())
    asked: set[int] = set()
    for _ in range(20):
        for req in seed.requests():
            asked.add(req.index)
            seed.answer(req)
        kit.check()
        kit.advance(TICK)
    assert asked == {0, 3}
    assert not kit.member.complete and not kit.of(Flush)
    leecher = kit.connect()
    kit.run(kit.member.event(HeldLocally((1, 2)), kit.now))
    assert kit.member.complete and kit.of(Flush)
    assert {1, 2} <= {h.index for h in leecher.of(Have)}
    assert kit.member.downloaded == kit.info.piece_size(0) + kit.info.piece_size(3)


def test_a_read_fills_only_when_it_may_let_the_fill_ask_for_more() -> None:
    """Most reads in a swarm are Haves of pieces we have or fetch already, or
    requests to us: the member does not try to ask for more after them
    (SwarmMember.fills counts every try, and why it asked nothing)."""
    kit = Kit(pieces=40)
    seed = kit.connect(have=Bitfield.full(40))
    seed.say(seed.wire.send_unchoke())
    asked = sorted({r.index for r in seed.requests()})
    done, busy = asked[0], asked[1]
    for req in [r for r in seed.requests() if r.index == done]:
        seed.answer(req)
    kit.check()
    assert kit.member.have[done]
    fresh = next(i for i in range(40) if i not in asked)
    other = next(i for i in range(40) if i not in asked and i != fresh)
    peer = kit.connect(have=Bitfield.from_bytes(40, (1 << (39 - other)).to_bytes(5, "big")))
    peer.say(peer.wire.send_unchoke())
    assert {r.index for r in peer.requests()} == {other}
    tries = sum(kit.member.fills().values())
    peer.say(peer.wire.send_have(done) + peer.wire.send_have(busy))
    peer.say(peer.wire.send_interested() + peer.wire.send_keepalive())
    assert sum(kit.member.fills().values()) == tries
    peer.say(peer.wire.send_have(busy) + peer.wire.send_have(fresh))
    assert sum(kit.member.fills().values()) == tries + 1
    assert {r.index for r in peer.requests()} == {other, fresh}
    assert kit.member.fills()["asked"] >= 3


def test_a_have_goes_only_to_peers_that_lack_the_piece_and_always_to_seeds() -> None:
    """A peer that holds a piece never asks us for it: our Have would only cost
    it a parse and an availability update. A seed still hears every Have (a
    super-seeding origin counts them to see its pieces spread)."""
    kit = Kit(pieces=4)
    for index in (2, 3):  # only 0 and 1 are fetched: the member stays incomplete
        kit.member.picker.reserve(index)
    seed = kit.connect(have=Bitfield.full(4))
    holder = Bitfield(4)
    holder.set(0)
    has_0 = kit.connect(have=holder)
    has_none = kit.connect()
    seed.say(seed.wire.send_unchoke())
    for _ in range(10):
        for req in seed.requests():
            seed.answer(req)
        kit.check()
        kit.advance(TICK)
    assert kit.member.have[0] and kit.member.have[1] and not kit.member.complete
    assert sorted(h.index for h in has_none.of(Have)) == [0, 1]
    assert sorted(h.index for h in has_0.of(Have)) == [1]
    assert sorted(h.index for h in seed.of(Have)) == [0, 1]


# ---- pieces placed beside the swarm (RESERVED_KEY) ----


def _bits(n: int, indices: range | set[int]) -> Bitfield:
    bits = Bitfield(n)
    for i in indices:
        bits.set(i)
    return bits


def test_a_placing_host_tells_its_peers_which_pieces_it_will_never_request() -> None:
    kit = Kit(pieces=12)
    for index in (1, 2, 9):
        kit.member.picker.reserve(index)
    early = kit.connect()
    (told,) = early.of(ExtendedHandshake)
    assert told.data[RESERVED_KEY] == _bits(12, {1, 2, 9}).to_bytes()
    kit.run(kit.member.event(HeldLocally((1, 9)), kit.now))
    (told,) = kit.connect().of(ExtendedHandshake)
    assert told.data[RESERVED_KEY] == _bits(12, {2}).to_bytes()
    kit.run(kit.member.event(HeldLocally((2,)), kit.now))
    (told,) = kit.connect().of(ExtendedHandshake)
    assert RESERVED_KEY not in told.data


def test_a_super_seeding_origin_offers_a_placing_host_only_what_it_will_fetch() -> None:
    """Offers made at its handshake, before its extended handshake said what it
    reserves, are taken back; its bitfield (none here) does not undo that; and it
    gets the unreserved pieces instead. Before, the origin waited
    STALE_OFFER_SECONDS on offers of reserved pieces (the lab's next release 2x slower)."""
    pieces = 16
    kit = Kit(pieces=pieces, piece_length=OFFER_BYTES // 4, complete=True,
              config=MemberConfig(super_seed=True))
    reserved = range(12)
    cid = 7
    a = kit.remotes[cid] = Remote(kit, cid, ("10.0.0.8", 40007), b"-RO0001-" + bytes(12))
    kit.run(kit.member.event(Connected(cid, a.address), kit.now))
    a.say(a.wire.handshake_bytes())
    at_handshake = {m.index for m in a.of(Have)}
    assert len(at_handshake) == OFFERS_PER_PEER
    assert at_handshake & set(reserved), "seed 1 offers a reserved piece first"
    a.say(a.wire.send_extended_handshake({b"m": {}, RESERVED_KEY:
                                          _bits(pieces, reserved).to_bytes()})
          + a.wire.send_have_none() + a.wire.send_interested())
    later = [m.index for m in a.of(Have)][len(at_handshake):]
    live = (at_handshake - set(reserved)) | set(later)
    assert live == {12, 13, 14, 15} and not set(later) & set(reserved)
    taken_back = min(at_handshake & set(reserved))
    a.say(a.wire.send_request(taken_back, 0, BLOCK_SIZE))
    assert RejectRequest(taken_back, 0, BLOCK_SIZE) in a.of(RejectRequest)
    # it fetches what it was offered; a second peer gets those from it; the
    # origin offers it nothing more (it lacks nothing it will request)
    b = kit.connect(interested=True)
    for index in sorted(live):
        size = kit.info.piece_size(index)
        a.say(b"".join(a.wire.send_request(index, o, BLOCK_SIZE)
                       for o in range(0, size, BLOCK_SIZE)))
        b.say(b.wire.send_have(index))
    kit.advance(5)
    assert not {m.index for m in a.of(Have)} - set(at_handshake) - set(later)


def test_a_malformed_reserved_key_is_ignored() -> None:
    kit = Kit(pieces=12, complete=True, config=MemberConfig(super_seed=True))
    for value in (b"\xff", bytes(3), b"\x00\x1f", 12):  # short, long, spare bits, not bytes
        remote = kit.connect(extended={b"m": {}, RESERVED_KEY: value})
        conn = kit.member.conns[remote.cid]
        assert conn.reserved is None and remote.closed is None


def test_a_super_seeding_origin_renews_the_offers_of_a_peer_that_lost_interest() -> None:
    """A peer not interested in what we revealed holds all of it (it got the
    pieces elsewhere, and a roost peer sends no Have for a piece it believes we
    have): those offers are done and new ones go out at once. Before, they held
    the peer's slots until it fetched nothing for STALE_OFFER_SECONDS (simulated:
    with 8 upload slots at the origin every host stuck one piece short)."""
    kit = Kit(pieces=16, piece_length=OFFER_BYTES // 4, complete=True,
              config=MemberConfig(super_seed=True))
    a = kit.connect(interested=True)
    first = {m.index for m in a.of(Have)}
    assert len(first) == OFFERS_PER_PEER
    a.say(a.wire.send_not_interested())
    renewed = {m.index for m in a.of(Have)} - first
    assert len(renewed) == OFFERS_PER_PEER
    # the new offers are served; the old ones are done
    fresh, done = min(renewed), min(first)
    a.say(a.wire.send_interested() + a.wire.send_request(fresh, 0, BLOCK_SIZE)
          + a.wire.send_request(done, 0, BLOCK_SIZE))
    assert [p.index for p in a.of(Piece)] == [fresh]
    assert RejectRequest(done, 0, BLOCK_SIZE) in a.of(RejectRequest)


def test_a_super_seeding_origin_counts_a_piece_given_once_the_peer_asked_for_all_of_it() -> None:
    """The blocks go out a window at a time at the peer's pace; the super-seeder
    moves on when the peer has asked for the whole piece, as it did when the
    whole piece went to the socket at once. Counting it only once the last
    byte left let a slow peer hold uncovered pieces back from the fast ones."""
    kit = Kit(pieces=16, piece_length=OFFER_BYTES // 4, complete=True,
              config=MemberConfig(super_seed=True))
    a = kit.connect(interested=True)
    b = kit.connect(interested=True)
    piece = min(m.index for m in a.of(Have))
    size = kit.info.piece_size(piece)
    assert size > WRITE_WINDOW  # the piece is not all sent at once
    a.say(b"".join(a.wire.send_request(piece, o, BLOCK_SIZE) for o in range(0, size, BLOCK_SIZE)))
    assert sum(len(p.block) for p in a.of(Piece)) < size
    before = len(a.of(Have))
    b.say(b.wire.send_have(piece))  # the piece spread: a's slot takes a new offer
    assert len(a.of(Have)) == before + 1


def test_offers_of_a_peer_that_asks_for_nothing_are_withdrawn_while_we_still_send_it() -> None:
    """A slow peer's pipeline to us is full of what it asked for first: we keep
    sending it that, at its pace, and it asks nothing more. Its other offers go
    to other peers after STALE_OFFER_SECONDS without a request, however
    recently we sent it a block."""
    # pieces long enough that the first one is still going out at the end:
    # its completion would free a slot and make a Have of its own
    kit = Kit(pieces=16, piece_length=OFFER_BYTES, complete=True,
              config=MemberConfig(super_seed=True))
    a = kit.connect(interested=True)
    offered = sorted(m.index for m in a.of(Have))
    piece = offered[0]
    size = kit.info.piece_size(piece)
    a.say(b"".join(a.wire.send_request(piece, o, BLOCK_SIZE) for o in range(0, size, BLOCK_SIZE)))
    haves = len(a.of(Have))
    sent = 0
    for _ in range(int(STALE_OFFER_SECONDS) + 2):  # a window a second: a slow link
        kit.advance(1.0)
        kit.run(kit.member.event(WriteReady(a.cid), kit.now))
        now_sent = sum(len(p.block) for p in a.of(Piece))
        assert sent < now_sent < size  # we keep sending it, and are not done
        sent = now_sent
    # withdrawn (they went to the pool) and offered anew: more Haves to it;
    # held, they would have kept its slots full and no Have would have come
    assert len(a.of(Have)) > haves


def test_a_piece_asked_for_then_cancelled_is_served_when_asked_again() -> None:
    """A piece counts as given once the peer asked for all of it; a Cancel (or a
    choke) may drop what was not sent yet. Asked again, it is served: refused,
    the piece would be held by nobody and offered to nobody else."""
    kit = Kit(pieces=16, piece_length=OFFER_BYTES // 4, complete=True,
              config=MemberConfig(super_seed=True))
    a = kit.connect(interested=True)
    piece = min(m.index for m in a.of(Have))
    size = kit.info.piece_size(piece)
    offsets = range(0, size, BLOCK_SIZE)
    a.say(b"".join(a.wire.send_request(piece, o, BLOCK_SIZE) for o in offsets))
    sent = {p.begin for p in a.of(Piece)}
    assert sent and len(sent) < len(offsets)  # a window went out, the rest waits
    rest = [o for o in offsets if o not in sent]
    a.say(b"".join(a.wire.send_cancel(piece, o, BLOCK_SIZE) for o in rest))
    a.say(b"".join(a.wire.send_request(piece, o, BLOCK_SIZE) for o in rest))
    for _ in range(len(offsets)):
        kit.run(kit.member.event(WriteReady(a.cid), kit.now))
    assert not [r for r in a.of(RejectRequest) if r.index == piece]
    assert sorted(p.begin for p in a.of(Piece) if p.index == piece) == list(offsets)
