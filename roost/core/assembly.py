"""Piece assembly and smart ban. Pure.

Theory of operation. Downloaded blocks are copied into a per-piece buffer,
remembering which connection sent each run of bytes (`block_from`: (start,
stop, sender) per run that was new, in the order received). A full piece leaves as a
CheckAndWrite action (the adapter hashes and writes it off the event loop)
and stays counted in `checking_bytes` until its PieceChecked comes back;
while that is at `max_checking_bytes`, the member stops requesting
(`backlogged`): memory is bounded by the pieces in flight, not the payload.

Bad data: a piece that fails its hash is fetched again. If one connection
sent all of it, that one is banned at once. Otherwise the blocks' digests are
kept (`suspects`), and when the piece later passes, the senders whose blocks
differed from the good data are banned (libtorrent's "smart ban").
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass, field

from roost.core.picker import PiecePicker
from roost.core.wire import BLOCK_SIZE, Block


@dataclass
class Received:
    """What one Piece message did: bytes that were not new, endgame cancels to
    send (connection, block), and the piece to check when it is now whole."""

    wasted: int = 0
    cancels: list[tuple[Hashable, Block]] = field(default_factory=list)
    whole: bytearray | None = None


#: spare buffers kept for reuse (Assembly.take): at least this many bytes' worth
SPARE_BYTES = 8 * 1024 * 1024
MIN_SPARE = 32 * 1024  # smaller buffers are cheap to make (and bodies are streamed from 32 KiB)

#: (block offset, SHA-1 of the block as received, the connection that sent it)
Suspect = tuple[int, bytes, int]
#: (start, stop, sender): bytes [start, stop) of a piece came from `sender`
Run = tuple[int, int, int]


class Assembly:
    def __init__(self, piece_length: int) -> None:
        self.buffers: dict[int, bytearray] = {}
        self.block_from: dict[int, list[Run]] = {}
        self.checking: dict[int, tuple[bytearray, list[Run]]] = {}
        self.checking_bytes = 0
        self.suspects: dict[int, list[Suspect]] = {}
        # pieces waiting for hash + write may hold at most this much memory
        self.max_checking_bytes = max(64 * 1024 * 1024, 8 * piece_length)
        # Checked pieces' buffers, reused for new pieces and big blocks: a fresh
        # bytearray is zeroed and its pages faulted in, for bytes that are all
        # overwritten before anyone reads them (see take).
        self.spare: dict[int, list[bytearray]] = {}
        self.spare_bytes = 0
        self.max_spare_bytes = max(SPARE_BYTES, 2 * piece_length)

    def take(self, size: int) -> bytearray:
        """A buffer of `size` bytes whose content is undefined: only for a piece or
        a block that is filled completely before it is read."""
        spares = self.spare.get(size)
        if spares:
            self.spare_bytes -= size
            return spares.pop()
        return bytearray(size)

    def give_back(self, buf: bytearray) -> None:
        """`buf` is no longer used by anyone: keep it for take, within a budget."""
        size = len(buf)
        if size >= MIN_SPARE and self.spare_bytes + size <= self.max_spare_bytes:
            self.spare.setdefault(size, []).append(buf)
            self.spare_bytes += size

    def backlogged(self) -> bool:
        return self.checking_bytes >= self.max_checking_bytes

    def add(
        self, picker: PiecePicker, key: int, index: int, begin: int, block: bytes | bytearray,
        size: int, *, owned: bool = False,
    ) -> Received:
        """Copy a received block (possibly several picker blocks) into its piece.
        `owned`: the caller hands the block over (a wire body): it may become the
        piece, or be reused once copied."""
        result = Received()
        if index in self.checking:
            result.wasted = len(block)
            return result
        new, whole, result.cancels = picker.span_received(key, index, begin, len(block))
        buf = self.buffers.get(index)
        if buf is None and owned and len(block) == size and new == [(0, size)] \
                and isinstance(block, bytearray):
            # The whole piece in one message (a roost peer's big block), every
            # block of it new: the buffer it was received into becomes the
            # piece, without a copy. The sender hands it over (wire.Piece).
            buf = block
            self.block_from[index] = [(0, size, key)]
        else:
            if buf is None:
                buf = self.buffers[index] = self.take(size)  # every block is copied in
                self.block_from[index] = []
            sources = self.block_from[index]
            view = memoryview(block)  # slices without copying; the copy is into buf
            for start, stop in new:
                buf[start:stop] = view[start - begin : stop - begin]
                sources.append((start, stop, key))
            if isinstance(block, bytearray) and owned:
                self.give_back(block)
        result.wasted = len(block) - sum(stop - start for start, stop in new)
        if whole:
            self.buffers.pop(index, None)
            self.checking[index] = (buf, self.block_from.pop(index))
            self.checking_bytes += len(buf)
            result.whole = buf
        return result

    def checked(self, index: int, ok: bool) -> tuple[set[int], int]:
        """A piece's check came back: (connections to ban, distinct senders)."""
        buf, sources = self.checking.pop(index)
        self.checking_bytes -= len(buf)
        senders = {key for _, _, key in sources}
        try:
            if ok:
                bad = set()
                for begin, digest, key in self.suspects.pop(index, []):
                    if digest != hashlib.sha1(buf[begin : begin + BLOCK_SIZE]).digest():
                        bad.add(key)
                return bad, len(senders)
            if len(senders) == 1:
                return senders, 1
            suspects = self.suspects.setdefault(index, [])
            for start, stop, key in sources:
                for begin in range(start, stop, BLOCK_SIZE):
                    digest = hashlib.sha1(buf[begin : min(stop, begin + BLOCK_SIZE)]).digest()
                    suspects.append((begin, digest, key))
            return set(), len(senders)
        finally:
            # the check is done (CheckAndWrite's contract): the buffer is free
            self.give_back(buf)
