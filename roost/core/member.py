"""The policy of one swarm member, sans-IO (in the manner of aioquic and h11).

Theory of operation. A `SwarmMember` is one torrent's membership of a swarm.
It never touches a socket, a file or the clock: its adapter (roost.engine)
calls

    member.start(port, now)              -> list[Action]
    member.receive(conn, data, now)      -> list[Action]   bytes a connection read
    member.event(PieceChecked(...), now) -> list[Action]   any roost.core.actions event
    member.handle_timer(now)             -> list[Action]
    member.next_deadline()               -> float          when to call handle_timer
    member.shutdown(now)                 -> list[Action]

and carries out the actions in order. The member owns the pure deciders
(roost.core.picker, roost.core.choker, roost.core.offers, roost.core.announce), the
piece assembly (roost.core.assembly) and one `Conn` per connection
(roost.core.conn: all per-connection state and its transitions).

What it decides: whom to connect to and whom to refuse (allowlist, bans,
duplicate connections; the slots by roost.core.admission), what to request
from whom, whom to upload to (rechoke every RECHOKE_TICKS ticks, and at once
when a slot frees), snubbed and idle peers, smart bans, when to announce, Have batching, the
origin's super-seed offers, what to ask web seeds for (roost.core.webseed), and
when to leave (the completion policy).

Time. A tick every TICK seconds updates rates, checks peers (handshake
deadline, snub, keepalive, idle), connects, refills requests, reports
progress and applies the completion policy. Between ticks, deadlines for the
Have batch, the download-rate pause, upload tokens and the next announce;
`next_deadline` is the earliest of them.
"""

from __future__ import annotations

import functools
import ipaddress
import random
from collections.abc import Callable, Hashable
from typing import Any

from roost import __version__
from roost.core import bencode
from roost.core.actions import (
    Action,
    Announce,
    AnnounceAnswered,
    AnnounceFailed,
    CheckAndWrite,
    Close,
    Closed,
    Connect,
    Connected,
    ConnectFailed,
    Event,
    Flush,
    Flushed,
    HeldLocally,
    PauseReading,
    PieceChecked,
    Progress,
    Report,
    ResumeReading,
    Send,
    Stop,
    WebData,
    WebFailed,
    WriteReady,
)
from roost.core.announce import REGULAR, schedule_for
from roost.core.assembly import Assembly
from roost.core.bitfield import Bitfield
from roost.core.choker import Choker, PeerStat
from roost.core.config import MemberConfig as MemberConfig
from roost.core.config import Network as Network
from roost.core.conn import (
    BIG_BLOCK_KEY,
    FILL_BACKLOG,
    FILL_OUTCOMES,
    MIN_PIPELINE_BYTES,
    OUR_REQQ,
    RESERVED_KEY,
    UPLOAD_ONLY_KEY,
    Conn,
    client_name,
    pipeline_floor,
)
from roost.core.inert import inert
from roost.core.metainfo import Info
from roost.core.offers import Offers
from roost.core.peers import REDIAL_CONNECTED, Closing, PeerTable
from roost.core.picker import PiecePicker
from roost.core.ratelimit import TokenBucket
from roost.core.stall import StallWatch
from roost.core.uploads import Uploads
from roost.core.webseed import WebSeeds
from roost.core.wire import (
    BLOCK_SIZE,
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
    Haves,
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
    allowed_fast_set,
    have_messages,
)
from roost.errors import RemoteProtocolError, UsageError

TICK = 0.5
HAVE_BATCH_SECONDS = 0.2  # how long a passed piece may wait to be announced
RECHOKE_TICKS = 20  # a full rechoke every 10 s, as BEP 3 clients do
SNUB_SECONDS = 15.0
KEEPALIVE_SECONDS = 60.0
IDLE_SECONDS = 180.0
HANDSHAKE_TIMEOUT = 5.0  # TLS and BitTorrent handshakes (roost.core.admission)
ALLOWED_FAST_K = 8
# A zoned host that has had no piece this long fetches any piece new to its
# zone from outside, not only its share (roost.core.zone_shares)
IMPORT_GRACE_SECONDS = 4.0
# messages after which a fill may ask for more (a Haves event: when the
# picker says so): a Piece frees pipeline room, an Unchoke, a Reject, a
# Bitfield, an allowed-fast piece, a handshake change what may be asked.
# A Request, Cancel, (Not)Interested, KeepAlive or an extension message do not.
_MAY_FILL: frozenset[type] = frozenset({
    Piece, Have, Unchoke, Choke, RejectRequest, BitfieldMsg, HaveAll, HaveNone,
    AllowedFast, ExtendedHandshake, Handshake,
})


@functools.lru_cache(maxsize=4096)
def _fast_set_for(host: str, info_hash: bytes, num_pieces: int) -> frozenset[int]:
    """The allowed-fast set (BEP 6) of a peer at `host`, for IPv4 (none for
    anything else). A pure function of its arguments, so it is kept: a member
    meets the same addresses again and again (a fleet's connections churn at
    its start), and parsing the address and hashing cost per handshake."""
    try:
        ip = ipaddress.ip_address(host).packed
    except ValueError:
        return frozenset()
    if len(ip) != 4:
        return frozenset()
    return frozenset(allowed_fast_set(ip, info_hash, num_pieces, ALLOWED_FAST_K))


class SwarmMember:
    def __init__(
        self,
        info: Info,
        info_hash: bytes,
        have: Bitfield,
        config: MemberConfig,
        *,
        trackers: bool = True,
        report_uploads: bool = False,
        rng: random.Random | None = None,
        web_seeds: list[str] | None = None,
    ) -> None:
        self.info = info
        self.info_hash = info_hash
        self.num_pieces = info.num_pieces
        self.config = config
        self.rng = rng or random.Random()
        suffix = bytes(self.rng.getrandbits(8) for _ in range(20 - len(config.peer_id_prefix)))
        self.peer_id = config.peer_id_prefix + suffix
        self.have = have
        if not BLOCK_SIZE <= config.picker_block <= max(BLOCK_SIZE, config.big_block) \
                or config.picker_block % BLOCK_SIZE:
            raise UsageError("picker_block must be a multiple of 16 KiB, at most big_block")
        self.picker = PiecePicker(
            self.num_pieces, info.piece_length, info.total_length, have=have, rng=self.rng,
            block_size=config.picker_block,
            # zoned hosts split what their zone lacks among themselves by peer id
            own_id=self.peer_id if config.local_nets is not None else None,
        )
        self.choker = Choker(slots=config.unchoke_slots, rng=self.rng)
        self.down_bucket = TokenBucket(config.download_rate)
        self.assembly = Assembly(info.piece_length)
        self.webseeds = WebSeeds(web_seeds or [], info, self.picker)  # BEP 19
        self.offers = (
            Offers(self.num_pieces, self.rng, info.piece_length, config.expected_peers)
            if config.super_seed else None
        )
        self.uploads = Uploads(
            info, have, self.offers, config.upload_rate, report_uploads=report_uploads
        )
        self.schedule = schedule_for(
            enabled=trackers,
            complete=have.all(),
            expected_peers=config.expected_peers,
            rng=self.rng,
        )
        self.peers = PeerTable(config, self.peer_id, HANDSHAKE_TIMEOUT)
        self.conns = self.peers.conns  # connection id -> Conn
        self.downloaded = 0
        self.wasted_bytes = 0
        self.port = 0
        self.stopping = False
        self.completed_at: float | None = None
        self.swarm_expected: int | None = config.expected_peers
        self.swarm_complete: int | None = None
        self.last_interest_at = 0.0
        self._unannounced: list[int] = []
        self._have_at: float | None = None  # when the Have batch goes out
        self._resume_at: float | None = None  # reading paused by the rate cap until then
        self._rechoke_soon = False
        self._pipeline_floor = MIN_PIPELINE_BYTES
        # connections that unchoke us and are open (not peer_choking, not closed),
        # kept by _count_sources at every change instead of recounted
        self._sources = 0
        self._ext_handshake: tuple[int, bytes] | None = None  # (port, bencoded), made once
        self._fills = [0] * len(FILL_OUTCOMES)  # see fills()
        self._ticks = 0
        self._next_tick = 0.0
        self._last_tick = 0.0
        self._last_piece_at: float | None = None  # for the zone shares' grace (_tick)
        self.zone_shares_lifted_at: float | None = None  # when we starved (zones only)
        self.stall = StallWatch()

    # ---- small accessors ----
    @property
    def complete(self) -> bool:
        return self.have.all()

    def bytes_done(self) -> int:
        return self.info.total_length - self.picker.bytes_left()

    def announce_action(self, event: str | None) -> Announce:
        return Announce(event, self.uploads.uploaded, self.downloaded, self.picker.bytes_left())

    # ---- the API ----
    def start(self, port: int, now: float) -> list[Action]:
        out: list[Action] = []
        self.port = self.peers.port = port
        for address in self.config.initial_peers:
            self.peers.candidates[address] = 0.0
        out.append(
            Report(
                "started",
                {
                    "port": port,
                    "peer_id": self.peer_id.hex(),
                    "pieces": self.num_pieces,
                    "have": self.have.count(),
                    # what is held before any transfer: a deploy's first_bytes is the
                    # first progress past it (roost.deploy.host)
                    "bytes_done": self.bytes_done(),
                    "state": "seeding" if self.complete else "downloading",
                },
            )
        )
        if self.complete:
            self.completed_at = now
            if not self.config.seed:  # nothing to fetch, nobody to serve: done
                out.append(Flush())
        self.last_interest_at = now
        self._next_tick = now + TICK
        self._last_tick = now
        self.webseeds.start(out, self.complete)
        self._fill_web(out, now)
        self._connect_more(out, now)
        self._maybe_announce(out, now)
        return out

    def receive(self, cid: int, data: bytes | bytearray | memoryview, now: float) -> list[Action]:
        """Bytes from connection `cid` (the caller may reuse its buffer afterwards)."""
        return self._receive(cid, data, 0, now)

    def body_buffer(self, cid: int) -> memoryview | None:
        """Where connection `cid`'s next bytes should be read into, when a big
        Piece body is arriving (see PeerConnection.body_buffer); else None."""
        conn = self.conns.get(cid)
        if conn is None or conn.closed:
            return None
        return conn.wire.body_buffer()

    def body_received(self, cid: int, n: int, now: float) -> list[Action]:
        """`n` bytes were read into the view body_buffer(cid) returned."""
        return self._receive(cid, None, n, now)

    def _receive(
        self, cid: int, data: bytes | bytearray | memoryview | None, n: int, now: float
    ) -> list[Action]:
        out: list[Action] = []
        conn = self.conns.get(cid)
        if conn is None or conn.closed:
            return out
        conn.last_recv_at = now
        wire = conn.wire
        # fill once after the read, and only when a message in it may let the
        # fill ask for more (most reads in a swarm are a peer's Haves of
        # pieces we have or fetch already, or requests to us)
        fill = False
        rtt = conn.rtt
        try:
            for message in wire.receive(data) if data is not None else wire.body_received(n):
                if isinstance(message, Haves):  # a swarm's most frequent read
                    if self._on_haves(conn, message.indices, out, now):
                        fill = True
                    continue
                if rtt.probe_at is not None:  # the first message after our handshake
                    rtt.answered(now)
                self._handle(conn, message, out, now)
                if conn.closed:
                    break
                if type(message) in _MAY_FILL:
                    fill = True
            else:
                if fill and conn.ready:
                    self._fill(conn, out, now)
        except RemoteProtocolError as exc:
            if exc.ban:
                self._ban(conn, str(exc), out, now)
            self._close(conn, str(exc), out, now)
        except Exception as exc:  # a bug here must cost one connection, not the process
            error = f"{type(exc).__name__}: {exc}"
            out.append(Report("internal_error", {"peer": conn.name, "error": error}))
            self._close(conn, f"internal error: {type(exc).__name__}", out, now)
        if self._rechoke_soon:  # _settle's one job, tested here: this runs per call
            self._settle(out, now)
        return out

    def event(self, ev: Event, now: float) -> list[Action]:
        out: list[Action] = []
        if isinstance(ev, WriteReady):
            conn = self.conns.get(ev.conn)
            if conn is not None:
                self.uploads.write_ready(conn, out, now)
        elif isinstance(ev, PieceChecked):
            self._piece_checked(ev, out, now)
        elif isinstance(ev, Connected):
            self._connected(ev, out, now)
        elif isinstance(ev, Closed):
            conn = self.conns.get(ev.conn)
            if conn is not None:
                if ev.reason:
                    self._close(conn, ev.reason, out, now)  # logged; the Close is a no-op
                else:
                    conn.closed = True
                    self._forget(conn, out, now)
        elif isinstance(ev, ConnectFailed):
            self._connect_failed(ev, out, now)
        elif isinstance(ev, AnnounceAnswered):
            self._announced(ev, out, now)
        elif isinstance(ev, AnnounceFailed):
            self.schedule.failed(now)
            out.append(Report("tracker_error", {"message": ev.message}))
        elif isinstance(ev, Flushed):
            self._flushed(out, now)
        elif isinstance(ev, WebData):
            self._on_web_data(ev, out, now)
        elif isinstance(ev, WebFailed):
            self.webseeds.failed(ev, out, now)
            self._fill_web(out, now)
        elif isinstance(ev, HeldLocally):
            self._held_locally(ev.indices, out, now)
        if self._rechoke_soon:  # _settle's one job, tested here: this runs per call
            self._settle(out, now)
        return out

    def handle_timer(self, now: float) -> list[Action]:
        out: list[Action] = []
        if self._have_at is not None and now >= self._have_at:
            self._announce_haves(out, now)
        if self._resume_at is not None and now >= self._resume_at:
            self._resume_at = None
            out.append(ResumeReading())
            self._fill_web(out, now)
        self.uploads.due(self.conns.values(), out, now)
        if now >= self._next_tick:
            self._next_tick = max(self._next_tick + TICK, now + TICK / 2)
            self._tick(out, now)
        self._maybe_announce(out, now)
        if self._rechoke_soon:  # _settle's one job, tested here: this runs per call
            self._settle(out, now)
        return out

    def next_deadline(self) -> float:
        # asked after every batch of actions: written out, without a tuple of
        # the candidates (the same comparisons in the same order)
        deadline = self._next_tick
        at = self._have_at
        if at is not None and at < deadline:
            deadline = at
        at = self._resume_at
        if at is not None and at < deadline:
            deadline = at
        at = self.uploads.wake
        if at is not None and at < deadline:
            deadline = at
        schedule = self.schedule  # AnnounceSchedule.deadline(), read in place
        at = schedule.at
        if at is not None and schedule.enabled and not schedule.in_flight and at < deadline:
            deadline = at
        at = self.peers.admission.next_deadline()
        if at is not None and at < deadline:
            deadline = at
        return deadline

    def shutdown(self, now: float) -> list[Action]:
        """Close every connection; the last announce (`stopped`) when there is a tracker."""
        out: list[Action] = []
        self.stopping = True
        for conn in list(self.conns.values()):
            self._close(conn, "shutting down", out, now)
        self._report_refusals(out, float("inf"))
        if self.schedule.enabled:
            out.append(self.announce_action("stopped"))
        return out

    def _settle(self, out: list[Action], now: float) -> None:
        """Work deferred to the end of a batch: a rechoke when a slot freed."""
        if self._rechoke_soon:
            self._rechoke_soon = False
            if not self.stopping:
                self._rechoke(out, now)

    def _stop(self, reason: str, out: list[Action], error: str | None = None) -> None:
        if not self.stopping:
            self.stopping = True
            out.append(Stop(reason, error))

    # ---- connections (the rules are roost.core.peers') ----
    def _connected(self, ev: Connected, out: list[Action], now: float) -> None:
        outgoing = ev.dialled is not None
        dialled_at = None
        if ev.dialled is not None:
            dialled_at = self.peers.dialled(ev.dialled, now)
        info = self.info
        wire = PeerConnection(
            self.info_hash,
            self.peer_id,
            self.num_pieces,
            piece_length=info.piece_length,
            total_length=info.total_length,
        )
        wire.alloc = self._take_buffer
        wire.batch_haves = True
        conn = Conn(
            ev.conn, ev.address, wire, outgoing=outgoing, now=now,
            block_size=self.config.picker_block,
        )
        conn.piece_blocks = -(-info.piece_length // self.config.picker_block)
        if dialled_at is not None:  # TCP's handshake took a round trip
            conn.rtt.sample(now - dialled_at)
        if outgoing:
            conn.send(out, wire.handshake_bytes(), now)
            conn.rtt.probe_at = now  # the peer answers with its handshake
        self._close_all(self.peers.arrive(conn, now), out, now)

    def _take_buffer(self, size: int) -> bytearray:
        return self.assembly.take(size)

    def _connect_failed(self, ev: ConnectFailed, out: list[Action], now: float) -> None:
        if self.peers.dial_failed(ev.address, ev.error, now):  # once per address and error
            peer = f"{ev.address[0]}:{ev.address[1]}"
            out.append(Report("connect_failed", {"peer": peer, "error": ev.error}))

    def _close(
        self, conn: Conn, reason: str, out: list[Action], now: float, *, ban: bool = False
    ) -> None:
        """Close a connection; an empty reason is not logged (the policy counted it)."""
        if conn.closed:
            return
        conn.closed = True
        if reason and reason != "shutting down":
            fields = {"peer": conn.name, "client": conn.client, "reason": reason}
            out.append(Report("peer_closed", fields))
        out.append(Close(conn.id, reason, ban))
        self._forget(conn, out, now)

    def _close_all(self, closing: list[Closing], out: list[Action], now: float) -> None:
        for conn, reason in closing:
            self._close(conn, reason, out, now)

    def _forget(self, conn: Conn, out: list[Action], now: float) -> None:
        self.peers.remove(conn)
        delay = None if self.stopping else self.peers.ended(conn, now)
        if delay is not None and delay > REDIAL_CONNECTED:  # the first is the usual redial
            fields = {"peer": inert(conn.name), "client": inert(conn.client), "delay": delay}
            out.append(Report("peer_backoff", fields))
        if not conn.am_choking:
            self._rechoke_soon = True  # its upload slot is free now
        if not conn.peer_choking:
            self._count_sources(-1)  # it served us; closed now
        if conn.in_picker:
            conn.drop_requests(self.picker, None, now)
            self.picker.remove_peer(conn.id)
        if self.offers is not None and conn.ready:
            self.offers.remove(conn)

    def _ban(self, conn: Conn, reason: str, out: list[Action], now: float) -> None:
        self.peers.ban(conn)
        fields = {"peer": conn.name, "client": conn.client, "reason": reason}
        out.append(Report("peer_banned", fields))
        self._close(conn, f"banned: {reason}", out, now, ban=True)

    def _connect_more(self, out: list[Action], now: float) -> None:
        out.extend(Connect(a) for a in self.peers.to_dial(now, complete=self.complete))

    def _close_fellow_seed(self, conn: Conn, out: list[Action], now: float) -> None:
        self.peers.fellow_seed(conn)
        self._close(conn, "both seeds", out, now)

    # ---- the tracker ----
    def _maybe_announce(self, out: list[Action], now: float) -> None:
        event = self.schedule.due(now, self.complete)
        if event is not None and not self.stopping:
            out.append(self.announce_action(None if event == REGULAR else event))

    def _announced(self, ev: AnnounceAnswered, out: list[Action], now: float) -> None:
        self.schedule.answered(now, ev.interval)
        out.append(Report("announced", {"peers": len(ev.peers)}))
        if ev.expected_peers is not None:
            self.swarm_expected = ev.expected_peers
            if self.offers is not None:
                self.offers.expect(ev.expected_peers)
        if ev.complete_peers is not None:
            self.swarm_complete = ev.complete_peers
        self.peers.add_candidates(ev.peers)
        self._connect_more(out, now)  # now, not at the next tick: startup time matters
        self._maybe_announce(out, now)

    # ---- messages from a peer ----
    def _handle(self, conn: Conn, msg: object, out: list[Action], now: float) -> None:
        """One message, by its type: a dict lookup, not a chain of isinstance
        tests (this runs per message; a Choke was the tenth test). A type not
        in the table (a subclass) goes through the table in order, as the
        chain did."""
        handler = _HANDLERS.get(type(msg))
        if handler is not None:
            handler(self, conn, msg, out, now)
            return
        for cls, handler in _HANDLERS.items():
            if isinstance(msg, cls):
                handler(self, conn, msg, out, now)
                return

    # the handlers of _HANDLERS, in the order of the chain they replaced
    # (Haves first: a swarm member gets about N Haves per piece, one Piece)
    def _msg_haves(self, conn: Conn, msg: Haves, out: list[Action], now: float) -> None:
        self._on_haves(conn, msg.indices, out, now)

    def _msg_have(self, conn: Conn, msg: Have, out: list[Action], now: float) -> None:
        self._on_have(conn, msg.index, out, now)

    def _msg_request(self, conn: Conn, msg: Request, out: list[Action], now: float) -> None:
        self.uploads.request(conn, msg, out, now)

    def _msg_bitfield(
        self, conn: Conn, msg: BitfieldMsg | HaveAll, out: list[Action], now: float
    ) -> None:
        if conn.in_picker:
            # after other messages (aria2c sends one instead of several Haves):
            # each newly set piece counts as a Have; pieces are never unset
            bits = Bitfield.full(self.num_pieces) if isinstance(msg, HaveAll) else msg.bitfield
            known = conn.bitfield
            new = [index for index in bits.iter_set() if not known[index]]
            if new:
                self._on_haves(conn, new, out, now)
        elif isinstance(msg, BitfieldMsg):
            conn.set_bitfield(msg.bitfield)
            self._on_bitfield(conn, out, now)
        else:
            conn.set_bitfield(Bitfield.full(self.num_pieces))
            self._on_bitfield(conn, out, now)

    def _msg_have_none(self, conn: Conn, msg: HaveNone, out: list[Action], now: float) -> None:
        self._on_bitfield(conn, out, now)

    def _msg_choke(self, conn: Conn, msg: Choke, out: list[Action], now: float) -> None:
        if not conn.peer_choking:
            conn.peer_choking = True
            self._count_sources(-1)
        conn.drop_requests(self.picker, None, now)

    def _msg_unchoke(self, conn: Conn, msg: Unchoke, out: list[Action], now: float) -> None:
        if conn.peer_choking:
            conn.peer_choking = False
            self._count_sources(+1)

    def _msg_interest(
        self, conn: Conn, msg: Interested | NotInterested, out: list[Action], now: float
    ) -> None:
        conn.peer_interested = isinstance(msg, Interested)
        self._on_interest_changed(conn, out, now)

    def _msg_cancel(self, conn: Conn, msg: Cancel, out: list[Action], now: float) -> None:
        conn.cancel_upload(msg.index, msg.begin, msg.length)

    def _msg_reject(self, conn: Conn, msg: RejectRequest, out: list[Action], now: float) -> None:
        conn.rejected(self.picker, msg.index, msg.begin, out, now)

    def _msg_allowed_fast(
        self, conn: Conn, msg: AllowedFast, out: list[Action], now: float
    ) -> None:
        conn.allowed_fast.add(msg.index)

    def _msg_extended_handshake(
        self, conn: Conn, msg: ExtendedHandshake, out: list[Action], now: float
    ) -> None:
        port = conn.on_extended_handshake(msg.data, self.config.big_block)
        if port is not None and not conn.outgoing:
            self.peers.listens_at(conn, port)
        if conn.reserved is not None and self.offers is not None:
            self.offers.on_reserved(conn, self.conns, out, now)
        if conn.upload_only and conn.in_picker:
            self.picker.upload_only(conn.id)  # it said so after its bitfield

    def _msg_nothing(self, conn: Conn, msg: object, out: list[Action], now: float) -> None:
        """KeepAlive, SuggestPiece, Port, Extended: nothing to do."""

    def _on_handshake(self, conn: Conn, msg: Handshake, out: list[Action], now: float) -> None:
        conn.remote_id = msg.peer_id
        conn.client = client_name(msg.peer_id)
        refused, closing = self.peers.handshaken(conn, now)
        self._close_all(closing, out, now)
        if refused is not None:
            self._close(conn, refused, out, now)
            return
        wire = conn.wire
        if not conn.outgoing:
            conn.send(out, wire.handshake_bytes(), now)
            # a roost dialler answers ours with its extended handshake
            conn.rtt.probe_at = now
        if wire.extended:
            # we offer big blocks in this message, so a roost peer may ask for one
            # as soon as it reads it, in the same read as its own extended
            # handshake, whose event we handle only after the wire parsed both
            wire.max_block = max(wire.max_block, self.config.big_block)
            conn.send(out, wire.send_extended(0, self._extended_handshake_payload()), now)
        conn.send(out, self._initial_availability(conn), now)
        conn.ready = True
        conn.ready_at = now
        conn.fast_for_it = self._allowed_fast_set(conn)
        if self.offers is not None:
            self.offers.add(conn)
        if wire.fast and not self.complete and self.have.any():
            data = [wire.send_allowed_fast(i) for i in sorted(conn.fast_for_it) if self.have[i]]
            conn.send(out, b"".join(data), now)
        if self.offers is not None:
            self.offers.offer(conn, out, now)

    def _extended_handshake_payload(self) -> bytes:
        """Ours, bencoded once: it is the same for every peer (and encoding it
        per connection was a visible cost of a fleet's start)."""
        if self.picker.reserved:  # while files are placed: it changes as they land
            return bencode.encode(self._extended_handshake())
        cached = self._ext_handshake
        if cached is None or cached[0] != self.port:
            cached = self._ext_handshake = (self.port, bencode.encode(self._extended_handshake()))
        return cached[1]

    def _extended_handshake(self) -> dict[bytes, Any]:
        data: dict[bytes, Any] = {
            b"m": {},
            b"v": f"roost {__version__}".encode(),
            b"reqq": OUR_REQQ,
            BIG_BLOCK_KEY: self.config.big_block,
        }
        if self.port:
            data[b"p"] = self.port  # so the remote need not dial us back
        if self.offers is not None:
            # we only upload: a super-seeding origin's bitfield looks like a
            # leecher's, and a zone's peers must not count on it to bring a
            # piece into the zone (roost.core.zone_shares)
            data[UPLOAD_ONLY_KEY] = 1
        if self.picker.reserved:
            # a super-seeding origin must not offer us what we will never request
            reserved = Bitfield(self.num_pieces)
            for index in self.picker.reserved:
                reserved.set(index)
            data[RESERVED_KEY] = reserved.to_bytes()
        return data

    def _initial_availability(self, conn: Conn) -> bytes:
        wire = conn.wire
        if self.offers is not None:
            return wire.send_have_none() if wire.fast else b""
        if self.complete and wire.fast:
            return wire.send_have_all()
        if self.have.any():
            return wire.send_bitfield(self.have)
        return wire.send_have_none() if wire.fast else b""

    def _allowed_fast_set(self, conn: Conn) -> frozenset[int]:
        """BEP 6: pieces this peer may fetch from us while choked (when we have them)."""
        return _fast_set_for(conn.address[0], self.info_hash, self.num_pieces)

    def _on_bitfield(self, conn: Conn, out: list[Action], now: float) -> None:
        if conn.in_picker:
            self.picker.remove_peer(conn.id)
        self._add_to_picker(conn, None if conn.is_seed else conn.bitfield)
        if self.offers is not None:
            self.offers.on_bitfield(conn, out, now)
        if self.complete and conn.is_seed:
            self._close_fellow_seed(conn, out, now)
            return
        conn.update_interest(self.picker, out, now)

    def _add_to_picker(self, conn: Conn, bits: Bitfield | None) -> None:
        """The peer's availability into the picker (None: it has every piece),
        with its zone and, for the zone's import shares, its id: none for a
        peer that never downloads (UPLOAD_ONLY_KEY), which has no share."""
        conn.in_picker = True
        local = self._mark_zone(conn)
        peer_id = None if conn.upload_only else conn.remote_id
        if bits is None:
            self.picker.add_peer_have_all(conn.id, local=local, peer_id=peer_id)
        else:
            self.picker.add_peer(conn.id, bits, local=local, peer_id=peer_id)
        if conn.upload_only:
            self.picker.upload_only(conn.id)

    def _mark_zone(self, conn: Conn) -> bool:
        """Whether the peer is in our zone (MemberConfig.local_nets); a remote
        one gets one request in flight. Without zones no peer is marked local:
        the picker then never zones, and a web seed (never local) is not starved
        by a connected seed."""
        if self.config.local_nets is None:
            conn.remote = False
            return False
        local = self.config.is_local(conn.address[0])
        conn.remote = not local
        return local

    def _on_have(self, conn: Conn, index: int, out: list[Action], now: float) -> bool:
        return self._on_haves(conn, (index,), out, now)

    def _on_haves(
        self, conn: Conn, indices: list[int] | tuple[int, ...], out: list[Action], now: float
    ) -> bool:
        """Haves of one read (wire.Haves), as one step: one availability
        update, one interest check; the fill comes once after the read, and
        only when this returns True: a pick for the peer may find more (see
        PiecePicker.peer_has_all_of)."""
        bits = conn.bitfield
        bits.set_all_of(indices)
        conn.is_seed = bits.all()
        if not conn.in_picker:  # a Have with no bitfield first: it had nothing before
            self._add_to_picker(conn, Bitfield(self.num_pieces))
        pickable = self.picker.peer_has_all_of(conn.id, indices)
        if self.offers is not None:
            for index in indices:
                self.offers.on_have(conn, index, self.conns, out, now)
        if not conn.am_interested:
            # any of them a piece we lack? (bits read directly: set_all_of
            # above checked every index)
            have = self.have.raw()
            for index in indices:
                if not have[index >> 3] & (0x80 >> (index & 7)):
                    conn.update_interest(self.picker, out, now)
                    break
        return pickable

    def _on_interest_changed(self, conn: Conn, out: list[Action], now: float) -> None:
        """Fill a free upload slot at once instead of waiting for the next round;
        a full rechoke runs only every RECHOKE_TICKS (choke churn drops queued
        requests, which costs a round trip and bandwidth on every switch)."""
        if conn.peer_interested:
            self.last_interest_at = now
            # counted only when it matters (the count changes nothing else)
            if conn.am_choking and len(
                [c for c in self.peers.admitted() if c.ready and not c.am_choking]
            ) < self.config.unchoke_slots + 1:
                self._set_choking(conn, False, out, now)
        else:
            if self.offers is not None:
                self.offers.on_not_interested(conn, self.conns, out, now)
            if not conn.am_choking:
                self._rechoke_soon = True

    # ---- downloading ----
    def _count_sources(self, change: int) -> None:
        """How deep to ask each peer, from how many serve us (conn.pipeline_floor).

        Called at every change of that number: a peer's choke or unchoke (it
        only ever changes in _handle), the end of a connection that unchoked
        us (it is closed just before _forget). Counting every connection each
        time was a visible cost of a fleet's start."""
        self._sources += change
        self._pipeline_floor = pipeline_floor(self._sources)

    def _fill(self, conn: Conn, out: list[Action], now: float) -> None:
        if self.assembly.backlogged() or self.picker.complete():
            # the disk is behind: requesting more would only grow memory
            self._fills[FILL_BACKLOG] += 1
            return
        conn.floor = self._pipeline_floor
        self._fills[conn.fill_requests(self.picker, out, now)] += 1

    def fills(self) -> dict[str, int]:
        """How the fills came out, by outcome (roost.core.conn.FILL_OUTCOMES):
        how often the member asked a peer for more, and why it did not."""
        return dict(zip(FILL_OUTCOMES, self._fills, strict=True))

    def _on_piece(self, conn: Conn, msg: Piece, out: list[Action], now: float) -> None:
        index, block = msg.index, msg.block
        size = len(block)
        if not conn.piece_received(self.picker, index, msg.begin, size, now):
            self.wasted_bytes += size
            return
        self.downloaded += size
        wait = self.down_bucket.consume(size, now)
        if wait > 0:
            self._pause_reading(now + wait, out)
        if self.have[index]:
            self.wasted_bytes += size
            return
        got = self.assembly.add(
            self.picker, conn.id, index, msg.begin, block, self.info.piece_size(index),
            owned=True,
        )
        self.wasted_bytes += got.wasted
        for key, req in got.cancels:
            other = self.conns.get(key)  # type: ignore[call-overload]
            if other is not None:
                other.cancel_block(req, out, now)
        if got.whole is not None:
            out.append(CheckAndWrite(index, got.whole))

    def _fill_web(self, out: list[Action], now: float) -> None:
        if self.webseeds and self._resume_at is None and not self.assembly.backlogged():
            self.webseeds.fill(out, now)

    def _on_web_data(self, ev: WebData, out: list[Action], now: float) -> None:
        """A web seed's range: into the piece assembly like a peer's blocks (and
        hash-checked like them); nothing of it is trusted before the check."""
        size = len(ev.data)
        expected = self.webseeds.expected(ev.request)
        if expected is not None and size != expected:  # the engine checks; so do we
            reason = f"a wrong length: {size} bytes for {expected}"
            self.webseeds.failed(WebFailed(ev.request, reason), out, now)
            self._fill_web(out, now)
            return
        fetch = self.webseeds.answered(ev.request, size, now)
        if fetch is None or self.have[fetch.index]:
            self.wasted_bytes += size
            if fetch is not None:
                self.webseeds.give_back(fetch)
            self._fill_web(out, now)
            return
        self.downloaded += size
        wait = self.down_bucket.consume(size, now)
        if wait > 0:
            self._pause_reading(now + wait, out)
        got = self.assembly.add(self.picker, fetch.seed, fetch.index, fetch.begin, ev.data,
                                self.info.piece_size(fetch.index))
        self.wasted_bytes += got.wasted
        for key, req in got.cancels:
            other = self.conns.get(key)  # type: ignore[call-overload]
            if other is not None:
                other.cancel_block(req, out, now)
        if got.whole is not None:
            out.append(CheckAndWrite(fetch.index, got.whole))
        self._fill_web(out, now)

    def _pause_reading(self, until: float, out: list[Action]) -> None:
        if self._resume_at is None:
            out.append(PauseReading())
            self._resume_at = until
        elif until > self._resume_at:
            self._resume_at = until

    def _piece_checked(self, ev: PieceChecked, out: list[Action], now: float) -> None:
        index = ev.index
        was_backlogged = self.assembly.backlogged()
        bad, senders = self.assembly.checked(index, ev.ok and ev.error is None)
        if was_backlogged and not self.assembly.backlogged():
            for conn in list(self.conns.values()):
                if conn.ready and not conn.closed:
                    self._fill(conn, out, now)
            self._fill_web(out, now)
        if ev.error is not None:
            message = f"cannot write piece {index}: {ev.error}"
            out.append(Report("error", {"message": message}))
            self._stop("disk error", out, message)
            return
        if ev.ok:
            self.picker.piece_verified(index)
            self.have.set(index)
            for key in bad:
                self._distrust_web_seed(key, index, out)
                culprit = self.conns.get(key)
                if culprit is not None:
                    self._ban(culprit, f"sent a corrupt block of piece {index}", out, now)
            self._piece_passed(index, out, now)
            return
        self.picker.piece_failed(index)
        out.append(Report("hash_failed", {"piece": index, "peers": senders}))
        for key in bad:  # it alone sent the piece
            self._distrust_web_seed(key, index, out)
            culprit = self.conns.get(key)
            if culprit is not None:
                self._ban(culprit, f"sent piece {index} that failed its hash check", out, now)

    def _held_locally(self, indices: tuple[int, ...], out: list[Action], now: float) -> None:
        for index in indices:
            if not 0 <= index < self.info.num_pieces or self.have[index]:
                continue
            for key, req in self.picker.have(index):  # none for a reserved piece
                other = self.conns.get(key)  # type: ignore[call-overload]
                if other is not None:
                    other.cancel_block(req, out, now)
            self.have.set(index)
            self._piece_passed(index, out, now)

    def _distrust_web_seed(self, key: int, index: int, out: list[Action]) -> None:
        if self.webseeds.is_web_seed(key):
            self.webseeds.drop(key, f"served piece {index} that failed its hash check", out)

    def _piece_passed(self, index: int, out: list[Action], now: float) -> None:
        """Tell every peer (batched), drop interest where it ended, maybe complete."""
        self._last_piece_at = now
        self._unannounced.append(index)
        if self._have_at is None:
            self._have_at = now + HAVE_BATCH_SECONDS
        # every ready connection is an admitted one (PeerTable.admitted)
        for conn in self.peers.admitted():
            if conn.ready and conn.am_interested and not self.picker.is_interesting(conn.id):
                conn.update_interest(self.picker, out, now)
        if self.complete:
            self._announce_haves(out, now)  # peers should learn at once that we are a seed
            self.completed_at = now
            self.last_interest_at = now
            self.webseeds.finish(out)
            out.append(Flush())
            self._rechoke_soon = True  # now seeding: slots go to the laggards
            self._maybe_announce(out, now)

    def _announce_haves(self, out: list[Action], now: float) -> None:
        """Send the Haves of pieces passed since the last batch, one write per peer.

        Sent one by one, every piece costs each of N peers a tiny packet and a
        wakeup, N^2 per piece across a fleet: in the lab at N=32 a host made
        34,000 writes for 1024 pieces, 8,500 with batches. A batch every
        HAVE_BATCH_SECONDS costs little against the time a piece takes to
        cross a link."""
        self._have_at = None
        batch, self._unannounced = self._unannounced, []
        if not batch:
            return
        data = have_messages(batch, self.num_pieces)
        append = out.append
        for conn in self.peers.admitted():
            if not (conn.ready and not conn.closed):
                continue
            if not conn.is_seed:  # a super-seeding origin counts Haves to see its pieces spread
                # Not to a peer that holds the piece already: it will never
                # ask us for it, so the Have tells it nothing it acts on
                # (libtorrent's send_redundant_have off). About half the
                # peers hold a piece when we pass it: half the Haves of a
                # fleet, each a parse and an availability update on receipt.
                news = conn.bitfield.unset_of(batch)
                if not news:
                    continue
                if len(news) < len(batch):
                    conn.send(out, have_messages(news, self.num_pieces), now)
                    continue
            append(Send(conn.id, data))  # Conn.send, inlined (data is not empty)
            conn.last_send_at = now

    def _flushed(self, out: list[Action], now: float) -> None:
        info = self.info
        fields = {
            "bytes": info.total_length,
            "downloaded": self.downloaded,
            "wasted": self.wasted_bytes,
            "fills": self.fills(),
        }
        if self.webseeds.seeds:
            fields["from_web_seeds"] = self.webseeds.received
        out.append(Report("complete", fields))
        for conn in list(self.conns.values()):
            if conn.is_seed:
                self._close_fellow_seed(conn, out, now)
            else:
                conn.update_interest(self.picker, out, now)
        if not self.config.seed:
            self._stop("complete", out)

    # ---- uploading ----
    def _set_choking(self, conn: Conn, choke: bool, out: list[Action], now: float) -> None:
        if conn.set_choking(choke, self.have, out, now) and not choke and self.offers is not None:
            self.offers.offer(conn, out, now)

    # ---- periodic work ----
    def _tick(self, out: list[Action], now: float) -> None:
        dt = now - self._last_tick
        self._last_tick = now
        self._ticks += 1
        down = up = 0.0
        for conn in list(self.conns.values()):
            conn.down.tick(dt)
            conn.up.tick(dt)
            down += conn.down.rate
            up += conn.up.rate
            self._check_peer(conn, out, now)
        self.webseeds.down.tick(dt)
        down += self.webseeds.down.rate
        if self._ticks % RECHOKE_TICKS == 1:
            self._rechoke(out, now)
        if self.offers is not None:
            self.offers.tick(self.conns, out, now)
        self._close_all(self.peers.overdue(now), out, now)
        self._report_refusals(out, now)
        self._connect_more(out, now)
        self._check_zone_shares(now)
        # a peer that sat on requests is refilled last, so what it held goes
        # to another peer that has it when there is one
        late = [c for c in self.conns.values() if self._reask_late(c, out, now)]
        for conn in [c for c in self.conns.values() if c not in late] + late:
            if conn.ready and not conn.closed:
                self._fill(conn, out, now)
        self._fill_web(out, now)
        out.append(
            Progress(
                done=self.bytes_done(),
                total=self.info.total_length,
                down_rate=down,
                up_rate=up,
                peers=sum(1 for c in self.conns.values() if c.ready),
                state="seeding" if self.complete else "downloading",
            )
        )
        self._check_stall(out, now)
        self._apply_policy(out, now)

    def _check_zone_shares(self, now: float) -> None:
        """A host that has had no piece for IMPORT_GRACE_SECONDS takes any piece
        new to its zone from remote peers from then on: the local peer whose
        share it is may be slow, gone, or reach no peer that has it."""
        if self._last_piece_at is None:
            self._last_piece_at = now  # the first tick: the wait starts here
        elif (
            not self.complete
            and now - self._last_piece_at >= IMPORT_GRACE_SECONDS
            and self.picker.lift_zone_shares()
        ):
            self.zone_shares_lifted_at = now

    def _check_peer(self, conn: Conn, out: list[Action], now: float) -> None:
        if not conn.ready:
            return  # its handshake deadline is the admission policy's (overdue)
        if conn.outstanding and now - conn.last_block_at > SNUB_SECONDS and not conn.snubbed:
            conn.snubbed = True
            conn.drop_requests(self.picker, out, now)
        if now - conn.last_send_at > KEEPALIVE_SECONDS:
            conn.send(out, conn.wire.send_keepalive(), now)
        if now - conn.last_recv_at > IDLE_SECONDS:
            self._close(conn, "idle", out, now)
            return
        if conn.peer_interested:
            self.last_interest_at = now
        if conn.refused:
            conn.forgive_refusals(self.picker, out, now)

    def _reask_late(self, conn: Conn, out: list[Action], now: float) -> bool:
        if not conn.ready or conn.closed or not conn.outstanding:
            return False
        return conn.reask_late(self.picker, out, now)

    def _rechoke(self, out: list[Action], now: float) -> None:
        # only interested peers that are not seeds are candidates (Choker.rechoke
        # drops the others, keeping the order); their stats are made only when
        # they do not all fit in the slots
        # one copy serves both loops: the choker changes no connection
        admitted = self.peers.admitted()
        candidates = [c for c in admitted if c.ready and c.peer_interested and not c.is_seed]

        def stats() -> list[PeerStat]:
            return [
                PeerStat(
                    key=c.id,
                    interested=c.peer_interested,
                    download_rate=c.down.rate,
                    upload_rate=c.up.rate,
                    is_seed=c.is_seed,
                    snubbed=c.snubbed,
                    missing=self.num_pieces - c.bitfield.count(),
                )
                for c in candidates
            ]

        keys: list[Hashable] = [c.id for c in candidates]
        unchoked = self.choker.rechoke_candidates(keys, stats, seeding=self.complete)
        for conn in admitted:
            # set_choking changes nothing (and says so) when the state stays
            if conn.ready and not conn.closed and (conn.id not in unchoked) != conn.am_choking:
                self._set_choking(conn, conn.id not in unchoked, out, now)

    def _report_refusals(self, out: list[Action], now: float) -> None:
        """Refused and dropped connections, counted by reason, once per interval."""
        admission = self.peers.admission
        refused = admission.report(now)
        if refused:
            last = {r: f"{k[0]}:{k[1]}" for r, k in admission.last_refused.items()}
            out.append(Report("connections_refused", {"counts": refused, "last": last}))

    def _check_stall(self, out: list[Action], now: float) -> None:
        report = self.stall.check(
            now, self.bytes_done(), self.have, self.conns.values(), self.assembly
        )
        if report is not None:
            out.append(report)

    def _apply_policy(self, out: list[Action], now: float) -> None:
        if not self.complete or self.completed_at is None or not self.config.seed:
            return
        expected = self.swarm_expected
        linger = self.config.linger
        swarm_done = (
            expected is not None
            and self.swarm_complete is not None
            and self.swarm_complete >= expected
        )
        # a fetch (linger set) leaves once everyone is done; a seed only when asked to
        if swarm_done and (linger is not None or self.config.stop_when_swarm_complete):
            self._stop("every expected peer is complete", out)
            return
        if expected is None and linger is not None and now - self.last_interest_at >= linger:
            self._stop(f"no interested peer for {linger:g} s", out)


#: SwarmMember._handle's table: message type -> handler, in the order of the
#: isinstance chain it replaced (a subclass takes the first that matches)
_HANDLERS: dict[type, Callable[[SwarmMember, Conn, Any, list[Action], float], None]] = {
    Haves: SwarmMember._msg_haves,
    Have: SwarmMember._msg_have,
    Piece: SwarmMember._on_piece,
    Request: SwarmMember._msg_request,
    Handshake: SwarmMember._on_handshake,
    BitfieldMsg: SwarmMember._msg_bitfield,
    HaveAll: SwarmMember._msg_bitfield,
    HaveNone: SwarmMember._msg_have_none,
    Choke: SwarmMember._msg_choke,
    Unchoke: SwarmMember._msg_unchoke,
    Interested: SwarmMember._msg_interest,
    NotInterested: SwarmMember._msg_interest,
    Cancel: SwarmMember._msg_cancel,
    RejectRequest: SwarmMember._msg_reject,
    AllowedFast: SwarmMember._msg_allowed_fast,
    ExtendedHandshake: SwarmMember._msg_extended_handshake,
    KeepAlive: SwarmMember._msg_nothing,
    SuggestPiece: SwarmMember._msg_nothing,
    Port: SwarmMember._msg_nothing,
    Extended: SwarmMember._msg_nothing,
}
