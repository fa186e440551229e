"""Piece assembly and smart ban. Pure.

Theory of operation. Downloaded blocks are copied into a per-piece buffer,
remembering which connection sent each 16 KiB block. A full piece leaves as a
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


#: (block offset, SHA-1 of the block as received, the connection that sent it)
Suspect = tuple[int, bytes, int]


class Assembly:
    def __init__(self, piece_length: int) -> None:
        self.buffers: dict[int, bytearray] = {}
        self.block_from: dict[int, dict[int, int]] = {}
        self.checking: dict[int, tuple[bytearray, dict[int, int]]] = {}
        self.checking_bytes = 0
        self.suspects: dict[int, list[Suspect]] = {}
        # pieces waiting for hash + write may hold at most this much memory
        self.max_checking_bytes = max(64 * 1024 * 1024, 8 * piece_length)

    def backlogged(self) -> bool:
        return self.checking_bytes >= self.max_checking_bytes

    def add(
        self, picker: PiecePicker, key: int, index: int, begin: int, block: bytes | bytearray,
        size: int,
    ) -> Received:
        """Copy a received block (possibly several picker blocks) into its piece."""
        result = Received()
        if index in self.checking:
            result.wasted = len(block)
            return result
        new, whole, result.cancels = picker.span_received(key, index, begin, len(block))
        bs, end = picker.block_size, begin + len(block)
        buf = self.buffers.get(index)
        if buf is None and len(block) == size and len(new) * bs >= size \
                and isinstance(block, bytearray):
            # The whole piece in one message (a roost peer's big block), every
            # block of it new: the buffer it was received into becomes the
            # piece, without a copy. The sender hands it over (wire.Piece).
            buf = block
            self.block_from[index] = dict.fromkeys(new, key)
        else:
            if buf is None:
                buf = self.buffers[index] = bytearray(size)
                self.block_from[index] = {}
            self._copy_new(buf, self.block_from[index], key, new, bs, begin, end, block)
        result.wasted = len(block) - sum(min(bs, end - at) for at in new)
        if whole:
            self.buffers.pop(index, None)
            self.checking[index] = (buf, self.block_from.pop(index))
            self.checking_bytes += len(buf)
            result.whole = buf
        return result

    @staticmethod
    def _copy_new(
        buf: bytearray, sources: dict[int, int], key: int, new: list[int], bs: int,
        begin: int, end: int, block: bytes | bytearray,
    ) -> None:
        """Copy the new blocks of a received span into the piece, a run at a time."""
        view = memoryview(block)  # slices without copying; the copy is into buf
        run = 0  # copy each run of contiguous new blocks at once (all of them, mostly)
        for i, at in enumerate(new):
            sources[at] = key
            if i + 1 < len(new) and new[i + 1] == at + bs:
                continue
            start, stop = new[run], min(at + bs, end)
            buf[start:stop] = view[start - begin : stop - begin]
            run = i + 1

    def checked(self, index: int, ok: bool) -> tuple[set[int], int]:
        """A piece's check came back: (connections to ban, distinct senders)."""
        buf, sources = self.checking.pop(index)
        self.checking_bytes -= len(buf)
        senders = set(sources.values())
        if ok:
            bad = set()
            for begin, digest, key in self.suspects.pop(index, []):
                if digest != hashlib.sha1(buf[begin : begin + BLOCK_SIZE]).digest():
                    bad.add(key)
            return bad, len(senders)
        if len(senders) == 1:
            return senders, 1
        suspects = self.suspects.setdefault(index, [])
        for begin, key in sources.items():
            digest = hashlib.sha1(buf[begin : begin + BLOCK_SIZE]).digest()
            suspects.append((begin, digest, key))
        return set(), len(senders)
