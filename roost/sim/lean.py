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

from dataclasses import dataclass

from roost.core.assembly import Assembly, Received
from roost.core.picker import PiecePicker
from roost.core.wire import Event, PeerConnection, Piece, _State
from roost.errors import RemoteProtocolError, UsageError

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
            sources = self.block_from[index] = []
            self.buffers[index] = bytearray()
        # one picker call for the whole span, as the engine's Assembly makes
        new, whole, result.cancels = picker.span_received(key, index, begin, len(block))
        result.wasted = len(block) - sum(stop - start for start, stop in new)
        sources.extend((start, stop, key) for start, stop in new)
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


class LeanBlock:
    """A block's payload without its bytes: its length, and whether a corrupt
    sender made it (a corrupt sender's payload is 0x01 bytes, an honest one's
    zeros). It answers the two questions the member and LeanAssembly ask of a
    payload: len() and find(1)."""

    __slots__ = ("corrupt", "length")

    def __init__(self, length: int, corrupt: bool) -> None:
        self.length = length
        self.corrupt = corrupt

    def __len__(self) -> int:
        return self.length

    def find(self, byte: int) -> int:
        return 0 if self.corrupt == (byte == 1) else -1


@dataclass(frozen=True, slots=True)
class BlockFrame:
    """One Piece message as the simulator delivers it under --lean: the
    header's fields and a LeanBlock instead of header + payload bytes."""

    index: int
    begin: int
    block: LeanBlock


class LeanWire(PeerConnection):
    """The member's wire codec, taking a BlockFrame where a whole Piece frame's
    bytes would be. Moving a gigabyte's payload through memory several times
    per host (the sender's fill, the frame, the codec's copy, the corruption
    scan) was most of a 1 GiB run's cost; the frame's checks are the codec's.
    Everything else (handshakes, Haves, requests) is parsed from real bytes."""

    def receive(self, data: bytes | bytearray | memoryview | BlockFrame) -> list[Event]:
        if not isinstance(data, BlockFrame):
            return super().receive(data)
        if self._state is not _State.MESSAGES or self._buf or self._body is not None:
            raise UsageError("a lean block must arrive at a message boundary")
        try:
            if len(data.block) > self._max_block:
                raise RemoteProtocolError(f"block of {len(data.block)} bytes exceeds our maximum")
            if not len(data.block):
                raise RemoteProtocolError("piece frame of 9 bytes", ban=True)
            if data.index >= self._num_pieces:
                raise RemoteProtocolError(f"piece index {data.index} out of range", ban=True)
            if self._piece_length:
                self._check_span(data.index, data.begin, len(data.block))
        except RemoteProtocolError:
            self._state = _State.DEAD
            raise
        self._bitfield_window = False
        return [Piece(data.index, data.begin, data.block)]  # type: ignore[arg-type]
