"""The asyncio adapter around one torrent's swarm member: it only moves bytes.

Theory of operation. All policy lives in the sans-IO roost.core.member
(`SwarmMember`). This module gives it what it cannot have: sockets (one
`PeerProtocol` per connection, a listening server, outgoing dials), the
clock (one timer, set to the member's next deadline after every call),
threads (hash-and-write on roost.engine.checker's worker, the final flush in a pool), storage, and
the tracker's HTTP. Each input becomes one member call; the actions it
returns are carried out in order by `_execute`, the only place that acts.

The path of a received block, socket to disk (docs/design.md counts the hops):
get_buffer / buffer_updated -> SwarmMember.receive (or, for the rest of a big
Piece body, body_buffer / body_received: the socket is read straight into the
block's buffer) -> PeerConnection -> Assembly.add (a whole-piece block is kept
as the piece, else copied into it) -> CheckAndWrite -> the checker's thread: SHA-1,
Storage.write_piece.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, cast

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
    DropWebSeed,
    Event,
    Flush,
    Flushed,
    PauseReading,
    PieceChecked,
    PieceUploaded,
    Progress,
    Report,
    ResumeReading,
    Send,
    SendBlock,
    Stop,
    WantWritable,
    WebData,
    WebFailed,
    WebFetch,
    WriteReady,
)
from roost.core.bitfield import Bitfield
from roost.core.member import HANDSHAKE_TIMEOUT as HANDSHAKE_TIMEOUT
from roost.core.member import SwarmMember
from roost.core.metainfo import Metainfo
from roost.engine.checker import PieceChecker
from roost.engine.config import SessionConfig
from roost.engine.loopwatch import LoopWatch
from roost.engine.reporter import Reporter
from roost.engine.storage import Storage
from roost.engine.tracker_client import TrackerClient, TrackerError
from roost.engine.webseed import WebSeedClient, WebSeedError
from roost.engine.zerocopy import send_direct, socket_fd
from roost.errors import RoostError

CONNECT_TIMEOUT = 5.0
# Linux's option number where Python lacks the name; elsewhere, none
TCP_NOTSENT_LOWAT: int | None = getattr(
    socket, "TCP_NOTSENT_LOWAT", 25 if sys.platform.startswith("linux") else None
)
LOWAT = 64 * 1024  # while a big body arrives, wake when this much of it is in
READ_SIZE = 256 * 1024  # a connection's scratch read buffer (messages other than big bodies)
STOPPED_ANNOUNCE_TIMEOUT = 3.0
# How much may wait, unsent, in front of a message to a peer. Everything to a
# peer goes down one TCP stream, so an Interested, a Request or a Have waits
# behind every block queued to that peer before it. With megabytes queued per
# peer a host's own requests sat seconds behind its uploads (at N = 100 the
# last hosts finished 1.5x the bound late: docs/sim.md, "Control messages
# no longer wait behind queued uploads"). The kernel holds at most
# UNSENT_LOWAT unsent bytes per socket (TCP_NOTSENT_LOWAT: bytes in flight,
# which keep the link busy, do not count), the transport at most WRITE_HIGH,
# and the member hands out WRITE_WINDOW (roost.core.uploads) before it asks
# for room again.
UNSENT_LOWAT = 64 * 1024
WRITE_HIGH = 64 * 1024


class PeerProtocol(asyncio.BufferedProtocol):
    """One connection: bytes in to the member, bytes out from its actions.

    Reads go where the bytes belong: while a big Piece body is arriving,
    straight into the buffer that becomes the piece (the kernel's copy is the
    only one); otherwise into one scratch buffer per connection, which the
    member parses and never keeps (it copies what outlives the call)."""

    def __init__(self, session: Session, dialled: tuple[str, int] | None) -> None:
        self.session = session
        self.dialled = dialled
        self.cid = 0
        self.transport: asyncio.Transport | None = None
        self.paused = False  # the transport's buffer is above its high-water mark
        self.zero_copy_fd: int | None = None
        self.scratch = memoryview(bytearray(READ_SIZE))
        self.into_body = False  # the last get_buffer handed out a Piece body
        self.raw_sock: Any = None  # a plain TCP socket (not TLS): SO_RCVLOWAT may be set
        self.lowat = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if TCP_NOTSENT_LOWAT is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, UNSENT_LOWAT)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_HIGH // 4)
        session = self.session
        self.zero_copy_fd = socket_fd(transport) if session.config.zero_copy else None
        if sock is not None and transport.get_extra_info("sslcontext") is None \
                and hasattr(socket, "SO_RCVLOWAT"):
            self.raw_sock = sock
        name = transport.get_extra_info("peername")
        address = (str(name[0]), int(name[1])) if name else self.dialled or ("?", 0)
        self.cid = session.register(self)
        session.feed(Connected(self.cid, address, self.dialled))

    def get_buffer(self, sizehint: int) -> memoryview:
        body = self.session.member.body_buffer(self.cid)
        self.into_body = body is not None
        return body if body is not None else self.scratch

    def _set_lowat(self, lowat: int) -> None:
        try:
            self.raw_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
        except (OSError, AttributeError):
            self.raw_sock = None  # not supported here: wake per read, as before
            return
        self.lowat = lowat

    def buffer_updated(self, nbytes: int) -> None:
        session = self.session
        member, now = session.member, session.loop.time()
        if self.into_body:
            session.act(member.body_received(self.cid, nbytes, now))
        else:
            session.act(member.receive(self.cid, self.scratch[:nbytes], now))
        if self.raw_sock is not None:
            # Inside a Piece body nothing else can arrive before its end, so the
            # kernel may wait for part of what is still to come before it wakes
            # us: a wake-up per LOWAT bytes, not per packet on a slow link.
            # Never more than the rest of the body, which the peer is sending.
            body = member.body_buffer(self.cid)
            lowat = min(len(body), LOWAT) if body is not None else 1
            if lowat != self.lowat:
                self._set_lowat(lowat)

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.protocols.pop(self.cid, None)
        self.session.feed(Closed(self.cid))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.session.feed(WriteReady(self.cid))


class Session:
    def __init__(
        self,
        meta: Metainfo,
        storage: Storage,
        have: Bitfield,
        config: SessionConfig,
        reporter: Reporter,
        *,
        trackers: list[list[str]] | None = None,
        rng: Any = None,
        web_seeds: list[str] | None = None,
    ) -> None:
        self.meta = meta
        self.storage = storage
        self.config = config
        self.reporter = reporter
        self.tiers = trackers if trackers is not None else [list(t) for t in meta.trackers]
        self.member = SwarmMember(
            meta.info,
            meta.info_hash,
            have,
            config,
            trackers=bool(self.tiers),
            report_uploads=config.upload_log is not None,
            rng=rng,
            # BEP 19: the torrent's url-list, unless the caller chose (roost fetch --web-seed)
            web_seeds=list(meta.url_list) if web_seeds is None else web_seeds,
        )
        self.loop = asyncio.get_running_loop()
        self.protocols: dict[int, PeerProtocol] = {}
        self._next_cid = 1
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roost-flush")
        self.checker = PieceChecker(self.loop, self._check_and_write, self._checked)
        self.tracker: TrackerClient | None = None
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.stopping = asyncio.Event()
        self.started = asyncio.Event()  # the member has started: events may be fed
        self.error: str | None = None
        self.upload_log: IO[str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.web_clients: dict[int, WebSeedClient] = {}  # web seed -> its connections
        self._web_tasks: dict[int, set[asyncio.Task[Any]]] = {}
        self.loop_watch = LoopWatch(self.loop, reporter.event, config.loop_stall)

    @property
    def complete(self) -> bool:
        return self.member.complete

    # ---- lifecycle ----
    async def run(self) -> bool:
        """Take part in the swarm until the policy says stop. True when complete."""
        if self.config.upload_log:
            try:
                self.upload_log = open(self.config.upload_log, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise RoostError(f"cannot open the upload log: {exc}") from None
        try:
            await self._listen()
        except BaseException:
            self._close_log()
            raise
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self.loop.add_signal_handler(sig, self.stop, f"signal {sig.name}")
        if self.tiers:
            config = self.config
            self.tracker = TrackerClient(
                self.tiers,
                info_hash=self.meta.info_hash,
                peer_id=self.member.peer_id,
                port=self.port,
                location=config.location,
                ip=config.announce_ip,
            )
        self.act(self.member.start(self.port, self.loop.time()))
        self.started.set()
        self.loop_watch.start()
        try:
            await self.stopping.wait()
        finally:
            await self._shutdown()
        return self.member.complete

    def stop(self, reason: str = "stopped") -> None:
        if not self.stopping.is_set():
            self.member.stopping = True
            self.reporter.event("stopping", reason=reason)
            self.stopping.set()

    async def _listen(self) -> None:
        low, high = self.config.ports
        tls = self.config.tls
        last: OSError | None = None
        for port in range(low, high + 1):
            try:
                self.server = await self.loop.create_server(
                    lambda: PeerProtocol(self, None),
                    self.config.listen_host,
                    port,
                    reuse_address=True,
                    ssl=tls.server if tls else None,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT if tls else None,
                )
            except OSError as exc:
                last = exc
                continue
            self.port = self.server.sockets[0].getsockname()[1]
            return
        raise RoostError(f"cannot listen on ports {low}-{high}: {last}")

    async def _shutdown(self) -> None:
        self.loop_watch.stop()
        for task in list(self._tasks):
            task.cancel()
        for client in self.web_clients.values():
            client.close()
        if self._timer is not None:
            self._timer.cancel()
        stopped = None
        for action in self.member.shutdown(self.loop.time()):
            if isinstance(action, Announce):
                stopped = action
            else:
                self._execute(action)
        if self.server is not None:
            self.server.close()
        if stopped is not None and self.tracker is not None:
            with contextlib.suppress(TrackerError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self._announce_once(stopped), STOPPED_ANNOUNCE_TIMEOUT)
        self.checker.close()
        self.pool.shutdown(wait=True)
        self._close_log()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                self.loop.remove_signal_handler(sig)

    def _close_log(self) -> None:
        if self.upload_log is not None:
            self.upload_log.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A background task that dies is a bug: say so and stop, never hang."""
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.error = f"internal error: {type(exc).__name__}: {exc}"
        self.reporter.event("error", message=self.error)
        self.stop("internal error")

    # ---- feeding the member ----
    def register(self, protocol: PeerProtocol) -> int:
        cid = self._next_cid
        self._next_cid += 1
        self.protocols[cid] = protocol
        return cid

    def feed(self, event: Event) -> None:
        self.act(self.member.event(event, self.loop.time()))

    def act(self, actions: list[Action]) -> None:
        """Carry out a member call's actions, then set the timer to its deadline."""
        for action in actions:
            self._execute(action)
        if self.stopping.is_set():
            return
        deadline = self.member.next_deadline()
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.act(self.member.handle_timer(self.loop.time()))

    # ---- carrying out actions ----
    def _execute(self, action: Action) -> None:
        if isinstance(action, Send):
            proto = self.protocols.get(action.conn)
            if proto is not None and proto.transport is not None:
                proto.transport.write(action.data)
        elif isinstance(action, SendBlock):
            self._send_block(action)
        elif isinstance(action, CheckAndWrite):
            self.checker.submit(action.index, action.data)
        elif isinstance(action, WantWritable):
            proto = self.protocols.get(action.conn)
            if proto is not None and not proto.paused:  # else resume_writing will say
                self.loop.call_soon(self.feed, WriteReady(action.conn))
        elif isinstance(action, Close):
            proto = self.protocols.pop(action.conn, None)
            if proto is not None and proto.transport is not None:
                proto.transport.close()
        elif isinstance(action, Report):
            self.reporter.event(action.name, **action.fields)
        elif isinstance(action, Progress):
            self.reporter.progress(
                done=action.done,
                total=action.total,
                down_rate=action.down_rate,
                up_rate=action.up_rate,
                peers=action.peers,
                state=action.state,
            )
        elif isinstance(action, Connect):
            self._spawn(self._connect(action.address))
        elif isinstance(action, Announce):
            self._spawn(self._announce(action))
        elif isinstance(action, (PauseReading, ResumeReading)):
            for proto in self.protocols.values():
                if proto.transport is not None and not proto.transport.is_closing():
                    if isinstance(action, PauseReading):
                        proto.transport.pause_reading()
                    else:
                        proto.transport.resume_reading()
        elif isinstance(action, Flush):
            self._spawn(self._flush())
        elif isinstance(action, PieceUploaded):
            if self.upload_log is not None:
                line = {"t": round(action.now, 4), "peer": action.peer, "piece": action.index}
                self.upload_log.write(json.dumps(line) + "\n")
        elif isinstance(action, Stop):
            if action.error is not None:
                self.error = action.error
            self.stop(action.reason)
        elif isinstance(action, WebFetch):
            task = self._spawn(self._web_fetch(action))
            tasks = self._web_tasks.setdefault(action.seed, set())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif isinstance(action, DropWebSeed):
            for task in self._web_tasks.pop(action.seed, set()):
                task.cancel()
            client = self.web_clients.pop(action.seed, None)
            if client is not None:
                client.close()

    def _send_block(self, action: SendBlock) -> None:
        """One Piece message: zero-copy while the transport has nothing queued,
        else (and for whatever the socket did not take) pread + transport."""
        proto = self.protocols.get(action.conn)
        if proto is None or proto.transport is None:
            return
        transport, header, length = proto.transport, action.header, action.length
        head = sent = 0
        fd = proto.zero_copy_fd
        if fd is not None and not transport.get_write_buffer_size():
            try:
                with self.storage.pinned_spans(action.index, action.begin, length) as spans:
                    head, sent = send_direct(fd, header, spans)
            except (BrokenPipeError, ConnectionResetError):
                self.feed_close(action.conn, "")  # the peer hung up: as quiet as the transport
                return
            except OSError as exc:
                self.feed_close(action.conn, f"send failed: {exc.strerror or exc}")
                return
        if head < len(header):
            transport.write(header[head:])
        if sent < length:
            # two writes, not header + data: that would copy the block once more
            rest = self.storage.read_block(action.index, action.begin + sent, length - sent)
            transport.write(rest)

    def feed_close(self, cid: int, reason: str) -> None:
        """A connection failed under us: close it, and tell the member at once."""
        proto = self.protocols.pop(cid, None)
        if proto is not None and proto.transport is not None:
            proto.transport.close()
        self.loop.call_soon(self.feed, Closed(cid, reason))

    def _check_and_write(self, index: int, data: bytearray) -> bool:
        """On the checker's thread: hash the piece and, when good, write it."""
        self.storage.fill_local(index, data)  # blocks held locally (a tree's reused files)
        if hashlib.sha1(data).digest() != self.meta.info.piece_hash(index):
            return False
        self.storage.write_piece(index, data)
        return True

    def _checked(self, index: int, ok: bool, error: str | None) -> None:
        self.feed(PieceChecked(index, ok, error))

    async def _web_fetch(self, action: WebFetch) -> None:
        """One WebFetch: its HTTP ranges, then WebData or WebFailed. The bytes are
        the core's to check, as a peer's are (roost.engine.webseed)."""
        client = self.web_clients.get(action.seed)
        if client is None:
            client = self.web_clients[action.seed] = WebSeedClient()
        try:
            data = await client.fetch(action.parts)
        except WebSeedError as exc:
            self.feed(WebFailed(action.request, exc.reason, exc.status))
            return
        except (OSError, ValueError) as exc:  # a URL that cannot be sent, a TLS error...
            self.feed(WebFailed(action.request, f"{type(exc).__name__}: {exc}"))
            return
        self.feed(WebData(action.request, data))

    async def _flush(self) -> None:
        await self.loop.run_in_executor(self.pool, self.storage.flush)
        self.feed(Flushed())

    async def _connect(self, address: tuple[str, int]) -> None:
        tls = self.config.tls
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: PeerProtocol(self, address),
                    address[0],
                    address[1],
                    ssl=tls.client if tls else None,
                    local_addr=self._source_address(),
                ),
                CONNECT_TIMEOUT,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            self.feed(ConnectFailed(address, str(exc) or type(exc).__name__))

    def _source_address(self) -> tuple[str, int] | None:
        """Connect from the address we listen on, when it is a specific one:
        peers' allowlists and the tracker know us by it, not by whatever
        address the route would pick on a multi-homed host."""
        host = self.config.listen_host
        if host in ("", "0.0.0.0", "::"):
            return None
        return (host, 0)

    async def _announce_once(self, action: Announce) -> Any:
        assert self.tracker is not None
        return await self.tracker.announce(
            event=action.event,
            uploaded=action.uploaded,
            downloaded=action.downloaded,
            left=action.left,
            numwant=self.config.numwant,
        )

    async def _announce(self, action: Announce) -> None:
        if self.tracker is None:
            return
        try:
            response = await self._announce_once(action)
        except TrackerError as exc:
            self.feed(AnnounceFailed(str(exc)))
            return
        self.feed(
            AnnounceAnswered(
                response.peers,
                self.tracker.next_announce_in(),
                response.expected_peers,
                response.complete_peers,
            )
        )
