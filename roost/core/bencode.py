"""Strict bencoding (BEP 3). Pure: no I/O.

Why our own codec: the maintained PyPI codecs (bencode.py, bencodepy,
fastbencode) accept non-canonical input (leading zeros, "-0", unsorted or
duplicate keys), have no depth or length caps, and none exposes the raw byte
span of a nested value, which the info-hash needs (SHA-1 of the `info` bytes
exactly as they were in the file). The codec is ~150 lines; owning it is
cheaper than patching around a library.

Values: int, bytes, list, dict[bytes, value]. `encode` also takes str (as
UTF-8) and tuples for convenience; `decode` always returns bytes and lists.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from roost.errors import DecodeError

Value = int | bytes | list["Value"] | dict[bytes, "Value"]

MAX_DEPTH = 64
#: default cap on one byte string; the `pieces` string of a 64 GiB payload in
#: 16 KiB pieces is 80 MiB, so 128 MiB admits every sane torrent.
MAX_STRING = 128 * 1024 * 1024
_MAX_INT_DIGITS = 64  # far beyond any 64-bit length; stops int("9"*10**6) DoS


def encode(value: Any) -> bytes:
    """Bencode `value`. Dict keys are sorted as raw bytes, as BEP 3 requires."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("bencode: value nested too deeply")
    if isinstance(value, bool):  # bool is an int subclass; refuse the surprise
        raise TypeError("bencode: bool is not encodable; use 0 or 1")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, Mapping):
        items: list[tuple[bytes, Any]] = []
        for key, item in value.items():
            bkey = key.encode("utf-8") if isinstance(key, str) else key
            if not isinstance(bkey, bytes):
                raise TypeError(f"bencode: dict key must be bytes or str, not {type(key).__name__}")
            items.append((bkey, item))
        items.sort(key=lambda kv: kv[0])
        for (a, _), (b, _) in itertools.pairwise(items):
            if a == b:
                raise ValueError(f"bencode: duplicate dict key {a!r}")
        out.append(b"d")
        for bkey, item in items:
            out.append(b"%d:" % len(bkey))
            out.append(bkey)
            _encode(item, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, Sequence):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    else:
        raise TypeError(f"bencode: cannot encode {type(value).__name__}")


class _Decoder:
    """Recursive-descent decoder over one buffer; depth is capped."""

    def __init__(self, data: bytes, max_depth: int, max_string: int) -> None:
        self.data = data
        self.max_depth = max_depth
        self.max_string = max_string
        #: raw spans of the top-level dictionary's values, by key
        self.spans: dict[bytes, tuple[int, int]] = {}

    def fail(self, pos: int, what: str) -> DecodeError:
        return DecodeError(f"invalid bencoding at byte {pos}: {what}")

    def value(self, pos: int, depth: int) -> tuple[Value, int]:
        data = self.data
        if pos >= len(data):
            raise self.fail(pos, "unexpected end of data")
        lead = data[pos]
        if lead == 0x69:  # i
            return self.integer(pos)
        if 0x30 <= lead <= 0x39:
            return self.string(pos)
        if depth >= self.max_depth:
            raise self.fail(pos, f"nesting deeper than {self.max_depth}")
        if lead == 0x6C:  # l
            items: list[Value] = []
            pos += 1
            while True:
                if pos >= len(data):
                    raise self.fail(pos, "unterminated list")
                if data[pos] == 0x65:
                    return items, pos + 1
                item, pos = self.value(pos, depth + 1)
                items.append(item)
        if lead == 0x64:  # d
            return self.dictionary(pos, depth)
        raise self.fail(pos, f"unexpected byte {bytes([lead])!r}")

    def dictionary(self, pos: int, depth: int) -> tuple[Value, int]:
        data = self.data
        result: dict[bytes, Value] = {}
        last: bytes | None = None
        pos += 1
        while True:
            if pos >= len(data):
                raise self.fail(pos, "unterminated dictionary")
            if data[pos] == 0x65:
                return result, pos + 1
            if not 0x30 <= data[pos] <= 0x39:
                raise self.fail(pos, "dictionary key is not a byte string")
            key, pos = self.string(pos)
            assert isinstance(key, bytes)
            if last is not None and key <= last:
                what = "duplicate" if key == last else "unsorted"
                raise self.fail(pos, f"{what} dictionary key {key[:40]!r}")
            last = key
            start = pos
            result[key], pos = self.value(pos, depth + 1)
            if depth == 0:
                self.spans[key] = (start, pos)

    def integer(self, pos: int) -> tuple[Value, int]:
        data = self.data
        end = data.find(b"e", pos + 1, pos + 2 + _MAX_INT_DIGITS)
        if end < 0:
            raise self.fail(pos, "unterminated or oversized integer")
        text = data[pos + 1 : end]
        if not _canonical_int(text):
            raise self.fail(pos, f"non-canonical integer {text[:20]!r}")
        return int(text), end + 1

    def string(self, pos: int) -> tuple[Value, int]:
        data = self.data
        colon = data.find(b":", pos, pos + 12)
        if colon < 0:
            raise self.fail(pos, "bad or oversized string length")
        text = data[pos:colon]
        if not text.isdigit() or (len(text) > 1 and text[0] == 0x30):
            raise self.fail(pos, f"non-canonical string length {text!r}")
        length = int(text)
        if length > self.max_string:
            raise self.fail(pos, f"string of {length} bytes exceeds the cap of {self.max_string}")
        start = colon + 1
        if start + length > len(data):
            raise self.fail(pos, "string runs past the end of data")
        return data[start : start + length], start + length


def _canonical_int(text: bytes) -> bool:
    digits = text[1:] if text[:1] == b"-" else text
    if not digits or not digits.isdigit():
        return False
    # a leading zero, or "-0", is not canonical
    return not (digits[0] == 0x30 and (len(digits) > 1 or text[:1] == b"-"))


def decode(data: bytes, *, max_depth: int = MAX_DEPTH, max_string: int = MAX_STRING) -> Value:
    """Decode exactly one bencoded value that spans all of `data`."""
    value, _ = decode_with_spans(data, max_depth=max_depth, max_string=max_string)
    return value


def decode_with_spans(
    data: bytes, *, max_depth: int = MAX_DEPTH, max_string: int = MAX_STRING
) -> tuple[Value, dict[bytes, tuple[int, int]]]:
    """Decode `data`; also return the raw (start, end) byte span of each
    top-level dictionary value, so callers can hash `info` as it was written."""
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("bencode: decode needs bytes")
    decoder = _Decoder(bytes(data), max_depth, max_string)
    value, end = decoder.value(0, 0)
    if end != len(data):
        raise decoder.fail(end, "trailing data after the value")
    return value, decoder.spans


def decode_prefix(
    data: bytes, *, max_depth: int = MAX_DEPTH, max_string: int = MAX_STRING
) -> tuple[Value, int]:
    """Decode one value at the start of `data`; return it and the bytes used.

    BEP 9 metadata messages carry raw bytes after a bencoded header."""
    decoder = _Decoder(bytes(data), max_depth, max_string)
    return decoder.value(0, 0)
