"""The fuzz targets: one function per parser that touches hostile bytes.

Each target takes one `bytes` input and either returns normally or raises one
of the exceptions in its `allowed` tuple (the project's documented protocol
error for that parser). Anything else escaping a target is a bug. The same
targets serve the hypothesis tests, the corpus replay (tests/fuzz/test_corpus.py)
and the long runner (bench/fuzz_long.py), so a case that fails one fails all.

Targets check a little more than "does not crash" where that is cheap: a
decoded bencode value re-encodes to the same bytes (the codec is strict and
canonical), a parsed torrent's info-hash is the SHA-1 of its raw `info`
bytes and every path in it is safe, and a wire connection never buffers more
than its frame cap.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from roost.core import bencode, metainfo, wire
from roost.core import tracker_client_codec as tracker_client
from roost.core import tracker_server_codec as protocol
from roost.errors import DecodeError, MetainfoError, RemoteProtocolError

IH = bytes(range(20))
OUR_ID = b"-RO0001-" + b"o" * 12
REMOTE_ID = b"-FZ0001-" + b"r" * 12
#: geometry of the torrent the wire target pretends to serve: 37 pieces of
#: 32 KiB, the last one short, so bitfields have spare bits and spans matter
NUM_PIECES = 37
PIECE_LENGTH = 32 * 1024
TOTAL_LENGTH = 36 * PIECE_LENGTH + 1000


def handshake(info_hash: bytes = IH, *, fast: bool = True, extended: bool = True) -> bytes:
    """A remote's valid handshake for `info_hash` with both extensions."""
    reserved = wire.reserved_bytes(fast=fast, extended=extended)
    return wire.PROTOCOL + reserved + info_hash + REMOTE_ID


# --- targets ---------------------------------------------------------------------


def t_bencode(data: bytes) -> None:
    value = bencode.decode(data)
    # strict and canonical: whatever decodes re-encodes to the very same bytes
    assert bencode.encode(value) == data, "bencode round trip changed the bytes"
    prefix_value, used = bencode.decode_prefix(data)
    assert used == len(data) and prefix_value == value


def t_metainfo(data: bytes) -> None:
    meta = metainfo.parse(data)
    assert meta.info_hash == hashlib.sha1(meta.raw_info).digest()
    assert meta.info.num_pieces * 20 == len(meta.info.pieces)
    for entry in meta.info.files:
        for part in entry.path:
            assert part not in ("", ".", "..") and "/" not in part and "\x00" not in part
    assert "/" not in meta.info.name and meta.info.name not in ("", ".", "..")


def _feed(conn: wire.PeerConnection, data: bytes, chunk: int) -> list[wire.Event]:
    events: list[wire.Event] = []
    for start in range(0, len(data), chunk):
        events += conn.receive(data[start : start + chunk])
        assert conn.buffered <= conn.max_frame, "wire buffered more than one frame"
    return events


def _conn(info_hash: bytes | None = IH) -> wire.PeerConnection:
    return wire.PeerConnection(
        info_hash,
        OUR_ID,
        NUM_PIECES,
        piece_length=PIECE_LENGTH,
        total_length=TOTAL_LENGTH,
    )


def t_wire_stream(data: bytes) -> None:
    """`data` is what a remote sends after a valid handshake (fast + BEP 10)."""
    _feed(_conn(), handshake() + data, max(1, len(data) + 68))


def t_wire_chunked(data: bytes) -> None:
    """As t_wire_stream, fed in chunks whose size the first byte picks (1..16),
    so frames split at every kind of boundary."""
    chunk = (data[0] % 16) + 1 if data else 1
    _feed(_conn(), handshake() + data[1:], chunk)


def t_wire_raw(data: bytes) -> None:
    """`data` is everything a remote sends, handshake included, to an
    incoming connection that does not know its torrent yet (info_hash=None)."""
    conn = _conn(None)
    events = conn.receive(data)
    hs = next((e for e in events if isinstance(e, wire.Handshake)), None)
    if hs is not None and hs.info_hash == IH:
        conn.accept(IH, NUM_PIECES, piece_length=PIECE_LENGTH, total_length=TOTAL_LENGTH)
    assert conn.buffered <= max(conn.max_frame, wire.MAX_FRAME)


def t_tracker_query(data: bytes) -> None:
    """An announce and a scrape query string as the tracker receives them."""
    for parse in (protocol.parse_announce, protocol.parse_scrape, protocol.parse_query):
        try:
            parse(data)
        except protocol.TrackerRequestError:
            continue
    req = protocol.parse_announce(data)
    assert 0 <= req.numwant <= protocol.MAX_NUMWANT
    assert len(req.info_hash) == 20 and len(req.peer_id) == 20


def t_tracker_response(data: bytes) -> None:
    """An announce reply and a scrape reply as the tracker client receives them."""
    with contextlib.suppress(tracker_client.TrackerError):
        tracker_client.parse_scrape_response(data)
    reply = tracker_client.parse_announce_response(data)
    for host, port in reply.peers:
        assert isinstance(host, str) and 0 < port < 65536


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    allowed: tuple[type[BaseException], ...]
    corpus: str  # the corpus directory whose files are this target's own seeds


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("bencode", t_bencode, (DecodeError,), "bencode"),
        Target("metainfo", t_metainfo, (MetainfoError,), "metainfo"),
        Target("wire_stream", t_wire_stream, (RemoteProtocolError,), "wire"),
        Target("wire_chunked", t_wire_chunked, (RemoteProtocolError,), "wire"),
        Target("wire_raw", t_wire_raw, (RemoteProtocolError,), "wire_raw"),
        Target("tracker_query", t_tracker_query, (protocol.TrackerRequestError,), "tracker_query"),
        Target(
            "tracker_response",
            t_tracker_response,
            (tracker_client.TrackerError,),
            "tracker_response",
        ),
    ]
}


def check(target: Target, data: bytes) -> str:
    """Run `target` on `data`; return "ok" or "refused"; re-raise anything else."""
    try:
        target.run(data)
    except target.allowed:
        return "refused"
    return "ok"
