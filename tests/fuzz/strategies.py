"""Hypothesis strategies that produce inputs near the shape each parser expects.

Pure random bytes die at the first byte of most parsers; these build
almost-valid inputs (real structure, hostile values) so the fuzzer reaches
the checks deep inside. Shared by the suite and bench/fuzz_long.py.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any
from urllib.parse import quote_from_bytes

from hypothesis import strategies as st

from roost.core import bencode
from roost.core.bitfield import nbytes
from tests.fuzz.targets import IH, NUM_PIECES, PIECE_LENGTH

# --- bencode values -------------------------------------------------------------------

_ints = st.one_of(
    st.integers(-5, 70_000),
    st.sampled_from([0, -1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63), 10**40]),
)
_strs = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"..", b".", b"", b"/", b"/etc/passwd", b"a/b", b"con", b"\x00", b"\xff"]),
)
_KEYS = [
    b"info",
    b"name",
    b"length",
    b"files",
    b"path",
    b"pieces",
    b"piece length",
    b"announce",
    b"announce-list",
    b"private",
    b"peers",
    b"peers6",
    b"interval",
    b"failure reason",
    b"m",
    b"v",
    b"p",
    b"reqq",
    b"metadata_size",
]
_keys = st.one_of(_strs, st.sampled_from(_KEYS))
values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(_ints, _strs),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_keys, inner, max_size=5)),
    max_leaves=20,
)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """`base` bytes with a few byte-level edits: the classic mutation fuzzer step."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "digits"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.sampled_from([b"9", b"0", b"-", b"4294967296", b"e", b"l"]))
    return bytes(data)


encoded_values = values.map(bencode.encode)
bencode_inputs = st.one_of(st.binary(max_size=200), encoded_values, mutated(encoded_values))


# --- metainfo ------------------------------------------------------------------------------

_good_names = st.one_of(
    st.sampled_from([b"release", b"a.tar", b"bin", b"x-1.0"]),
    st.text("abxyz.-_\u00e90", min_size=1, max_size=8)
    .filter(lambda t: t not in (".", ".."))
    .map(str.encode),
)
_bad_names = st.one_of(
    st.sampled_from([b"..", b".", b"", b"/abs", b"a/b", b"NUL", b"\xff", b"a\x00", b"a\n"]),
    st.binary(min_size=1, max_size=12),
)
_FIELDS = ["name", "piece length", "pieces", "length", "files", "path", "private", "top"]


@st.composite
def torrents(draw: st.DrawFn) -> bytes:
    """A .torrent that is valid about half the time; otherwise one field
    (or two) gets a hostile value: unsafe names, wrong types, lying counts."""
    bad = set(draw(st.lists(st.sampled_from(_FIELDS), max_size=2)))
    piece_length = draw(st.sampled_from([16384, 32768, 65536]))
    if "piece length" in bad:
        piece_length = draw(st.sampled_from([1, 0, -5, 3, 2**26 + 1, 2**40]))
    name = draw(_bad_names if "name" in bad else _good_names)
    multi = draw(st.booleans())
    files: list[tuple[list[bytes], int]] = []
    if multi:
        good_path = st.lists(_good_names, min_size=1, max_size=3)
        bad_path = st.lists(st.one_of(_good_names, _bad_names), max_size=4)
        paths = bad_path if "path" in bad else good_path
        files = draw(st.lists(st.tuples(paths, st.integers(0, 70_000)), min_size=1, max_size=4))
        total = sum(n for _, n in files)
    else:
        total = draw(st.integers(0, 200_000))
    if "length" in bad:
        total = draw(st.sampled_from([2**62, -3, 2**64]))
    npieces = -(-max(0, total) // piece_length) if piece_length > 0 else 0
    npieces = min(npieces, 64)
    pieces = hashlib.sha1(b"p").digest() * npieces
    if "pieces" in bad:
        pieces = draw(st.sampled_from([pieces[:-20], pieces + b"x", pieces + bytes(20), b""]))
    info: dict[bytes, Any] = {b"name": name, b"piece length": piece_length, b"pieces": pieces}
    if multi:
        info[b"files"] = [{b"length": n, b"path": p} for p, n in files]
        if "files" in bad:
            info[b"files"] = draw(st.one_of(values, st.just([]), st.just([{b"length": 1}])))
    else:
        info[b"length"] = total
        if "files" in bad:
            info[b"files"] = draw(values)
    if draw(st.booleans()):
        info[b"private"] = draw(values) if "private" in bad else 1
    top: dict[bytes, Any] = {b"info": info, b"announce": b"http://t/announce"}
    if draw(st.booleans()):
        top[b"announce-list"] = [[b"http://a"], [b"http://b", b"http://c"]]
    if "top" in bad:
        key = draw(st.sampled_from([b"announce", b"announce-list", b"comment", b"creation date"]))
        top[key] = draw(values)
    return bencode.encode(top)


metainfo_inputs = st.one_of(torrents(), mutated(torrents()), bencode_inputs)


# --- wire ---------------------------------------------------------------------------------------

_U32 = st.one_of(
    st.integers(0, NUM_PIECES + 1),
    st.sampled_from([PIECE_LENGTH - 1, PIECE_LENGTH, 16384, 2**31, 2**32 - 1]),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One frame: usually well formed for its id, sometimes with a lying length."""
    mid = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 20, 21, 255]))
    if mid in (4, 13, 17):
        payload = struct.pack(">I", draw(_U32))
    elif mid in (6, 8, 16):
        payload = struct.pack(">III", draw(_U32), draw(_U32), draw(_U32))
    elif mid == 7:
        payload = struct.pack(">II", draw(_U32), draw(_U32)) + bytes(draw(st.integers(0, 300)))
    elif mid == 5:
        size = draw(st.sampled_from([nbytes(NUM_PIECES), 0, 1, 100]))
        payload = draw(st.binary(min_size=size, max_size=size))
    elif mid == 9:
        payload = struct.pack(">H", draw(st.integers(0, 65535)))
    elif mid == 20:
        ext = draw(st.integers(0, 3))
        body = draw(st.one_of(encoded_values, st.binary(max_size=30)))
        payload = bytes([ext]) + body
    else:
        payload = draw(st.binary(max_size=4))
    length = 1 + len(payload)
    lie = draw(st.integers(0, 9))
    if lie == 0:
        length = draw(st.sampled_from([0, 1, length - 1, length + 1, 2**20 + 14, 2**32 - 1]))
    return struct.pack(">IB", max(0, length), mid) + payload


streams = st.lists(frames(), max_size=12).map(b"".join)
wire_inputs = st.one_of(streams, mutated(streams), st.binary(max_size=200))


@st.composite
def raw_connections(draw: st.DrawFn) -> bytes:
    """Everything a remote sends from the first byte: a (maybe broken) handshake, then frames."""
    from tests.fuzz.targets import handshake

    info_hash = draw(st.sampled_from([IH, b"\xee" * 20]))
    hs = bytearray(handshake(info_hash))
    if draw(st.integers(0, 3)) == 0:
        pos = draw(st.integers(0, 67))
        hs[pos] ^= 1 << draw(st.integers(0, 7))
    return bytes(hs) + draw(streams)


# --- tracker query and reply ---------------------------------------------------------------------

_PARAM_NAMES = [
    "info_hash",
    "peer_id",
    "port",
    "uploaded",
    "downloaded",
    "left",
    "event",
    "compact",
    "numwant",
    "no_peer_id",
    "key",
    "trackerid",
    "ip",
    "location",
    "x",
]
_param_values = st.one_of(
    st.binary(max_size=24),
    st.sampled_from([IH, b"-TR3000-" + b"\xfe" * 12]),
    st.integers(-1, 2**64).map(lambda n: str(n).encode()),
    st.sampled_from([b"started", b"stopped", b"completed", b"paused", b"::1", b"10.0.0.1"]),
)


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    base = {
        "info_hash": IH,
        "peer_id": b"-TR3000-" + b"\xfe" * 12,
        "port": b"6881",
        "uploaded": b"0",
        "downloaded": b"0",
        "left": b"10",
    }
    params: list[tuple[str, bytes]] = [
        (k, v) for k, v in base.items() if draw(st.integers(0, 7)) != 0
    ]
    for _ in range(draw(st.integers(0, 4))):
        params.append((draw(st.sampled_from(_PARAM_NAMES)), draw(_param_values)))
    parts = []
    for name, value in params:
        how = draw(st.integers(0, 5))
        if how == 0:  # raw, unescaped bytes
            parts.append(name.encode() + b"=" + value)
        elif how == 1:  # lower-case escapes, "+" for spaces
            quoted = quote_from_bytes(value, safe="").lower().replace("%20", "+")
            parts.append(f"{name}={quoted}".encode())
        else:
            parts.append(f"{name}={quote_from_bytes(value, safe='')}".encode())
    return b"&".join(parts)


tracker_query_inputs = st.one_of(queries(), mutated(queries()), st.binary(max_size=200))

_peer_blobs = st.one_of(
    st.binary(max_size=40),
    st.lists(st.binary(min_size=6, max_size=6), max_size=5).map(b"".join),
    st.lists(st.binary(min_size=18, max_size=18), max_size=3).map(b"".join),
    st.lists(
        st.fixed_dictionaries({b"ip": st.one_of(_strs, st.just(b"10.1.2.3")), b"port": _ints}),
        max_size=4,
    ),
    values,
)


@st.composite
def replies(draw: st.DrawFn) -> bytes:
    body: dict[bytes, Any] = {}
    for key in [b"interval", b"min interval", b"complete", b"incomplete"]:
        if draw(st.booleans()):
            body[key] = draw(st.one_of(_ints, values))
    for key in [b"peers", b"peers6"]:
        if draw(st.booleans()):
            body[key] = draw(_peer_blobs)
    for key in [b"failure reason", b"warning message", b"tracker id", b"files"]:
        if draw(st.integers(0, 5)) == 0:
            body[key] = draw(values)
    return bencode.encode(body)


tracker_response_inputs = st.one_of(replies(), mutated(replies()), bencode_inputs)
