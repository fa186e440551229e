"""BitTorrent peer wire protocol (BEP 3, Fast BEP 6, Extension protocol BEP 10). Sans-IO.

Theory of operation
-------------------
`PeerConnection` is one TCP connection's codec and protocol checker. It never
touches a socket: the engine feeds it whatever bytes arrived (`receive`) and
gets back a list of events (frozen dataclasses); every `send_*` method returns
the bytes to write.

Receive path. Bytes accumulate in one bytearray only when a frame is split
across reads; a read that starts on a frame boundary is parsed straight from
the caller's buffer. Parsing walks an offset over a memoryview and parses as
many frames as are complete; the leftover partial frame is kept (one
compaction per call, never per frame). A Piece block is copied exactly once,
out of the memoryview into `bytes`. Nothing is ever allocated from a length
read off the network: as soon as a frame's 5-byte header is in, its length is
checked against the cap for its message id (exact size for fixed messages,
`max_block + 9` for Piece, the piece count for Bitfield, `MAX_EXTENDED` for
BEP 10), and a frame that is too long is refused before we wait for its body.

State. The first 68 bytes are the handshake. With an expected info hash, a
wrong one is refused; with `info_hash=None` (an incoming connection on a port
that serves several torrents) the Handshake event is emitted, parsing pauses,
and the caller decides with `accept(info_hash, num_pieces)`. Fast and
extension support are negotiated from both reserved fields. Bitfield, HaveAll
and HaveNone are accepted only before any other availability or data
message; in front of them we tolerate KeepAlive, Port, AllowedFast and
Extended messages, because real clients (Transmission) send their BEP 10
handshake before the bitfield. Violations raise RemoteProtocolError;
`ban=True` when the bytes look broken on purpose or by fault (wrong frame
sizes, indices out of range, spare bits set), `ban=False` for mere disagreement
(unknown message ids, unnegotiated extensions, a block bigger than we allow,
messages out of order).
Given `piece_length` and `total_length`, a requested or delivered block must
also fit inside its piece. After an error the connection is dead and every
further call raises.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple, TypeAlias

from roost.core import bencode
from roost.core.bitfield import Bitfield, nbytes
from roost.errors import DecodeError, RemoteProtocolError, UsageError

PROTOCOL = b"\x13BitTorrent protocol"
HANDSHAKE_LEN = 68
BLOCK_SIZE = 16384
#: largest block we ever accept, even when a bigger block size was negotiated
MAX_BLOCK = 1 << 20
#: largest BEP 10 payload (after the extended message id) we accept
MAX_EXTENDED = 1 << 20
#: absolute cap on a whole frame (4-byte length prefix included) for data
#: messages: a Piece carrying MAX_BLOCK. Bitfield frames are capped by the
#: piece count and Extended frames by MAX_EXTENDED (see PeerConnection.max_frame).
MAX_FRAME = MAX_BLOCK + 13
# a Piece body at least this big that a read leaves incomplete is received in
# place (see PeerConnection._fill_body); smaller ones are buffered as frames are
STREAM_BODY = 2 * BLOCK_SIZE

# reserved-field bits
FAST_BYTE, FAST_MASK = 7, 0x04  # BEP 6
EXTENDED_BYTE, EXTENDED_MASK = 5, 0x10  # BEP 10
DHT_BYTE, DHT_MASK = 7, 0x01  # BEP 5

# message ids
CHOKE, UNCHOKE, INTERESTED, NOT_INTERESTED = 0, 1, 2, 3
HAVE, BITFIELD, REQUEST, PIECE, CANCEL, PORT = 4, 5, 6, 7, 8, 9
SUGGEST, HAVE_ALL, HAVE_NONE, REJECT, ALLOWED_FAST = 13, 14, 15, 16, 17
EXTENDED = 20

_U32 = struct.Struct(">I")
_II = struct.Struct(">II")
_III = struct.Struct(">III")
_H = struct.Struct(">H")
_HDR = struct.Struct(">IB")  # length, id
_HDR_I = struct.Struct(">IBI")  # length, id, index
_HDR_II = struct.Struct(">IBII")  # length, id, index, begin
_HDR_III = struct.Struct(">IBIII")  # length, id, index, begin, length
_HDR_H = struct.Struct(">IBH")  # length, id, port

# payload length (id byte included) of every fixed-size message
_FIXED_LEN = {
    CHOKE: 1, UNCHOKE: 1, INTERESTED: 1, NOT_INTERESTED: 1, HAVE: 5, REQUEST: 13,
    CANCEL: 13, PORT: 3, SUGGEST: 5, HAVE_ALL: 1, HAVE_NONE: 1, REJECT: 13, ALLOWED_FAST: 5,
}  # fmt: skip
_FAST_IDS = frozenset({SUGGEST, HAVE_ALL, HAVE_NONE, REJECT, ALLOWED_FAST})
# messages that may come before the Bitfield / HaveAll / HaveNone without closing its window
_PRELUDE_IDS = frozenset({PORT, ALLOWED_FAST, EXTENDED})


@dataclass(frozen=True, slots=True)
class Handshake:
    """The remote handshake. `fast`/`extended` are the bits the remote set;
    the negotiated values are PeerConnection.fast / .extended."""

    info_hash: bytes
    peer_id: bytes
    fast: bool
    extended: bool
    reserved: bytes = bytes(8)


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Keep-alive: a frame of length 0."""


@dataclass(frozen=True, slots=True)
class Choke:
    """Choke (id 0): the sender will not serve our requests."""


@dataclass(frozen=True, slots=True)
class Unchoke:
    """Unchoke (id 1): the sender will serve our requests."""


@dataclass(frozen=True, slots=True)
class Interested:
    """Interested (id 2): the sender wants pieces we have."""


@dataclass(frozen=True, slots=True)
class NotInterested:
    """Not interested (id 3): the sender wants nothing we have."""


@dataclass(frozen=True, slots=True)
class Have:
    """Have (id 4): the sender now has piece `index`."""

    index: int


@dataclass(slots=True)
class Haves:
    """Consecutive Have frames of one read, in order (`PeerConnection.batch_haves`).

    A swarm member gets about N Haves per piece, several per read (a peer
    sends its Haves in batches): one event for the run of them lets the
    member update availability once instead of once per frame."""

    indices: list[int]


@dataclass(frozen=True, slots=True, eq=False)
class BitfieldMsg:
    """Bitfield (id 5): every piece the sender has."""

    bitfield: Bitfield

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BitfieldMsg) and self.bitfield == other.bitfield


class Block(NamedTuple):
    """(index, begin, length) of a block: what is asked for, queued to send, cancelled or
    rejected. The one form of that triple in the core (hashable, so it keys the picker's
    request sets and is found in a peer's upload queue). A NamedTuple, not a frozen
    dataclass: its hash and equality are the tuple's, in C; the picker hashes a few
    per 16 KiB received, and the dataclass's Python __hash__ and __eq__ were about 8 % of
    the fetcher's main-thread CPU in a 1 GiB pair (profiled, issue 21)."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, which nothing calls
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Request:
    """Request (id 6): `length` bytes of piece `index` from offset `begin`."""

    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Piece:
    """Piece (id 7): a block of piece `index` from offset `begin`."""

    index: int
    begin: int
    block: bytes | bytearray  # a big block's is the bytearray it was received into


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel (id 8): withdraws a Request."""

    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Port:
    """Port (id 9): the sender's DHT port (BEP 5)."""

    port: int


@dataclass(frozen=True, slots=True)
class SuggestPiece:
    """Suggest piece (id 13, BEP 6): a piece the sender would like us to request."""

    index: int


@dataclass(frozen=True, slots=True)
class HaveAll:
    """Have all (id 14, BEP 6): the sender has every piece."""


@dataclass(frozen=True, slots=True)
class HaveNone:
    """Have none (id 15, BEP 6): the sender has no piece."""


@dataclass(frozen=True, slots=True)
class RejectRequest:
    """Reject request (id 16, BEP 6): the sender will not serve this Request."""

    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class AllowedFast:
    """Allowed fast (id 17, BEP 6): we may request piece `index` while choked."""

    index: int


@dataclass(frozen=True, slots=True)
class ExtendedHandshake:
    """BEP 10 handshake (extended message id 0): the decoded dictionary, with
    tolerant readers for the well-known keys (a missing or ill-typed value
    reads as absent rather than failing)."""

    data: dict[bytes, Any] = field(default_factory=dict)

    @property
    def m(self) -> dict[str, int]:
        """Extension name -> the message id the remote wants us to use (0 = disabled)."""
        raw = self.data.get(b"m")
        if not isinstance(raw, dict):
            return {}
        return {
            k.decode("utf-8", "replace"): v
            for k, v in raw.items()
            if isinstance(v, int) and 0 <= v <= 255
        }

    @property
    def v(self) -> str | None:
        """Client name and version."""
        raw = self.data.get(b"v")
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else None

    @property
    def reqq(self) -> int | None:
        """How many outstanding requests the remote queues without dropping."""
        raw = self.data.get(b"reqq")
        return raw if isinstance(raw, int) and raw > 0 else None

    @property
    def p(self) -> int | None:
        """The remote's listen port."""
        raw = self.data.get(b"p")
        return raw if isinstance(raw, int) and 0 < raw < 65536 else None

    @property
    def metadata_size(self) -> int | None:
        raw = self.data.get(b"metadata_size")
        return raw if isinstance(raw, int) and raw > 0 else None

    def get_int(self, key: bytes) -> int | None:
        raw = self.data.get(key)
        return raw if isinstance(raw, int) else None


@dataclass(frozen=True, slots=True)
class Extended:
    """A BEP 10 message other than the handshake; `ext_id` is OUR id for the
    extension (the one we advertised in our handshake's `m`)."""

    ext_id: int
    payload: bytes


Message: TypeAlias = (
    KeepAlive | Choke | Unchoke | Interested | NotInterested | Have | Haves | BitfieldMsg
    | Request
    | Piece | Cancel | Port | SuggestPiece | HaveAll | HaveNone | RejectRequest | AllowedFast
    | ExtendedHandshake | Extended
)  # fmt: skip
Event: TypeAlias = Handshake | Message

_KEEPALIVE = KeepAlive()
_SIMPLE: dict[int, Message] = {
    CHOKE: Choke(), UNCHOKE: Unchoke(), INTERESTED: Interested(),
    NOT_INTERESTED: NotInterested(), HAVE_ALL: HaveAll(), HAVE_NONE: HaveNone(),
}  # fmt: skip


def reserved_bytes(*, fast: bool, extended: bool, dht: bool = False) -> bytes:
    """The 8-byte reserved field advertising the given extensions."""
    res = bytearray(8)
    if fast:
        res[FAST_BYTE] |= FAST_MASK
    if extended:
        res[EXTENDED_BYTE] |= EXTENDED_MASK
    if dht:
        res[DHT_BYTE] |= DHT_MASK
    return bytes(res)


def allowed_fast_set(ip_bytes: bytes, info_hash: bytes, num_pieces: int, k: int) -> list[int]:
    """BEP 6 canonical allowed-fast set of `k` pieces for a peer at `ip_bytes`.

    IPv4 (4 bytes) follows the BEP exactly (the /24 prefix is hashed). BEP 6
    defines no IPv6 rule; for 16-byte addresses we hash the /48 prefix, which
    is only our local choice (the set is computed by the uploader and sent as
    AllowedFast messages, so the receiver never recomputes it)."""
    if len(ip_bytes) == 4:
        x = bytes(ip_bytes[:3]) + b"\x00"
    elif len(ip_bytes) == 16:
        x = bytes(ip_bytes[:6]) + bytes(10)
    else:
        raise ValueError("allowed_fast_set needs a 4- or 16-byte packed IP address")
    if len(info_hash) != 20:
        raise ValueError("info_hash must be 20 bytes")
    k = min(k, num_pieces)
    x += info_hash
    result: list[int] = []
    seen: set[int] = set()
    while len(result) < k:
        x = hashlib.sha1(x).digest()
        for j in range(0, 20, 4):
            if len(result) >= k:
                break
            index = _U32.unpack_from(x, j)[0] % num_pieces
            if index not in seen:
                seen.add(index)
                result.append(index)
    return result


class _State(Enum):
    HANDSHAKE = "handshake"
    AWAIT_ACCEPT = "await-accept"
    MESSAGES = "messages"
    DEAD = "dead"


def have_messages(indices: list[int], num_pieces: int) -> bytes:
    """Have messages for `indices`, one after the other. The bytes are the same
    for every peer, so a batch is encoded once and sent to all of them."""
    for index in indices:
        if not 0 <= index < num_pieces:
            raise UsageError(f"piece index {index} out of range for {num_pieces} pieces")
    pack = _HDR_I.pack
    return b"".join([pack(5, HAVE, index) for index in indices])


#: extension handshakes decoded, by their bytes: the peers of a swarm send a
#: few distinct ones (roost's differ only by the port), one per connection, so
#: decoding each was a visible cost of a fleet's connection churn. Bounded;
#: the values kept are never handed out, only copies of them.
_EXT_HANDSHAKES: dict[bytes, bencode.Value] = {}
_EXT_HANDSHAKES_MAX = 256
# only handshakes of a usual size are kept (roost's, libtorrent's: 100-300
# bytes): peers sending distinct ones near MAX_EXTENDED must not make the
# cache hold up to 256 MiB of them
_EXT_HANDSHAKE_KEPT_BYTES = 2048


def _decode_extended_handshake(payload: bytes) -> bencode.Value:
    """bencode.decode(payload, max_depth=16), a fresh value each call."""
    if len(payload) > _EXT_HANDSHAKE_KEPT_BYTES:
        return bencode.decode(payload, max_depth=16)
    kept = _EXT_HANDSHAKES.get(payload)
    if kept is None:
        kept = bencode.decode(payload, max_depth=16)  # DecodeError: nothing kept
        if len(_EXT_HANDSHAKES) >= _EXT_HANDSHAKES_MAX:
            _EXT_HANDSHAKES.clear()
        _EXT_HANDSHAKES[payload] = kept
    return _copy_value(kept)


def _copy_value(value: bencode.Value) -> bencode.Value:
    """A copy of a decoded value that shares nothing mutable with it."""
    if isinstance(value, dict):
        return {k: _copy_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_value(v) for v in value]
    return value  # int, bytes: immutable


def _ban(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, ban=True)


class PeerConnection:
    """Codec and protocol checker for one peer connection. See module docstring."""

    def __init__(
        self,
        info_hash: bytes | None,
        our_peer_id: bytes,
        num_pieces: int,
        *,
        fast: bool = True,
        extended: bool = True,
        max_block: int = BLOCK_SIZE,
        piece_length: int = 0,
        total_length: int = 0,
    ) -> None:
        if info_hash is not None and len(info_hash) != 20:
            raise UsageError("info_hash must be 20 bytes")
        if len(our_peer_id) != 20:
            raise UsageError("peer id must be 20 bytes")
        if num_pieces < 0:
            raise UsageError("num_pieces must be >= 0")
        self._info_hash = info_hash
        self._peer_id = bytes(our_peer_id)
        self._num_pieces = num_pieces
        self._set_geometry(piece_length, total_length)
        self._want_fast = fast
        self._want_extended = extended
        self._max_block = BLOCK_SIZE
        self.max_block = max_block
        self._buf = bytearray()
        # a big Piece frame whose body is still arriving: (index, begin, body, bytes in
        # body so far). The body fills in place, read by read: no partial frame to grow
        # and compact, no copy of the body out of it when it is whole.
        self._body: tuple[int, int, bytearray, int] | None = None
        # where a big body's buffer comes from: the member recycles piece buffers
        # (Assembly.take), so a body needs neither zeroing nor fresh pages
        self.alloc: Callable[[int], bytearray] = bytearray
        self._state = _State.HANDSHAKE
        self._remote: Handshake | None = None
        self._fast = False
        self._extended = False
        self._bitfield_window = True  # Bitfield/HaveAll/HaveNone still allowed
        self._sent_handshake = False
        # consecutive Have frames of one read as one Haves event, not a Have each
        self.batch_haves = False

    # ------------------------------------------------------------ properties

    @property
    def fast(self) -> bool:
        """Fast extension negotiated (both sides set the bit)."""
        return self._fast

    @property
    def extended(self) -> bool:
        """Extension protocol negotiated (both sides set the bit)."""
        return self._extended

    @property
    def remote_peer_id(self) -> bytes | None:
        return self._remote.peer_id if self._remote else None

    @property
    def remote_handshake(self) -> Handshake | None:
        return self._remote

    @property
    def handshake_done(self) -> bool:
        """The remote handshake was received and its info hash accepted."""
        return self._state is _State.MESSAGES

    @property
    def info_hash(self) -> bytes | None:
        return self._info_hash

    @property
    def num_pieces(self) -> int:
        return self._num_pieces

    @property
    def max_block(self) -> int:
        """Largest Request/Reject/Cancel length and Piece block we accept."""
        return self._max_block

    @max_block.setter
    def max_block(self, value: int) -> None:
        """Raise after a BEP 10 negotiation of bigger blocks (<= MAX_BLOCK)."""
        if not 1 <= value <= MAX_BLOCK:
            raise UsageError(f"max_block must be in 1..{MAX_BLOCK}")
        self._max_block = value

    @property
    def max_frame(self) -> int:
        """Largest frame (length prefix included) this connection will buffer."""
        return 4 + max(9 + self._max_block, 1 + nbytes(self._num_pieces), 2 + MAX_EXTENDED)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed (a partial frame)."""
        return len(self._buf) + (13 + self._body[3] if self._body is not None else 0)

    # ------------------------------------------------------------ handshake

    def handshake_bytes(self) -> bytes:
        if self._info_hash is None:
            raise UsageError("no info hash yet: accept() the remote handshake first")
        reserved = reserved_bytes(fast=self._want_fast, extended=self._want_extended)
        return PROTOCOL + reserved + self._info_hash + self._peer_id

    def initiate(self) -> bytes:
        """Our handshake, to be sent exactly once per connection."""
        if self._sent_handshake:
            raise UsageError("handshake already sent on this connection")
        data = self.handshake_bytes()
        self._sent_handshake = True
        return data

    def _set_geometry(self, piece_length: int, total_length: int) -> None:
        """With piece sizes known (both > 0), blocks must also fit inside their
        piece; with 0 (unknown) only the index and the length are checked."""
        if piece_length < 0 or total_length < 0:
            raise UsageError("piece_length and total_length must be >= 0")
        if piece_length and total_length:
            if self._num_pieces != -(-total_length // piece_length):
                raise UsageError("num_pieces does not match piece_length and total_length")
            last = total_length - (self._num_pieces - 1) * piece_length
        else:
            piece_length = last = 0
        self._piece_length = piece_length
        self._last_length = last

    def _check_span(self, index: int, begin: int, length: int) -> None:
        plen = self._last_length if index == self._num_pieces - 1 else self._piece_length
        if plen and begin + length > plen:
            raise _ban(f"block {index}:{begin}+{length} runs past the end of the piece")

    def accept(
        self, info_hash: bytes, num_pieces: int, *, piece_length: int = 0, total_length: int = 0
    ) -> list[Event]:
        """For a connection made with info_hash=None: adopt the torrent the
        remote asked for, and return events for messages already buffered."""
        if self._state is not _State.AWAIT_ACCEPT:
            raise UsageError("accept() is only valid after an unbound remote handshake")
        assert self._remote is not None
        if info_hash != self._remote.info_hash:
            raise UsageError("accept() with an info hash the remote did not ask for")
        if num_pieces < 0:
            raise UsageError("num_pieces must be >= 0")
        self._info_hash = bytes(info_hash)
        self._num_pieces = num_pieces
        self._set_geometry(piece_length, total_length)
        self._state = _State.MESSAGES
        return self.receive(b"")

    def _parse_handshake(self, mv: memoryview, pos: int) -> Handshake | None:
        avail = len(mv) - pos
        head = bytes(mv[pos : pos + min(avail, 48)])
        if head[:20] != PROTOCOL[: len(head[:20])]:
            raise RemoteProtocolError("not a BitTorrent handshake")
        expected = self._info_hash
        if expected is not None and len(head) >= 48 and head[28:48] != expected:
            raise RemoteProtocolError("handshake for a torrent we do not serve")
        if avail < HANDSHAKE_LEN:
            return None
        reserved = bytes(mv[pos + 20 : pos + 28])
        hs = Handshake(
            info_hash=head[28:48],
            peer_id=bytes(mv[pos + 48 : pos + 68]),
            fast=bool(reserved[FAST_BYTE] & FAST_MASK),
            extended=bool(reserved[EXTENDED_BYTE] & EXTENDED_MASK),
            reserved=reserved,
        )
        self._remote = hs
        self._fast = hs.fast and self._want_fast
        self._extended = hs.extended and self._want_extended
        self._state = _State.MESSAGES if expected is not None else _State.AWAIT_ACCEPT
        return hs

    # ------------------------------------------------------------ receive

    def receive(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed received bytes; return the events of every complete frame.

        Raises RemoteProtocolError on any violation; the connection is then dead."""
        if self._state is _State.DEAD:
            raise UsageError("connection already failed with a protocol error")
        events: list[Event] = []
        if self._body is not None:
            data = self._fill_body(data, events)
            if not data:
                return events
        buf = self._buf
        if not buf and type(data) is bytes and len(data) < STREAM_BODY \
                and self._state is _State.MESSAGES:
            # small reads in bytes (a swarm's Haves, requests, chokes): parsed
            # in place, with no view to make and release; the frames and their
            # checks are the same. (Below STREAM_BODY no slice of it is a big
            # block, so slicing bytes copies nothing more than a view would.)
            try:
                pos = self._parse_frames(data, 0, events)
            except RemoteProtocolError:
                self._state = _State.DEAD
                self._body = None
                raise
            if pos < len(data):
                buf += data[pos:]  # keep the partial frame
            return events
        if buf:
            buf += data
            src: bytes | bytearray | memoryview = buf
        else:
            src = data
        try:
            with memoryview(src) as mv0:
                mv = mv0 if mv0.format == "B" and mv0.ndim == 1 else mv0.cast("B")
                pos = self._parse(mv, events)
                if src is not buf and pos < len(mv):
                    buf += mv[pos:]  # keep the partial frame
                del mv
        except RemoteProtocolError:
            self._state = _State.DEAD
            self._buf = bytearray()  # the failed views may still pin the old one
            self._body = None
            raise
        if src is buf and pos:
            del buf[:pos]  # one compaction per call
        if self._state is _State.AWAIT_ACCEPT and len(buf) > MAX_FRAME:
            self._state = _State.DEAD
            raise RemoteProtocolError("too much data before our handshake", ban=True)
        return events

    def body_buffer(self, min_bytes: int = STREAM_BODY) -> memoryview | None:
        """Where the next bytes of the Piece body being received go, when at
        least `min_bytes` of it are still to come: the adapter reads from the
        socket straight into it (no copy of its own), then calls body_received.
        None when no big body is in progress (then feed `receive` as usual)."""
        body = self._body
        if body is None or self._state is _State.DEAD:
            return None
        filled, whole = body[3], body[2]
        if len(whole) - filled < min_bytes:
            return None
        return memoryview(whole)[filled:]

    def body_received(self, n: int) -> list[Event]:
        """`n` bytes were written into the view body_buffer returned."""
        if self._state is _State.DEAD:
            raise UsageError("connection already failed with a protocol error")
        body = self._body
        if body is None or not 0 <= n <= len(body[2]) - body[3]:
            raise UsageError("body_received without a body_buffer that size")
        index, begin, whole, filled = body
        filled += n
        if filled < len(whole):
            self._body = (index, begin, whole, filled)
            return []
        self._body = None
        return [Piece(index, begin, whole)]

    def _fill_body(
        self, data: bytes | bytearray | memoryview, events: list[Event]
    ) -> memoryview:
        """Bytes into the Piece body being received; what follows it, if anything."""
        assert self._body is not None
        index, begin, body, filled = self._body
        mv = memoryview(data)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        n = min(len(body) - filled, len(mv))
        body[filled : filled + n] = mv[:n]
        filled += n
        if filled < len(body):
            self._body = (index, begin, body, filled)
            return mv[:0]
        self._body = None
        events.append(Piece(index, begin, body))
        return mv[n:]

    def _parse(self, mv: memoryview, events: list[Event]) -> int:
        pos = 0
        if self._state is _State.HANDSHAKE:
            hs = self._parse_handshake(mv, 0)
            if hs is None:
                return 0
            events.append(hs)
            pos = HANDSHAKE_LEN
        if self._state is not _State.MESSAGES:
            return pos
        return self._parse_frames(mv, pos, events)

    def _parse_frames(self, mv: memoryview | bytes, pos: int, events: list[Event]) -> int:
        end = len(mv)
        unpack_len = _U32.unpack_from
        unpack_ii = _II.unpack_from
        num_pieces = self._num_pieces
        max_piece = 9 + self._max_block
        append = events.append
        batch = self.batch_haves
        haves: list[int] | None = None  # the indices of the Haves event last appended
        haves_at = -1  # len(events) just after it: still the last event while equal
        while end - pos >= 4:
            length = unpack_len(mv, pos)[0]
            if length == 0:
                append(_KEEPALIVE)
                pos += 4
                continue
            if end - pos < 5:
                break
            mid = mv[pos + 4]
            if mid == PIECE:  # the hot path, inlined
                if length > max_piece:
                    raise RemoteProtocolError(f"block of {length - 9} bytes exceeds our maximum")
                if length < 10:
                    raise _ban(f"piece frame of {length} bytes")
                whole = end - pos >= 4 + length
                if not whole and (end - pos < 13 or length - 9 < STREAM_BODY):
                    break
                index, begin = unpack_ii(mv, pos + 5)
                if index >= num_pieces:
                    raise _ban(f"piece index {index} out of range")
                if self._piece_length:
                    self._check_span(index, begin, length - 9)
                self._bitfield_window = False
                if not whole:  # the rest of the body arrives in later reads
                    body = self.alloc(length - 9)
                    body[: end - pos - 13] = mv[pos + 13 : end]
                    self._body = (index, begin, body, end - pos - 13)
                    return end
                chunk = mv[pos + 13 : pos + 4 + length]
                # a big block as a bytearray: the assembly can keep it as its piece
                append(Piece(index, begin, bytearray(chunk) if length - 9 >= STREAM_BODY
                             else bytes(chunk)))
            elif mid == HAVE and length == 5:  # a swarm's most frequent message, inlined
                if end - pos < 9:
                    break
                index = unpack_len(mv, pos + 5)[0]
                if index >= num_pieces:
                    raise _ban(f"piece index {index} out of range for {num_pieces} pieces")
                self._bitfield_window = False
                if not batch:
                    append(Have(index))
                elif haves is not None and len(events) == haves_at:
                    haves.append(index)
                else:
                    haves = [index]
                    append(Haves(haves))
                    haves_at = len(events)
            else:
                self._check_length(mid, length)
                if end - pos < 4 + length:
                    break
                append(self._message(mid, mv, pos + 5, length - 1))
            pos += 4 + length
        return pos

    def _check_length(self, mid: int, length: int) -> None:
        """Refuse a frame whose declared length is wrong for its id, before buffering it."""
        fixed = _FIXED_LEN.get(mid)
        if fixed is not None:
            if length != fixed:
                raise _ban(f"message {mid} with length {length}, expected {fixed}")
        elif mid == BITFIELD:
            if length != 1 + nbytes(self._num_pieces):
                raise _ban(f"bitfield frame of {length} bytes for {self._num_pieces} pieces")
        elif mid == EXTENDED:
            if length < 2 or length > 2 + MAX_EXTENDED:
                raise _ban(f"extended message of {length} bytes")
        else:
            raise RemoteProtocolError(f"unknown message id {mid}")

    def _message(self, mid: int, mv: memoryview | bytes, pos: int, size: int) -> Message:
        """Decode one complete non-Piece message whose payload is mv[pos:pos+size]."""
        if mid in _FAST_IDS and not self._fast:
            raise RemoteProtocolError(f"fast-extension message {mid} without negotiating it")
        if mid not in _PRELUDE_IDS:
            window = self._bitfield_window
            self._bitfield_window = False
            # a late Bitfield or HaveAll is tolerated: aria2c sends one instead of
            # several Haves whenever it is shorter (DefaultBtInteractive::checkHave)
            if mid == HAVE_NONE and not window:
                raise RemoteProtocolError("have-none after other messages")
        simple = _SIMPLE.get(mid)
        if simple is not None:
            return simple
        if mid in (HAVE, SUGGEST, ALLOWED_FAST):
            index = _U32.unpack_from(mv, pos)[0]
            self._check_index(index)
            if mid == HAVE:
                return Have(index)
            return SuggestPiece(index) if mid == SUGGEST else AllowedFast(index)
        if mid in (REQUEST, CANCEL, REJECT):
            index, begin, length = _III.unpack_from(mv, pos)
            self._check_index(index)
            if not 1 <= length <= self._max_block:
                raise RemoteProtocolError(f"request length {length} outside 1..{self._max_block}")
            self._check_span(index, begin, length)
            if mid == REQUEST:
                return Request(index, begin, length)
            return (
                Cancel(index, begin, length)
                if mid == CANCEL
                else RejectRequest(index, begin, length)
            )
        if mid == BITFIELD:
            return BitfieldMsg(Bitfield.from_bytes(self._num_pieces, mv[pos : pos + size]))
        if mid == PORT:
            return Port(_H.unpack_from(mv, pos)[0])
        return self._extended_message(mv, pos, size)

    def _extended_message(self, mv: memoryview | bytes, pos: int, size: int) -> Message:
        if not self._extended:
            raise RemoteProtocolError("extension-protocol message without negotiating it")
        ext_id = mv[pos]
        payload = bytes(mv[pos + 1 : pos + size])
        if ext_id != 0:
            return Extended(ext_id, payload)
        try:
            value = _decode_extended_handshake(payload)
        except DecodeError as exc:
            raise RemoteProtocolError(f"bad extension handshake: {exc}") from None
        if not isinstance(value, dict):
            raise RemoteProtocolError("extension handshake is not a dictionary")
        return ExtendedHandshake(value)

    def _check_index(self, index: int) -> None:
        if index >= self._num_pieces:
            raise _ban(f"piece index {index} out of range for {self._num_pieces} pieces")

    # ------------------------------------------------------------ encoders

    def _local_index(self, index: int) -> None:
        if not 0 <= index < self._num_pieces:
            raise UsageError(f"piece index {index} out of range for {self._num_pieces} pieces")

    def _need_fast(self, what: str) -> None:
        if not self._fast:
            raise UsageError(f"cannot send {what}: the fast extension was not negotiated")

    def send_keepalive(self) -> bytes:
        return b"\x00\x00\x00\x00"

    def send_choke(self) -> bytes:
        return b"\x00\x00\x00\x01\x00"

    def send_unchoke(self) -> bytes:
        return b"\x00\x00\x00\x01\x01"

    def send_interested(self) -> bytes:
        return b"\x00\x00\x00\x01\x02"

    def send_not_interested(self) -> bytes:
        return b"\x00\x00\x00\x01\x03"

    def send_have(self, index: int) -> bytes:
        self._local_index(index)
        return _HDR_I.pack(5, HAVE, index)

    def send_bitfield(self, bf: Bitfield) -> bytes:
        if len(bf) != self._num_pieces:
            raise UsageError(f"bitfield of {len(bf)} bits for {self._num_pieces} pieces")
        payload = bf.to_bytes()
        return _HDR.pack(1 + len(payload), BITFIELD) + payload

    def send_request(self, index: int, begin: int, length: int) -> bytes:
        self._local_index(index)
        return _HDR_III.pack(13, REQUEST, index, begin, length)

    def send_piece_header(self, index: int, begin: int, length: int) -> bytes:
        """The 13-byte Piece header; the engine writes the `length`-byte block after it."""
        self._local_index(index)
        return _HDR_II.pack(9 + length, PIECE, index, begin)

    def send_piece(self, index: int, begin: int, block: bytes | bytearray | memoryview) -> bytes:
        return self.send_piece_header(index, begin, len(block)) + block

    def send_cancel(self, index: int, begin: int, length: int) -> bytes:
        self._local_index(index)
        return _HDR_III.pack(13, CANCEL, index, begin, length)

    def send_port(self, port: int) -> bytes:
        return _HDR_H.pack(3, PORT, port)

    def send_have_all(self) -> bytes:
        self._need_fast("HaveAll")
        return b"\x00\x00\x00\x01\x0e"

    def send_have_none(self) -> bytes:
        self._need_fast("HaveNone")
        return b"\x00\x00\x00\x01\x0f"

    def send_reject(self, index: int, begin: int, length: int) -> bytes:
        self._need_fast("RejectRequest")
        self._local_index(index)
        return _HDR_III.pack(13, REJECT, index, begin, length)

    def send_allowed_fast(self, index: int) -> bytes:
        self._need_fast("AllowedFast")
        self._local_index(index)
        return _HDR_I.pack(5, ALLOWED_FAST, index)

    def send_suggest(self, index: int) -> bytes:
        self._need_fast("SuggestPiece")
        self._local_index(index)
        return _HDR_I.pack(5, SUGGEST, index)

    def send_extended_handshake(self, d: dict[Any, Any]) -> bytes:
        return self.send_extended(0, bencode.encode(d))

    def send_extended(self, ext_id: int, payload: bytes | bytearray | memoryview) -> bytes:
        """A BEP 10 message; `ext_id` is the id the REMOTE advertised in its `m`."""
        if not self._extended:
            raise UsageError("cannot send an extended message: BEP 10 was not negotiated")
        if not 0 <= ext_id <= 255:
            raise UsageError("extended message id must be 0..255")
        if len(payload) > MAX_EXTENDED:
            raise UsageError("extended payload too large")
        return _HDR.pack(2 + len(payload), EXTENDED) + bytes((ext_id,)) + bytes(payload)
