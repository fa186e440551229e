"""Bitfield: BEP 3 bit order, maintained count, strict parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.core.bitfield import Bitfield, nbytes
from roost.errors import RemoteProtocolError


def bf_from(bits: str) -> Bitfield:
    bf = Bitfield(len(bits))
    for i, c in enumerate(bits):
        if c == "1":
            bf.set(i)
    return bf


def test_wire_order_high_bit_first() -> None:
    bf = bf_from("1000000001")
    assert bf.to_bytes() == b"\x80\x40"
    assert bf[0] and bf[9] and not bf[1]
    assert len(bf) == 10
    assert bf.count() == 2


def test_set_clear_count() -> None:
    bf = Bitfield(20)
    assert not bf.any() and not bf.all()
    assert bf.set(3) is True
    assert bf.set(3) is False
    assert bf.count() == 1
    assert bf.clear(3) is True
    assert bf.clear(3) is False
    assert bf.count() == 0
    for i in range(20):
        bf.set(i)
    assert bf.all()


def test_full() -> None:
    for n in (0, 1, 7, 8, 9, 16, 17):
        bf = Bitfield.full(n)
        assert bf.count() == n and bf.all()
        assert list(bf.iter_set()) == list(range(n))
        assert list(bf.iter_unset()) == []
        assert Bitfield.from_bytes(n, bf.to_bytes()) == bf


def test_bounds() -> None:
    bf = Bitfield(9)
    for bad in (-1, 9, 100):
        with pytest.raises(IndexError):
            bf[bad]
        with pytest.raises(IndexError):
            bf.set(bad)
        with pytest.raises(IndexError):
            bf.clear(bad)


def test_from_bytes_rejects_wrong_size_and_spare_bits() -> None:
    with pytest.raises(RemoteProtocolError) as e:
        Bitfield.from_bytes(9, b"\x00")
    assert e.value.ban
    with pytest.raises(RemoteProtocolError):
        Bitfield.from_bytes(9, b"\x00\x00\x00")
    with pytest.raises(RemoteProtocolError):
        Bitfield.from_bytes(9, b"\x00\x40")  # bit 9 is a spare bit
    assert Bitfield.from_bytes(9, b"\x00\x80")[8]
    assert Bitfield.from_bytes(0, b"").count() == 0


def test_copy_is_independent() -> None:
    a = bf_from("1010")
    b = a.copy()
    b.set(1)
    assert a.count() == 2 and b.count() == 3 and a != b


@given(st.lists(st.booleans(), max_size=300))
def test_roundtrip_and_iterators(bits: list[bool]) -> None:
    bf = Bitfield(len(bits))
    for i, b in enumerate(bits):
        if b:
            bf.set(i)
    assert bf.count() == sum(bits)
    assert list(bf.iter_set()) == [i for i, b in enumerate(bits) if b]
    assert list(bf.iter_unset()) == [i for i, b in enumerate(bits) if not b]
    again = Bitfield.from_bytes(len(bits), bf.to_bytes())
    assert again == bf and again.count() == bf.count()
    assert len(bf.to_bytes()) == nbytes(len(bits))


@given(st.integers(0, 100), st.binary(max_size=20))
def test_from_bytes_never_crashes(length: int, data: bytes) -> None:
    try:
        bf = Bitfield.from_bytes(length, data)
    except RemoteProtocolError:
        return
    assert bf.to_bytes() == data
    assert bf.count() == sum(bin(b).count("1") for b in data)
