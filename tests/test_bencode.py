"""Strict bencode: canonical forms, caps, spans, and property tests."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.core import bencode
from roost.errors import DecodeError


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"i0e", 0),
        (b"i-42e", -42),
        (b"i123456789012345678901234567890e", 123456789012345678901234567890),
        (b"0:", b""),
        (b"4:spam", b"spam"),
        (b"le", []),
        (b"li1e3:abce", [1, b"abc"]),
        (b"de", {}),
        (b"d1:ai1e1:bli2eee", {b"a": 1, b"b": [2]}),
    ],
)
def test_decodes_canonical_values(data: bytes, value: object) -> None:
    assert bencode.decode(data) == value
    assert bencode.encode(value) == data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"i03e", "non-canonical integer"),
        (b"i-0e", "non-canonical integer"),
        (b"i-e", "non-canonical integer"),
        (b"ie", "non-canonical integer"),
        (b"i1.5e", "non-canonical integer"),
        (b"i1", "unterminated"),
        (b"i" + b"9" * 100 + b"e", "oversized integer"),
        (b"04:spam", "non-canonical string length"),
        (b"5:spam", "past the end"),
        (b"99999999999999:x", "oversized string length"),
        (b"d1:bi1e1:ai2ee", "unsorted dictionary key"),
        (b"d1:ai1e1:ai2ee", "duplicate dictionary key"),
        (b"di1ei2ee", "key is not a byte string"),
        (b"l", "unterminated list"),
        (b"d", "unterminated dictionary"),
        (b"i1ei2e", "trailing data"),
        (b"", "unexpected end"),
        (b"x", "unexpected byte"),
        (b"-1:a", "unexpected byte"),
    ],
)
def test_rejects_non_canonical_input(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        bencode.decode(data)


def test_depth_cap() -> None:
    deep = b"l" * 65 + b"e" * 65
    with pytest.raises(DecodeError, match="nesting deeper"):
        bencode.decode(deep)
    assert bencode.decode(b"l" * 64 + b"e" * 64) is not None


def test_string_length_cap() -> None:
    with pytest.raises(DecodeError, match="exceeds the cap"):
        bencode.decode(b"10:0123456789", max_string=9)


def test_spans_give_raw_info_bytes() -> None:
    data = b"d8:announce3:url4:infod6:lengthi1e4:name1:xee"
    value, spans = bencode.decode_with_spans(data)
    start, end = spans[b"info"]
    assert data[start:end] == b"d6:lengthi1e4:name1:xe"
    assert isinstance(value, dict)


def test_encode_sorts_keys_as_raw_bytes_and_refuses_bool() -> None:
    assert bencode.encode({"b": 1, "a": 2, b"Z": 3}) == b"d1:Zi3e1:ai2e1:bi1ee"
    with pytest.raises(TypeError):
        bencode.encode(True)
    with pytest.raises(TypeError):
        bencode.encode(1.5)


values = st.recursive(
    st.integers() | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.binary(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@given(values)
def test_roundtrip(value: object) -> None:
    assert bencode.decode(bencode.encode(value)) == value


@settings(max_examples=2000)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        bencode.decode(data)


@settings(max_examples=500)
@given(values)
def test_mutated_encodings_decode_or_raise(value: object) -> None:
    data = bytearray(bencode.encode(value))
    for i in range(0, len(data), 3):
        data[i] ^= 0x5A
        with contextlib.suppress(DecodeError):
            bencode.decode(bytes(data))
