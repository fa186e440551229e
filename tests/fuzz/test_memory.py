"""Memory bounds: a length read from hostile bytes never sizes an allocation.

Each case claims something huge (a 4 GiB string or frame, a 2^62-byte
payload, numwant 10^18, 10^6-deep nesting) in a few bytes; tracemalloc's peak
while parsing it must stay below LIMIT. Without the caps these would try to
allocate gigabytes (or recurse a million frames deep) and fail loudly here.
"""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from roost.core import bencode, metainfo, wire
from roost.core import tracker_client_codec as tracker_client
from roost.core import tracker_server_codec as protocol
from roost.errors import DecodeError, MetainfoError, RemoteProtocolError
from tests.fuzz.targets import _conn, handshake

LIMIT = 4 * 1024 * 1024  # 4 MiB: far below any claimed size, above parser overhead
GIB4 = 2**32
REFUSALS = (
    DecodeError,
    MetainfoError,
    RemoteProtocolError,
    protocol.TrackerRequestError,
    tracker_client.TrackerError,
)


def peak(fn: Callable[[], object]) -> int:
    """Peak traced allocation (bytes) while fn runs; its exception is swallowed."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        with contextlib.suppress(*REFUSALS):
            fn()
        _, top = tracemalloc.get_traced_memory()
        return top - base
    finally:
        tracemalloc.stop()


def _wire_trickle(header: bytes, body_bytes: int) -> Callable[[], object]:
    """A frame header that promises a lot, then `body_bytes` of body in 64 KiB reads;
    the connection must refuse it, or at least never buffer more than one capped frame."""

    def run() -> None:
        conn = _conn()
        conn.receive(handshake())
        conn.receive(header)
        for _ in range(body_bytes // 65536):
            conn.receive(b"\x00" * 65536)
            assert conn.buffered <= conn.max_frame, f"buffered {conn.buffered} bytes"

    return run


def _huge(mid: int) -> Callable[[], object]:
    return _wire_trickle(struct.pack(">IB", GIB4 - 1, mid), 8 << 20)


NESTED = b"l" * 10**6
CASES: dict[str, Callable[[], object]] = {
    "bencode 4 GiB string prefix": lambda: bencode.decode(b"%d:abc" % GIB4),
    "bencode 10^6-deep lists": lambda: bencode.decode(NESTED),
    "bencode 10^6-digit integer": lambda: bencode.decode(b"i" + b"9" * 10**6 + b"e"),
    "metainfo 4 GiB pieces prefix": lambda: metainfo.parse(
        b"d4:infod6:lengthi1e4:name1:x12:piece lengthi16384e6:pieces%d:" % GIB4
    ),
    "metainfo 2^62-byte payload": lambda: metainfo.parse(
        bencode.encode(
            {
                b"info": {
                    b"name": b"x",
                    b"piece length": 16384,
                    b"pieces": b"x" * 20,
                    b"length": 2**62,
                }
            }
        )
    ),
    "metainfo 10^6-deep info": lambda: metainfo.parse(b"d4:info" + NESTED),
    "wire 4 GiB piece frame": _huge(wire.PIECE),
    "wire 4 GiB bitfield frame": _huge(wire.BITFIELD),
    "wire 4 GiB extended frame": _huge(wire.EXTENDED),
    "wire 4 GiB unknown-id frame": _huge(200),
    "wire max extended frame trickled": _wire_trickle(
        struct.pack(">IB", wire.MAX_EXTENDED + 2, wire.EXTENDED), 1 << 20
    ),
    "wire unbound handshake then 1 MiB": lambda: _conn(None).receive(
        handshake() + b"\x00" * (wire.MAX_FRAME + 1)
    ),
    "tracker numwant 10^18": lambda: protocol.parse_announce(
        b"info_hash="
        + b"a" * 20
        + b"&peer_id="
        + b"b" * 20
        + b"&port=1&left=0&numwant=1000000000000000000"
    ),
    "tracker 10^6-digit numwant": lambda: protocol.parse_announce(b"numwant=" + b"9" * 10**6),
    "tracker reply 4 GiB peers prefix": lambda: tracker_client.parse_announce_response(
        b"d8:intervali1e5:peers%d:" % GIB4
    ),
    "tracker reply 10^6-deep": lambda: tracker_client.parse_announce_response(b"d5:peers" + NESTED),
}


@pytest.fixture(autouse=True)
def _no_tracing_left() -> Iterator[None]:
    yield
    assert not tracemalloc.is_tracing()


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_size_claims_stay_below_the_memory_limit(name: str) -> None:
    used = peak(CASES[name])
    assert used < LIMIT, f"{name}: peak {used / 2**20:.1f} MiB"


def test_huge_numwant_is_clamped() -> None:
    req = protocol.parse_announce(
        b"info_hash="
        + b"a" * 20
        + b"&peer_id="
        + b"b" * 20
        + b"&port=1&left=0&numwant=999999999999999999"
    )
    assert req.numwant == protocol.MAX_NUMWANT


@pytest.mark.parametrize(
    ("mid", "length"),
    [
        (wire.PIECE, GIB4 - 1),
        (wire.PIECE, wire.BLOCK_SIZE + 10),
        (wire.BITFIELD, GIB4 - 1),
        (wire.BITFIELD, 100),
        (wire.EXTENDED, GIB4 - 1),
        (wire.EXTENDED, wire.MAX_EXTENDED + 3),
        (wire.CHOKE, GIB4 - 1),
        (wire.REQUEST, 1 << 20),
        (200, 10),
    ],
)
def test_oversized_frame_is_refused_from_its_header_alone(mid: int, length: int) -> None:
    """The refusal comes after 5 bytes, before any of the claimed body arrives."""
    conn = _conn()
    conn.receive(handshake())
    with pytest.raises(RemoteProtocolError):
        conn.receive(struct.pack(">IB", length, mid))
    assert conn.buffered == 0


def test_the_memory_check_can_fail() -> None:
    """Calibration: a parser that did allocate from the length would be caught."""
    assert peak(lambda: bytearray(8 * 1024 * 1024)) >= LIMIT
