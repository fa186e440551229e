"""The upload side of a swarm member: requests we serve, tokens, send windows. Pure.

Theory of operation. A peer's Request is checked (we have the piece, super-
seeding revealed it to this peer, we unchoke it or the piece is in its
allowed-fast set, the block fits the piece, its queue is not full) and
queued on its Conn. `serve` hands queued blocks out as SendBlock actions
while the upload token bucket allows: a block whose tokens are not there yet
is paid for at once and waits until `serve_at` (the member's deadline,
`wake`). After WRITE_WINDOW bytes to one connection it asks the adapter to
say when the connection can take more (WantWritable, then WriteReady), so a
peer that asks for gigabytes never makes us queue them in memory. A whole
piece sent to a peer feeds the super-seeder and the optional upload log.

Serving in turn. At most `slots` connections hold a turn (have blocks on
the wire) at once; the others wait in a queue. A turn ends, when someone is
waiting, once a whole piece or TURN_BYTES went to the peer: we ask the
adapter to say when that connection's data has left (WantWritable with
drained=True), then the turn passes to the next in line and the peer queues
again behind them. The link is shared by `slots` peers instead of all of
them, so a piece reaches a peer after piece x slots / R instead of piece x k
/ R, and the peer can pass it on that much sooner: a piece new to the swarm
doubles its copies every piece x slots / R (the binomial pipeline) instead of
multiplying them by k every piece x k / R, which is ~10x slower at k = 60.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from roost.core.actions import Action, PieceUploaded, SendBlock, WantWritable
from roost.core.bitfield import Bitfield
from roost.core.conn import OUR_REQQ, Conn
from roost.core.metainfo import Info
from roost.core.offers import Offers
from roost.core.ratelimit import TokenBucket
from roost.core.wire import Block, Request
from roost.errors import RemoteProtocolError

#: bytes of blocks handed to a connection before asking whether it has room
WRITE_WINDOW = 4 * 1024 * 1024
#: a turn ends after a whole piece or this many bytes, when someone is waiting
TURN_BYTES = 1024 * 1024


class Uploads:
    def __init__(
        self,
        info: Info,
        have: Bitfield,
        offers: Offers | None,
        rate: float | None,
        *,
        report_uploads: bool,
        slots: int | None = None,
    ) -> None:
        self.info = info
        self.have = have
        self.offers = offers
        self.bucket = TokenBucket(rate)
        self.report_uploads = report_uploads
        self.uploaded = 0
        self.wake: float | None = None  # the earliest conn.serve_at
        self.slots = slots  # connections served at once; None: all of them
        self._turns: dict[int, int] = {}  # conn id -> bytes handed out in its turn
        self._draining: set[int] = set()  # turn over, waiting for its data to leave
        self._line: deque[Conn] = deque()  # waiting for a turn, in order
        self._in_line: set[int] = set()

    def request(self, conn: Conn, req: Request, out: list[Action], now: float) -> None:
        index = req.index
        offers = self.offers
        servable = self.have[index] and (offers is None or offers.may_serve(conn, index))
        if not servable or (conn.am_choking and index not in conn.fast_for_it):
            if conn.wire.fast:
                conn.send(out, conn.wire.send_reject(index, req.begin, req.length), now)
            return
        if req.begin + req.length > self.info.piece_size(index):
            raise RemoteProtocolError("request runs past the end of the piece", ban=True)
        if len(conn.upload_queue) >= OUR_REQQ:
            if conn.wire.fast:
                conn.send(out, conn.wire.send_reject(index, req.begin, req.length), now)
            return
        conn.upload_queue.append(Block(index, req.begin, req.length))
        self.serve(conn, out, now)

    def write_ready(self, conn: Conn, out: list[Action], now: float) -> None:
        conn.waiting_room = False
        conn.window_used = 0
        if conn.id in self._draining:
            self._end_turn(conn, out, now)
        else:
            self.serve(conn, out, now)

    def forget(self, conn: Conn, out: list[Action], now: float) -> None:
        """The connection closed: its turn, or its place in line, goes."""
        self._in_line.discard(conn.id)  # its entry in _line is skipped when reached
        if conn.id in self._turns:
            self._end_turn(conn, out, now)

    def sweep(self, conns: Iterable[Conn], out: list[Action], now: float) -> None:
        """End the turns of connections with nothing left to send (a Cancel or
        a choke emptied their queue between two serves): a turn never sticks."""
        for conn in list(conns):
            if (conn.id in self._turns and conn.id not in self._draining
                    and not conn.upload_queue and conn.serve_at is None
                    and not conn.waiting_room):
                self._end_turn(conn, out, now)

    def _end_turn(self, conn: Conn, out: list[Action], now: float) -> None:
        self._turns.pop(conn.id, None)
        self._draining.discard(conn.id)
        if conn.upload_queue and not conn.closed and conn.id not in self._in_line:
            self._line.append(conn)
            self._in_line.add(conn.id)
        self._next_turns(out, now)

    def _next_turns(self, out: list[Action], now: float) -> None:
        slots = self.slots
        while self._line and (slots is None or len(self._turns) < slots):
            conn = self._line.popleft()
            if conn.id not in self._in_line:
                continue  # closed while in line
            self._in_line.discard(conn.id)
            if not conn.closed and conn.upload_queue:
                self.serve(conn, out, now)

    def due(self, conns: Iterable[Conn], out: list[Action], now: float) -> None:
        """Serve the connections whose upload tokens are there now."""
        if self.wake is None or now < self.wake:
            return
        self.wake = None
        for conn in list(conns):
            if conn.serve_at is None:
                continue
            if conn.serve_at <= now:
                conn.serve_at = None
                self.serve(conn, out, now)
            else:
                self._wake_at(conn.serve_at)

    def serve(self, conn: Conn, out: list[Action], now: float) -> None:
        """Hand queued blocks to the adapter as the upload tokens allow; after
        WRITE_WINDOW bytes, wait until the adapter says the connection has room.
        With `slots`, only while the connection holds a turn."""
        if conn.serve_at is not None or conn.waiting_room or conn.closed:
            return
        if self.slots is not None and not self._take_turn(conn):
            return
        in_turn = self.slots is not None
        turns = self._turns
        queue = conn.upload_queue
        while queue:
            if in_turn and turns[conn.id] >= TURN_BYTES and self._in_line:
                self._pass_turn(conn, out)
                return
            if conn.window_used >= WRITE_WINDOW:
                conn.waiting_room = True
                out.append(WantWritable(conn.id))
                return
            head = queue[0]
            index, begin, length = head.index, head.begin, head.length
            if not conn.head_paid:
                # tokens are taken now; if we must wait, the block is already paid for
                wait = self.bucket.consume(length, now)
                if wait > 0:
                    conn.head_paid = True
                    conn.serve_at = now + wait
                    self._wake_at(conn.serve_at)
                    return
            conn.head_paid = False
            queue.popleft()
            header = conn.wire.send_piece_header(index, begin, length)
            out.append(SendBlock(conn.id, header, index, begin, length))
            conn.window_used += length
            conn.up.add(length)
            conn.last_upload_at = conn.last_send_at = now
            self.uploaded += length
            if in_turn:
                turns[conn.id] += length
            if conn.record_sent(index, begin, length, self.info.piece_size(index)):
                if self.report_uploads:
                    out.append(PieceUploaded(conn.name, index, now))
                if self.offers is not None:
                    self.offers.on_sent_piece(conn, index, out, now)
                if in_turn and self._in_line:
                    self._pass_turn(conn, out)  # a whole piece: the next in line
                    return
        if in_turn:
            # nothing left to send: the turn ends once what we handed out has left
            if turns[conn.id]:
                self._pass_turn(conn, out)
            else:
                self._end_turn(conn, out, now)

    def _take_turn(self, conn: Conn) -> bool:
        """Whether the connection holds a turn now; else it waits in line."""
        turns = self._turns
        if conn.id in turns:
            return True
        if not conn.upload_queue:
            return False
        if self.slots is not None and len(turns) >= self.slots:
            if conn.id not in self._in_line:
                self._line.append(conn)
                self._in_line.add(conn.id)
            return False
        self._in_line.discard(conn.id)
        turns[conn.id] = 0
        return True

    def _pass_turn(self, conn: Conn, out: list[Action]) -> None:
        """The turn ends when the connection's data has left (WriteReady)."""
        self._draining.add(conn.id)
        conn.waiting_room = True
        out.append(WantWritable(conn.id, drained=True))

    def _wake_at(self, at: float) -> None:
        if self.wake is None or at < self.wake:
            self.wake = at
