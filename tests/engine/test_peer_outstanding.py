"""Peer.outstanding keeps a running count of requested picker blocks.

fill_requests reads the count on every call (a hot path), so it is maintained
on every change instead of re-summed. These tests compare it with a fresh
sum after every step, first on the container alone, then on a real Peer
driven through requests, pieces, rejects, cancels and chokes (no sockets: a
Peer with no transport sends nothing).
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from roost.bitfield import Bitfield
from roost.engine.config import SessionConfig
from roost.engine.peer import REFUSAL_SECONDS, Outstanding, Peer
from roost.engine.session import Session
from roost.picker import PiecePicker
from roost.wire import BLOCK_SIZE, Choke, Piece, RejectRequest, Unchoke


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


class StubSession:
    """What a Peer needs from its Session, over a real PiecePicker."""

    release_blocks = Session.release_blocks  # the real bookkeeping

    def __init__(self, num_pieces: int, piece_length: int) -> None:
        total = num_pieces * piece_length
        self.info_hash = bytes(20)
        self.peer_id = b"-RO0100-" + bytes(12)
        self.num_pieces = num_pieces
        self.info = SimpleNamespace(piece_length=piece_length, total_length=total)
        self.config = SessionConfig(big_block=4 * BLOCK_SIZE)
        self.picker = PiecePicker(num_pieces, piece_length, total, rng=random.Random(1))
        self.wasted_bytes = 0

    def now(self) -> float:
        return 0.0

    def backlogged(self) -> bool:
        return False

    def wasted(self, nbytes: int) -> None:
        self.wasted_bytes += nbytes

    def on_block(self, peer: Peer, index: int, begin: int, block: bytes) -> None:
        for offset in range(0, len(block), BLOCK_SIZE):
            size = min(BLOCK_SIZE, len(block) - offset)
            self.picker.block_received(peer.key, index, begin + offset, size)

    def on_interest_changed(self, peer: Peer) -> None:
        pass


def make_peer(session: StubSession) -> Peer:
    fake: Any = session
    peer = Peer(fake, ("10.0.0.2", 6881), outgoing=True)
    session.picker.add_peer(peer.key, Bitfield.full(session.num_pieces))
    peer.in_picker = True
    peer.is_seed = True  # a Reject does not make it "lack" the piece
    peer.am_interested = True
    peer.peer_choking = False
    peer.big_block = 4 * BLOCK_SIZE  # merged requests: several blocks per entry
    return peer


@pytest.mark.parametrize("seed", range(10))
def test_peer_count_survives_every_path_that_changes_requests(seed: int) -> None:
    rng = random.Random(seed)
    session = StubSession(num_pieces=40, piece_length=10 * BLOCK_SIZE)
    peer = make_peer(session)
    seen = set()
    merged = False
    for _ in range(400):
        entries = peer.outstanding.items()
        op = rng.randrange(7)
        if op == 0 or not entries:
            peer.fill_requests()
            seen.add("fill")
            merged |= any(length > BLOCK_SIZE for _, length in peer.outstanding.items())
        else:
            (index, begin), length = rng.choice(entries)
            if op == 1:  # what we asked for
                peer.handle(Piece(index, begin, bytes(length)))
                seen.add("piece")
            elif op == 2:  # a short answer: released, asked again elsewhere
                peer.handle(Piece(index, begin, bytes(max(1, length - 1))))
                seen.add("short piece")
            elif op == 3:
                peer.handle(RejectRequest(index, begin, length))
                seen.add("reject")
            elif op == 4:
                peer.cancel_block(index, begin, length)
                seen.add("cancel")
            elif op == 5:
                peer.handle(Choke())
                peer.handle(Unchoke())
                seen.add("choke")
            else:
                peer.snubbed = not peer.snubbed
                peer.drop_requests(send_cancel=True)
                seen.add("drop")
        assert peer.outstanding_blocks() == resummed(peer.outstanding.items())
    assert {"fill", "piece", "short piece", "reject", "cancel", "choke", "drop"} <= seen
    assert merged, "no merged (multi-block) request was exercised"


def test_a_refused_piece_is_asked_elsewhere_then_again_later() -> None:
    # a non-seed peer that refuses a piece while unchoking us (a super-seeding
    # origin whose offer moved on, or a full queue) is not asked for it again
    # at once, but is asked again after REFUSAL_SECONDS
    session = StubSession(num_pieces=4, piece_length=4 * BLOCK_SIZE)
    fake: Any = session
    peer = Peer(fake, ("10.0.0.3", 6881), outgoing=True)
    bits = Bitfield(4)
    bits.set(2)
    peer.bitfield = bits.copy()
    session.picker.add_peer(peer.key, bits)
    peer.in_picker, peer.am_interested, peer.peer_choking = True, True, False
    peer.fill_requests()
    asked = peer.outstanding.items()
    assert asked and {index for (index, _), _ in asked} == {2}
    for (index, begin), length in asked:  # it refuses every block of it
        peer.handle(RejectRequest(index, begin, length))
    assert session.picker.availability(2) == 0 and not peer.am_interested
    peer.fill_requests()
    assert not peer.outstanding.items(), "asked the refusing peer again at once"
    peer.forgive_refusals(REFUSAL_SECONDS - 1)
    assert session.picker.availability(2) == 0
    peer.forgive_refusals(REFUSAL_SECONDS)
    assert session.picker.availability(2) == 1 and peer.bitfield[2] and peer.am_interested
