"""One peer connection: an asyncio Protocol around the sans-IO wire codec.

Theory of operation. Bytes from the socket go to `PeerConnection.receive`,
which returns events; this class turns them into picker and session calls.
It owns the per-connection state the wire codec does not: what we asked for
(`outstanding`), what the peer asked of us (`upload_queue`), choke and
interest flags on both sides, and rate estimates.

Downloads are pipelined: `fill_requests` keeps enough bytes requested to
cover about a second of this peer's rate (at least 2 MiB), capped by the
peer's `reqq`. Between roost peers, adjacent 16 KiB picker blocks are merged
into one wire request of up to `big_block` bytes (negotiated through BEP 10)
to cut per-message overhead; any other client sees plain 16 KiB requests.
We accept requests of up to `big_block` from the moment our extended
handshake offers it (the remote's request may share a read with its own).

Uploads are served from `upload_queue` while the transport's buffer is below
its high-water mark (`pause_writing` / `resume_writing`), paid for from the
session's upload token bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from roost import __version__
from roost.bitfield import Bitfield
from roost.engine.zerocopy import send_direct, socket_fd
from roost.errors import RemoteProtocolError
from roost.picker import BlockRequest
from roost.wire import (
    BLOCK_SIZE,
    MAX_BLOCK,
    AllowedFast,
    BitfieldMsg,
    Cancel,
    Choke,
    Extended,
    ExtendedHandshake,
    Handshake,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    NotInterested,
    PeerConnection,
    Piece,
    Port,
    RejectRequest,
    Request,
    SuggestPiece,
    Unchoke,
)

if TYPE_CHECKING:
    from roost.engine.session import Session

#: our BEP 10 handshake key for larger blocks between roost peers
BIG_BLOCK_KEY = b"roost_block"
OUR_REQQ = 4096
DEFAULT_REQQ = 250  # what a peer that does not say accepts, per libtorrent's default
# Requests in flight per peer: about PIPELINE_SECONDS of its measured rate.
# The floor is small on purpose: on a slow link a deep queue of requests to
# one peer locks pieces away from faster peers and makes the tail long.
MIN_PIPELINE_BYTES = 512 * 1024
MAX_PIPELINE_BYTES = 32 * 1024 * 1024
PIPELINE_SECONDS = 1.0
REFUSAL_SECONDS = 10.0  # a piece a peer refused is asked of it again after this


def _blocks(length: int) -> int:
    """16 KiB picker blocks in a request of `length` bytes (merged requests hold several)."""
    return -(-length // BLOCK_SIZE)


class Outstanding:
    """What we asked a peer for, (index, begin) -> length, and how many picker
    blocks that is. fill_requests reads `blocks` on every call (a hot path), so
    it is kept up to date by every change instead of re-summed; change the
    requests only through these methods."""

    __slots__ = ("_requests", "blocks")

    def __init__(self) -> None:
        self._requests: dict[tuple[int, int], int] = {}
        self.blocks = 0

    def __len__(self) -> int:
        return len(self._requests)

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._requests

    def __setitem__(self, key: tuple[int, int], length: int) -> None:
        old = self._requests.get(key)
        if old is not None:
            self.blocks -= _blocks(old)
        self._requests[key] = length
        self.blocks += _blocks(length)

    def __delitem__(self, key: tuple[int, int]) -> None:
        self.blocks -= _blocks(self._requests.pop(key))

    def get(self, key: tuple[int, int]) -> int | None:
        return self._requests.get(key)

    def pop(self, key: tuple[int, int]) -> int | None:
        """The length asked for at `key` and forget it; None when not asked."""
        length = self._requests.pop(key, None)
        if length is not None:
            self.blocks -= _blocks(length)
        return length

    def items(self) -> list[tuple[tuple[int, int], int]]:
        """A snapshot: safe to iterate while changing the requests."""
        return list(self._requests.items())

    def clear(self) -> None:
        self._requests.clear()
        self.blocks = 0


class RateMeter:
    """Bytes per second, smoothed over a few ticks."""

    def __init__(self) -> None:
        self.total = 0
        self._window = 0
        self.rate = 0.0

    def add(self, n: int) -> None:
        self.total += n
        self._window += n

    def tick(self, dt: float) -> None:
        if dt > 0:
            instant = self._window / dt
            self.rate = instant if self.rate == 0 else 0.5 * self.rate + 0.5 * instant
        self._window = 0


class Peer(asyncio.Protocol):
    def __init__(self, session: Session, address: tuple[str, int], *, outgoing: bool) -> None:
        self.session = session
        self.address = address
        self.outgoing = outgoing
        self.transport: asyncio.Transport | None = None
        self.wire = PeerConnection(
            session.info_hash,
            session.peer_id,
            session.num_pieces,
            piece_length=session.info.piece_length,
            total_length=session.info.total_length,
        )
        self.remote_id: bytes | None = None
        self.client = "?"
        self.ready = False
        self.closed = False
        self.forgotten = False  # the session dropped it
        self.in_picker = False  # the picker knows its availability
        # choke/interest, BEP 3 names: am_* is us, peer_* is them
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        self.bitfield = Bitfield(session.num_pieces)
        self.is_seed = False
        self.allowed_fast: set[int] = set()
        self.refused: dict[int, float] = {}  # piece -> when it refused it while unchoking us
        self.reqq = DEFAULT_REQQ
        self.big_block = BLOCK_SIZE
        self._picked_dry: tuple[int, int] | None = None  # picker.pick_state when a pick fell short
        # (index, begin) -> length of what we asked for
        self.outstanding = Outstanding()
        self.upload_queue: deque[tuple[int, int, int]] = deque()
        self.write_paused = False
        self.serve_scheduled = False
        self.head_paid = False
        self.down = RateMeter()
        self.up = RateMeter()
        self.last_block_at = session.now()
        self.last_send_at = session.now()
        self.last_recv_at = session.now()
        self.ready_at = session.now()  # set again when the handshake completes
        self.snubbed = False
        self.last_upload_at = 0.0  # when we last sent it a block
        self.offered_at = 0.0  # super-seeding: when we last revealed a piece to it
        # blocks of each piece we uploaded to this peer (for super-seeding)
        self.sent_blocks: dict[int, set[int]] = {}
        self.zero_copy_fd: int | None = None  # the socket, when uploads may use sendfile

    # ---- asyncio.Protocol ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.set_write_buffer_limits(high=4 * 1024 * 1024, low=1024 * 1024)
        self.zero_copy_fd = socket_fd(transport) if self.session.config.zero_copy else None
        if self.outgoing:
            self.send(self.wire.handshake_bytes())
        self.session.on_connected(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_recv_at = self.session.now()
        try:
            events = self.wire.receive(data)
            for event in events:
                self.handle(event)
                if self.closed:
                    return
            if self.ready:
                self.fill_requests()
        except RemoteProtocolError as exc:
            self.session.protocol_error(self, exc)
            self.close(str(exc))
        except Exception as exc:  # a bug here must cost one connection, not the process
            self.session.internal_error(self, exc)
            self.close(f"internal error: {type(exc).__name__}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.session.on_closed(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.serve()

    # ---- helpers ----
    @property
    def key(self) -> tuple[str, int]:
        return self.address

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)
            self.last_send_at = self.session.now()

    def close(self, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self.session.log_close(self, reason)
            if self.transport is not None:
                self.transport.close()
            self.session.on_closed(self)

    # ---- events ----
    def handle(self, event: Any) -> None:
        if isinstance(event, Piece):
            self.on_piece(event)
        elif isinstance(event, Request):
            self.on_request(event)
        elif isinstance(event, Have):
            self.bitfield.set(event.index)
            self.is_seed = self.bitfield.all()
            self.session.on_have(self, event.index)
        elif isinstance(event, Handshake):
            self.on_handshake(event)
        elif isinstance(event, (BitfieldMsg, HaveAll)) and self.in_picker:
            self.on_late_bitfield(event)
        elif isinstance(event, BitfieldMsg):
            self.bitfield = event.bitfield
            self.is_seed = self.bitfield.all()
            self.session.on_bitfield(self)
        elif isinstance(event, HaveAll):
            self.bitfield = Bitfield.full(self.session.num_pieces)
            self.is_seed = True
            self.session.on_bitfield(self)
        elif isinstance(event, HaveNone):
            self.session.on_bitfield(self)
        elif isinstance(event, Choke):
            self.peer_choking = True
            self.drop_requests(send_cancel=False)
        elif isinstance(event, Unchoke):
            self.peer_choking = False
        elif isinstance(event, Interested):
            self.peer_interested = True
            self.session.on_interest_changed(self)
        elif isinstance(event, NotInterested):
            self.peer_interested = False
            self.session.on_interest_changed(self)
        elif isinstance(event, Cancel):
            item = (event.index, event.begin, event.length)
            if item in self.upload_queue:
                self.upload_queue.remove(item)
        elif isinstance(event, RejectRequest):
            self.on_reject(event.index, event.begin)
        elif isinstance(event, AllowedFast):
            self.allowed_fast.add(event.index)
        elif isinstance(event, ExtendedHandshake):
            self.on_extended_handshake(event.data)
        elif isinstance(event, (KeepAlive, SuggestPiece, Port, Extended)):
            pass

    def on_late_bitfield(self, event: BitfieldMsg | HaveAll) -> None:
        """A Bitfield or HaveAll after other messages (aria2c sends one instead of
        several Haves): each newly set piece counts as a Have; pieces are never unset."""
        if isinstance(event, HaveAll):
            bits = Bitfield.full(self.session.num_pieces)
        else:
            bits = event.bitfield
        for index in bits.iter_set():
            if not self.bitfield[index]:
                self.handle(Have(index))

    def on_handshake(self, event: Handshake) -> None:
        self.remote_id = event.peer_id
        self.client = _client_name(event.peer_id)
        if not self.session.accept_handshake(self):
            self.close("duplicate, banned or self connection")
            return
        if not self.outgoing:
            self.send(self.wire.handshake_bytes())
        if self.wire.extended:
            # we offer big blocks in this message, so a roost peer may ask for one
            # as soon as it reads it, in the same read as its own extended
            # handshake, whose event we handle only after the wire parsed both
            self.wire.max_block = max(self.wire.max_block, self.session.config.big_block)
            self.send(self.wire.send_extended_handshake(self._extended_handshake()))
        self.send(self.session.initial_availability(self))
        self.ready = True
        self.ready_at = self.session.now()
        self.session.on_ready(self)

    def _extended_handshake(self) -> dict[bytes, Any]:
        data: dict[bytes, Any] = {
            b"m": {},
            b"v": f"roost {__version__}".encode(),
            b"reqq": OUR_REQQ,
            BIG_BLOCK_KEY: self.session.config.big_block,
        }
        if self.session.port:
            data[b"p"] = self.session.port  # so the remote need not dial us back
        return data

    def on_extended_handshake(self, data: dict[bytes, Any]) -> None:
        reqq = data.get(b"reqq")
        if isinstance(reqq, int) and 1 <= reqq <= 100_000:
            self.reqq = reqq
        big = data.get(BIG_BLOCK_KEY)
        if isinstance(big, int) and BLOCK_SIZE <= big <= MAX_BLOCK:
            # a roost peer: we may ask it for bigger blocks; anyone else is
            # asked for the standard 16 KiB (what we accept was set when we
            # sent our own extended handshake)
            self.big_block = min(big, self.session.config.big_block)
        port = data.get(b"p")
        if not self.outgoing and isinstance(port, int) and 0 < port < 65536:
            self.session.note_listen_port(self, port)

    # ---- downloading ----
    def update_interest(self) -> None:
        # a peer that never said what it has (no bitfield, no Have) has nothing
        interested = self.in_picker and self.session.picker.is_interesting(self.key)
        if interested != self.am_interested:
            self.am_interested = interested
            self.send(
                self.wire.send_interested() if interested else self.wire.send_not_interested()
            )

    def pipeline_blocks(self) -> int:
        target = max(MIN_PIPELINE_BYTES, int(self.down.rate * PIPELINE_SECONDS))
        target = min(target, MAX_PIPELINE_BYTES)
        blocks = target // BLOCK_SIZE
        if self.snubbed:
            blocks = 1
        # the peer's reqq counts wire requests; merged requests hold several blocks
        per_request = max(1, self.big_block // BLOCK_SIZE)
        return min(blocks, self.reqq * per_request)

    def outstanding_blocks(self) -> int:
        return self.outstanding.blocks

    def fill_requests(self) -> None:
        if not self.am_interested or self.session.picker.complete():
            return
        if self.session.backlogged():
            return  # the disk is behind: requesting more would only grow memory
        allowed: set[int] | None = None
        if self.peer_choking:
            if not self.allowed_fast:
                return
            allowed = self.allowed_fast
        want = self.pipeline_blocks() - self.outstanding_blocks()
        if want <= 0:
            return
        picker = self.session.picker
        state = picker.pick_state(self.key) if allowed is None else None
        if state is not None and state == self._picked_dry:
            return  # nothing it has became free since the last pick came back short
        picks = picker.pick(self.key, want, allowed=allowed)
        self._picked_dry = state if len(picks) < want else None
        if not picks:
            return
        out = []
        for index, begin, length in self.merge(picks):
            self.outstanding[(index, begin)] = length
            out.append(self.wire.send_request(index, begin, length))
        self.send(b"".join(out))

    def merge(self, picks: list[BlockRequest]) -> list[tuple[int, int, int]]:
        """Coalesce adjacent blocks of one piece into requests of up to big_block."""
        merged: list[tuple[int, int, int]] = []
        for req in picks:
            if merged and self.big_block > BLOCK_SIZE:
                index, begin, length = merged[-1]
                if (
                    index == req.index
                    and begin + length == req.begin
                    and length + req.length <= self.big_block
                ):
                    merged[-1] = (index, begin, length + req.length)
                    continue
            merged.append((req.index, req.begin, req.length))
        return merged

    def on_piece(self, event: Piece) -> None:
        length = self.outstanding.pop((event.index, event.begin))
        if length is None or length != len(event.block):
            if length is not None:  # not what we asked for: ask again, elsewhere
                self.session.release_blocks(self, event.index, event.begin, length)
            self.session.wasted(len(event.block))
            return
        now = self.session.now()
        self.last_block_at = now
        self.snubbed = False
        self.down.add(len(event.block))
        self.session.on_block(self, event.index, event.begin, event.block)

    def on_reject(self, index: int, begin: int) -> None:
        length = self.outstanding.pop((index, begin))
        if length is None:
            return
        self.session.release_blocks(self, index, begin, length)
        # a refusal while we may ask means it will not serve this piece now:
        # look elsewhere (rejects after a Choke are the choke's, not the piece's)
        if self.peer_choking:
            self.allowed_fast.discard(index)
        elif not self.is_seed and self.bitfield[index]:
            self.bitfield.clear(index)
            self.session.picker.peer_lacks(self.key, index)
            self.refused[index] = self.session.now()
            self.update_interest()

    def forgive_refusals(self, now: float) -> None:
        """Ask again, REFUSAL_SECONDS later, for pieces it refused: a refusal may
        have been a full queue, not a missing piece, and it will not send a
        second Have for a piece it already announced."""
        for index, at in list(self.refused.items()):
            if now - at < REFUSAL_SECONDS:
                continue
            del self.refused[index]
            if not self.bitfield[index]:
                self.bitfield.set(index)
                self.session.picker.peer_has(self.key, index)
        self.is_seed = self.bitfield.all()
        self.update_interest()

    def drop_requests(self, *, send_cancel: bool) -> None:
        """Give every outstanding request back to the picker (choked, snubbed, closing)."""
        if send_cancel:
            self.send(
                b"".join(self.wire.send_cancel(i, b, n) for (i, b), n in self.outstanding.items())
            )
        for (index, begin), length in self.outstanding.items():
            self.session.release_blocks(self, index, begin, length)
        self.outstanding.clear()

    def cancel_block(self, index: int, begin: int, length: int) -> None:
        """Endgame: another peer delivered this block first."""
        if self.outstanding.get((index, begin)) == length:
            del self.outstanding[(index, begin)]
            self.send(self.wire.send_cancel(index, begin, length))

    # ---- uploading ----
    def set_choking(self, choke: bool) -> None:
        if choke == self.am_choking:
            return
        self.am_choking = choke
        if choke:
            self.send(self.wire.send_choke())
            # allowed-fast requests survive a choke (BEP 6); the rest are
            # rejected when the peer understands Reject, else dropped (BEP 3)
            fast = self.session.allowed_fast_for(self) if self.wire.fast else set()
            kept = deque(r for r in self.upload_queue if r[0] in fast)
            if self.wire.fast:
                for i, b, n in self.upload_queue:
                    if i not in fast:
                        self.send(self.wire.send_reject(i, b, n))
            self.upload_queue = kept
        else:
            self.send(self.wire.send_unchoke())
            self.session.on_unchoked(self)

    def on_request(self, req: Request) -> None:
        if not self.session.may_serve(self, req.index) or (
            self.am_choking and req.index not in self.session.allowed_fast_for(self)
        ):
            if self.wire.fast:
                self.send(self.wire.send_reject(req.index, req.begin, req.length))
            return
        if req.begin + req.length > self.session.piece_size(req.index):
            raise RemoteProtocolError("request runs past the end of the piece", ban=True)
        if len(self.upload_queue) >= OUR_REQQ:
            if self.wire.fast:
                self.send(self.wire.send_reject(req.index, req.begin, req.length))
            return
        self.upload_queue.append((req.index, req.begin, req.length))
        self.serve()

    def serve(self) -> None:
        """Send queued blocks while the socket buffer has room and tokens allow."""
        if self.serve_scheduled:
            return
        session = self.session
        while self.upload_queue and not self.write_paused and not self.closed:
            index, begin, length = self.upload_queue[0]
            if not self.head_paid:
                # tokens are taken now; if we must wait, the block is already paid for
                wait = session.upload_wait(length)
                if wait > 0:
                    self.head_paid = True
                    self.serve_scheduled = True
                    asyncio.get_running_loop().call_later(wait, self._serve_later)
                    return
            self.head_paid = False
            self.upload_queue.popleft()
            if not self._send_block(index, begin, length):
                return
            self.up.add(length)
            self.last_upload_at = session.now()
            session.on_uploaded(self, index, begin, length)

    def _send_block(self, index: int, begin: int, length: int) -> bool:
        """One Piece message: zero-copy while the transport has nothing queued,
        else (and for whatever the socket did not take) pread + transport."""
        header = self.wire.send_piece_header(index, begin, length)
        storage = self.session.storage
        head = sent = 0
        fd, transport = self.zero_copy_fd, self.transport
        if fd is not None and transport is not None and not transport.get_write_buffer_size():
            try:
                with storage.pinned_spans(index, begin, length) as spans:
                    head, sent = send_direct(fd, header, spans)
            except (BrokenPipeError, ConnectionResetError):
                self.close()  # the peer hung up: as quiet as the transport's own path
                return False
            except OSError as exc:
                self.close(f"send failed: {exc.strerror or exc}")
                return False
            self.last_send_at = self.session.now()
        if head < len(header):
            self.send(header[head:])
        if sent < length:
            # two writes, not header + data: that would copy the block once more
            self.send(storage.read_block(index, begin + sent, length - sent))
        return True

    def _serve_later(self) -> None:
        self.serve_scheduled = False
        self.serve()


def _client_name(peer_id: bytes) -> str:
    """Azureus-style peer ids: -XX1234-...; anything else shown as hex."""
    if len(peer_id) == 20 and peer_id[:1] == b"-" and peer_id[7:8] == b"-":
        return peer_id[1:7].decode("ascii", "replace")
    return peer_id[:8].hex()
