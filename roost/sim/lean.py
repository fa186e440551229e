"""A piece assembly that counts blocks instead of keeping their bytes. Pure.

roost.core.assembly.Assembly copies every received block into a buffer of
the piece's size until the piece is checked: in a real host that is a few
pieces' worth of memory, in a simulation of a thousand hosts it is gigabytes.
`LeanAssembly` makes the same calls on the picker (so the member's requests,
endgame and cancels are unchanged) but keeps only who sent each block and
whether any of it was corrupt (a corrupt sender's payload is 0x01 bytes, see
roost.sim.world). The piece it hands to CheckAndWrite is one byte: 0x01 when
corrupt. Smart ban across several senders needs the bytes, so it is not
modelled here; a piece that one peer sent whole and corrupt still bans it.
"""

from __future__ import annotations

from roost.core.assembly import Assembly, Received
from roost.core.picker import PiecePicker

_CLEAN = bytes(1)
_CORRUPT = b"\x01"


class LeanAssembly(Assembly):
    def __init__(self, piece_length: int) -> None:
        super().__init__(piece_length)
        self.corrupt: set[int] = set()

    def add(
        self, picker: PiecePicker, key: int, index: int, begin: int, block: bytes | bytearray,
        size: int, *, owned: bool = False,
    ) -> Received:
        result = Received()
        if index in self.checking:
            result.wasted = len(block)
            return result
        sources = self.block_from.get(index)
        if sources is None:
            sources = self.block_from[index] = {}
            self.buffers[index] = bytearray()
        # one picker call for the whole span, as the engine's Assembly makes
        new, whole, result.cancels = picker.span_received(key, index, begin, len(block))
        bs, end = picker.block_size, begin + len(block)
        result.wasted = len(block) - sum(min(bs, end - at) for at in new)
        for at in new:
            sources[at] = key
        if new and block.find(1) != -1:
            self.corrupt.add(index)
        if whole:
            del self.buffers[index]
            marker = bytearray(_CORRUPT if index in self.corrupt else _CLEAN)
            self.corrupt.discard(index)
            self.checking[index] = (marker, self.block_from.pop(index))
            self.checking_bytes += len(marker)
            result.whole = marker
        return result
