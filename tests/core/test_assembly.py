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
    got = asm.add(picker, 1, 0, 0, block, PIECE, owned=True)
    assert got.whole is block  # the very buffer it was received into
    assert got.wasted == 0
    assert asm.checking_bytes == PIECE and not asm.buffers
    bad, senders = asm.checked(0, True)
    assert (bad, senders) == (set(), 1)


def test_parts_and_immutable_blocks_are_copied_into_a_buffer_of_the_piece() -> None:
    picker, asm = picker_with_seed(), Assembly(PIECE)
    data = bytes(range(256)) * (PIECE // 256)
    first = bytearray(data[: 2 * BLOCK_SIZE])
    assert asm.add(picker, 1, 0, 0, first, PIECE, owned=True).whole is None
    got = asm.add(picker, 2, 0, 2 * BLOCK_SIZE, bytearray(data[2 * BLOCK_SIZE :]), PIECE,
                  owned=True)
    assert got.whole is not None and bytes(got.whole) == data and got.whole is not first
    whole_bytes = asm.add(picker, 1, 1, 0, data, PIECE, owned=True).whole  # bytes: immutable
    assert isinstance(whole_bytes, bytearray) and bytes(whole_bytes) == data
    lent = bytearray(data)  # not handed over (a web seed's answer): copied, never kept
    picker3 = picker_with_seed()
    assert Assembly(PIECE).add(picker3, 1, 0, 0, lent, PIECE).whole is not lent


def test_a_whole_piece_over_a_started_one_is_copied_and_counts_the_overlap_as_waste() -> None:
    picker, asm = picker_with_seed(), Assembly(PIECE)
    good = bytes(range(256)) * (PIECE // 256)
    asm.add(picker, 1, 0, 0, bytearray(good[:BLOCK_SIZE]), PIECE)
    again = bytearray(b"\xff" * BLOCK_SIZE + good[BLOCK_SIZE:])
    got = asm.add(picker, 2, 0, 0, again, PIECE, owned=True)
    assert got.whole is not None and got.whole is not again
    assert bytes(got.whole) == good  # the first block kept its sender's
    assert got.wasted == BLOCK_SIZE
    # smart ban still knows who sent which block
    assert asm.checking[0][1] == [(0, BLOCK_SIZE, 1), (BLOCK_SIZE, PIECE, 2)]
    assert hashlib.sha1(got.whole).digest() == hashlib.sha1(good).digest()


def test_checked_pieces_and_copied_blocks_are_reused_and_the_reuse_is_bounded() -> None:
    picker, asm = picker_with_seed(8), Assembly(PIECE)
    asm.max_spare_bytes = 2 * PIECE
    data = bytes(range(256)) * (PIECE // 256)
    whole = asm.add(picker, 1, 0, 0, bytearray(data), PIECE, owned=True).whole
    assert whole is not None
    asm.checked(0, True)
    reused = asm.take(PIECE)
    assert reused is whole  # no new buffer for the next piece
    assert asm.take(PIECE) is not whole and asm.spare_bytes == 0
    # a copied half-piece block is kept too (the piece has its own buffer)
    half = bytearray(data[: 2 * BLOCK_SIZE])
    asm.add(picker, 1, 1, 0, half, PIECE, owned=True)
    assert asm.take(2 * BLOCK_SIZE) is half
    # and no more than the budget is kept
    for _ in range(4):
        asm.give_back(bytearray(PIECE))
    assert asm.spare_bytes == 2 * PIECE
    # a reused buffer's old bytes never show: a piece is whole only when every
    # block was copied over them
    asm.give_back(bytearray(b"\xee" * PIECE))
    for begin in range(0, PIECE, BLOCK_SIZE):
        got = asm.add(picker, 2, 2, begin, bytearray(data[begin : begin + BLOCK_SIZE]), PIECE)
    assert got.whole is not None and bytes(got.whole) == data
