"""The upload side of a swarm member: requests we serve, tokens, send windows. Pure.

Theory of operation. A peer's Request is checked (we have the piece, super-
seeding revealed it to this peer, we unchoke it or the piece is in its
allowed-fast set, the block fits the piece, its queue is not full) and
queued on its Conn; a piece it has asked for whole counts as given to the
super-seeder. `serve` hands queued blocks out as SendBlock actions
while the upload token bucket allows: a block whose tokens are not there yet
is paid for at once and waits until `serve_at` (the member's deadline,
`wake`). After WRITE_WINDOW bytes to one connection it asks the adapter to
say when the connection can take more (WantWritable, then WriteReady), so a
peer that asks for gigabytes never makes us queue them in memory. A whole
piece sent to a peer feeds the optional upload log.
"""

from __future__ import annotations

from collections.abc import Iterable

from roost.core.actions import Action, PieceUploaded, SendBlock, WantWritable
from roost.core.bitfield import Bitfield
from roost.core.conn import OUR_REQQ, Conn
from roost.core.metainfo import Info
from roost.core.offers import Offers
from roost.core.ratelimit import TokenBucket
from roost.core.wire import Block, Request
from roost.errors import RemoteProtocolError

#: bytes of blocks handed to a connection before asking whether it has room.
#: Small, because whatever is queued to a peer goes before our next control
#: message to it (roost.engine.session.UNSENT_LOWAT says more); a whole big
#: block still goes out at once (the window is checked before each block)
WRITE_WINDOW = 64 * 1024


class Uploads:
    def __init__(
        self,
        info: Info,
        have: Bitfield,
        offers: Offers | None,
        rate: float | None,
        *,
        report_uploads: bool,
    ) -> None:
        self.info = info
        self.have = have
        self.offers = offers
        self.bucket = TokenBucket(rate)
        self.report_uploads = report_uploads
        self.uploaded = 0
        self.wake: float | None = None  # the earliest conn.serve_at

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
        conn.last_asked_at = now
        if offers is not None and conn.record_queued(
            index, req.begin, req.length, self.info.piece_size(index)
        ):
            # the super-seeder counts a piece as given once the peer asked for
            # all of it: it goes out at the peer's pace, and a slow peer held
            # its offers back from the others until the last byte left (N = 32
            # with 10 % slow hosts: the fast hosts finished at 27 s, not 7 s;
            # docs/sim.md, "Control messages no longer wait behind queued
            # uploads")
            offers.on_piece_given(conn, index, out, now)
        self.serve(conn, out, now)

    def write_ready(self, conn: Conn, out: list[Action], now: float) -> None:
        conn.waiting_room = False
        conn.window_used = 0
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
        WRITE_WINDOW bytes, wait until the adapter says the connection has room."""
        if conn.serve_at is not None or conn.waiting_room or conn.closed:
            return
        queue = conn.upload_queue
        while queue:
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
            if self.report_uploads and conn.record_sent(
                index, begin, length, self.info.piece_size(index)
            ):
                out.append(PieceUploaded(conn.name, index, now))

    def _wake_at(self, at: float) -> None:
        if self.wake is None or at < self.wake:
            self.wake = at
