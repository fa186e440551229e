"""Piece assembly (roost.core.assembly): copies and the whole-piece hand-over."""

from __future__ import annotations

import hashlib

from roost.core.assembly import Assembly
from roost.core.picker import PiecePicker
from roost.core.wire import BLOCK_SIZE

PIECE = 4 * BLOCK_SIZE


def picker_with_seed(pieces: int = 2) -> PiecePicker:
    picker = PiecePicker(pieces, PIECE, pieces * PIECE)
    picker.add_peer_have_all(1)
    picker.add_peer_have_all(2)
    return picker


def test_a_whole_piece_in_one_bytearray_becomes_the_piece_without_a_copy() -> None:
    picker, asm = picker_with_seed(), Assembly(PIECE)
    block = bytearray(b"x" * PIECE)
    got = asm.add(picker, 1, 0, 0, block, PIECE)
    assert got.whole is block  # the very buffer it was received into
    assert got.wasted == 0
    assert asm.checking_bytes == PIECE and not asm.buffers
    bad, senders = asm.checked(0, True)
    assert (bad, senders) == (set(), 1)


def test_parts_and_immutable_blocks_are_copied_into_a_buffer_of_the_piece() -> None:
    picker, asm = picker_with_seed(), Assembly(PIECE)
    data = bytes(range(256)) * (PIECE // 256)
    first = bytearray(data[: 2 * BLOCK_SIZE])
    assert asm.add(picker, 1, 0, 0, first, PIECE).whole is None
    got = asm.add(picker, 2, 0, 2 * BLOCK_SIZE, bytearray(data[2 * BLOCK_SIZE :]), PIECE)
    assert got.whole == data and got.whole is not first
    whole_bytes = asm.add(picker, 1, 1, 0, data, PIECE).whole  # bytes: not adoptable
    assert whole_bytes == data and isinstance(whole_bytes, bytearray)


def test_a_whole_piece_over_a_started_one_is_copied_and_counts_the_overlap_as_waste() -> None:
    picker, asm = picker_with_seed(), Assembly(PIECE)
    good = bytes(range(256)) * (PIECE // 256)
    asm.add(picker, 1, 0, 0, bytearray(good[:BLOCK_SIZE]), PIECE)
    again = bytearray(b"\xff" * BLOCK_SIZE + good[BLOCK_SIZE:])
    got = asm.add(picker, 2, 0, 0, again, PIECE)
    assert got.whole is not again and got.whole == good  # the first block kept its sender's
    assert got.wasted == BLOCK_SIZE
    # smart ban still knows who sent which block
    assert asm.checking[0][1] == {0: 1, BLOCK_SIZE: 2, 2 * BLOCK_SIZE: 2, 3 * BLOCK_SIZE: 2}
    assert hashlib.sha1(got.whole).digest() == hashlib.sha1(good).digest()
