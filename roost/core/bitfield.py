"""A fixed-length bit set of pieces, in BEP 3 wire order. Pure: no I/O.

Theory of operation: bit `i` lives in byte `i >> 3` at mask `0x80 >> (i & 7)`
(the high bit of the first byte is piece 0), which is exactly the payload of a
BEP 3 Bitfield message, so `to_bytes` and `from_bytes` are copies. The number
of set bits is maintained on every `set`/`clear`, so `count`, `all` and `any`
are O(1). Spare bits past `length` in the last byte are always zero; a peer
that sends them set is breaking the protocol.

A wrong index is a local mistake (IndexError); a malformed payload from the
network is a RemoteProtocolError.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from roost.errors import RemoteProtocolError

# For each byte value, the bit offsets (0..7, BEP 3 order) that are set / unset.
_SET_BITS: tuple[tuple[int, ...], ...] = tuple(
    tuple(bit for bit in range(8) if value & (0x80 >> bit)) for value in range(256)
)
# the bits unset in a byte are the bits set in its complement
_UNSET_BITS: tuple[tuple[int, ...], ...] = tuple(_SET_BITS[value ^ 0xFF] for value in range(256))


def nbytes(length: int) -> int:
    """Bytes needed for a bitfield of `length` bits."""
    return (length + 7) >> 3


class Bitfield:
    """`length` bits, all clear at construction."""

    __slots__ = ("_bits", "_count", "_length")

    def __init__(self, length: int) -> None:
        if length < 0:
            raise ValueError(f"bitfield length must be >= 0, not {length}")
        self._length = length
        self._bits = bytearray(nbytes(length))
        self._count = 0

    @classmethod
    def from_bytes(cls, length: int, data: bytes | bytearray | memoryview) -> Bitfield:
        """Parse a BEP 3 bitfield payload for `length` pieces.

        Raises RemoteProtocolError(ban=True) when the size is wrong or a spare
        bit past the last piece is set."""
        if len(data) != nbytes(length):
            raise RemoteProtocolError(
                f"bitfield of {len(data)} bytes, expected {nbytes(length)} for {length} pieces",
                ban=True,
            )
        bits = bytearray(data)
        spare = (8 - length % 8) % 8
        if spare and bits[-1] & ((1 << spare) - 1):
            raise RemoteProtocolError("bitfield has spare bits set past the last piece", ban=True)
        bf = cls.__new__(cls)
        bf._length = length
        bf._bits = bits
        bf._count = int.from_bytes(bits, "big").bit_count() if bits else 0
        return bf

    @classmethod
    def full(cls, length: int) -> Bitfield:
        """A bitfield with every one of `length` bits set."""
        bf = cls(length)
        if length:
            bf._bits[:] = b"\xff" * len(bf._bits)
            spare = (8 - length % 8) % 8
            bf._bits[-1] = (0xFF << spare) & 0xFF
        bf._count = length
        return bf

    def _check(self, index: int) -> None:
        if not 0 <= index < self._length:
            raise IndexError(f"bit {index} out of range for a bitfield of {self._length}")

    def __getitem__(self, index: int) -> bool:
        if not 0 <= index < self._length:  # inlined _check: this is the hot path
            self._check(index)
        return bool(self._bits[index >> 3] & (0x80 >> (index & 7)))

    def __len__(self) -> int:
        return self._length

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bitfield):
            return NotImplemented
        return self._length == other._length and self._bits == other._bits

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Bitfield({self._length}, count={self._count})"

    def set(self, index: int) -> bool:
        """Set bit `index`; return True if it was clear before."""
        if not 0 <= index < self._length:
            self._check(index)
        mask = 0x80 >> (index & 7)
        byte = self._bits[index >> 3]
        if byte & mask:
            return False
        self._bits[index >> 3] = byte | mask
        self._count += 1
        return True

    def set_all_of(self, indices: Iterable[int]) -> list[int]:
        """Set each of `indices`; return those that were clear before, in order."""
        bits, length = self._bits, self._length
        new = []
        for index in indices:
            if not 0 <= index < length:
                self._check(index)
            mask = 0x80 >> (index & 7)
            byte = bits[index >> 3]
            if not byte & mask:
                bits[index >> 3] = byte | mask
                new.append(index)
        self._count += len(new)
        return new

    def unset_of(self, indices: list[int]) -> list[int]:
        """Those of `indices` (each in range) whose bit is clear, in order."""
        bits = self._bits
        return [i for i in indices if not bits[i >> 3] & (0x80 >> (i & 7))]

    def clear(self, index: int) -> bool:
        """Clear bit `index`; return True if it was set before."""
        if not 0 <= index < self._length:
            self._check(index)
        mask = 0x80 >> (index & 7)
        byte = self._bits[index >> 3]
        if not byte & mask:
            return False
        self._bits[index >> 3] = byte & ~mask
        self._count -= 1
        return True

    def count(self) -> int:
        """Number of set bits, O(1)."""
        return self._count

    def all(self) -> bool:
        return self._count == self._length

    def any(self) -> bool:
        return self._count > 0

    def raw(self) -> bytearray:
        """The bits themselves, in BEP 3 order (bit i: byte i >> 3, mask
        0x80 >> (i & 7)), for hot loops that test many bits of indices known to
        be in range. Read only: writing it would break count()."""
        return self._bits

    def to_bytes(self) -> bytes:
        return bytes(self._bits)

    def iter_set(self) -> Iterator[int]:
        """Indices of set bits, ascending. Skips whole zero bytes."""
        table = _SET_BITS
        for byte_index, value in enumerate(self._bits):
            if value:
                base = byte_index << 3
                for bit in table[value]:
                    yield base + bit

    def iter_unset(self) -> Iterator[int]:
        """Indices of clear bits below `len(self)`, ascending."""
        table = _UNSET_BITS
        length = self._length
        for byte_index, value in enumerate(self._bits):
            if value != 0xFF:
                base = byte_index << 3
                for bit in table[value]:
                    if base + bit >= length:
                        return
                    yield base + bit

    def copy(self) -> Bitfield:
        bf = Bitfield.__new__(Bitfield)
        bf._length = self._length
        bf._bits = bytearray(self._bits)
        bf._count = self._count
        return bf
