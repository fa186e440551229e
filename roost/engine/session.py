"""One torrent's swarm membership: peers, pieces, tracker, policy.

Theory of operation. A Session owns the pure decision makers (PiecePicker,
Choker, SuperSeeder) and the adapters (Storage, TrackerClient, the listening
socket). Peers (engine.peer.Peer) call back into it for every event. A tick
every 0.5 s updates rates, reports progress, rechokes, detects snubbed and
idle peers, opens connections to known peers, and applies the completion
policy.

Downloaded blocks are assembled in a per-piece buffer; a full piece is
SHA-1-checked and written in a worker thread (hashlib and os.pwrite release
the GIL, so verification uses every core). Memory is bounded by the pieces in
flight, not by the payload size.

Bad data: a piece that fails its hash is re-fetched. If one peer sent all of
it, that peer is banned at once. Otherwise the blocks' digests are kept, and
when the piece later passes, the peers whose blocks differed from the good
data are banned (libtorrent's "smart ban").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import random
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from roost.bitfield import Bitfield
from roost.choker import Choker, PeerStat, SuperSeeder
from roost.engine.peer import Peer
from roost.engine.reporter import Reporter
from roost.engine.storage import Storage
from roost.engine.tls import PeerTLS
from roost.engine.tracker_client import AnnounceResponse, TrackerClient, TrackerError
from roost.errors import RemoteProtocolError, RoostError
from roost.metainfo import Metainfo
from roost.picker import BlockRequest, PiecePicker
from roost.ratelimit import TokenBucket
from roost.wire import BLOCK_SIZE, allowed_fast_set

TICK = 0.5
STALL_SECONDS = 10.0
STALE_OFFER_SECONDS = 3.0
RECHOKE_TICKS = 20  # a full rechoke every 10 s, as BEP 3 clients do
SNUB_SECONDS = 15.0
KEEPALIVE_SECONDS = 60.0
IDLE_SECONDS = 180.0
CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 10.0
ALLOWED_FAST_K = 8
OFFERS_PER_PEER = 4  # super-seeding: pieces revealed to a peer at a time

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class SessionConfig:
    listen_host: str = "0.0.0.0"
    ports: tuple[int, int] = (6881, 6999)
    announce_ip: str | None = None
    max_peers: int = 60
    # upload to every interested peer: with fewer slots than peers, ranking by
    # rate lets the leaders pull ahead and the last host ends the deploy late
    # (lab, N=16: hosts finished 3.8 s apart with 8 slots, 0.7 s with all)
    unchoke_slots: int = 60
    allow: list[Network] | None = None
    upload_rate: float | None = None
    download_rate: float | None = None
    super_seed: bool = False
    seed: bool = True  # keep uploading after completion
    linger: float | None = 10.0  # None: never stop for lack of interest
    expected_peers: int | None = None
    stop_when_swarm_complete: bool = False
    location: str | None = None
    big_block: int = 256 * 1024
    initial_peers: list[tuple[str, int]] = field(default_factory=list)
    numwant: int = 200
    peer_id_prefix: bytes = b"-RO0100-"
    zero_copy: bool = True  # sendfile uploads where the transport allows (roost.engine.zerocopy)
    upload_log: str | None = None  # a JSON line per whole piece uploaded (BEP 16 audits)
    tls: PeerTLS | None = None  # mutual TLS with the deploy CA (roost.engine.tls)


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
        rng: random.Random | None = None,
    ) -> None:
        self.meta = meta
        self.info = meta.info
        self.info_hash = meta.info_hash
        self.num_pieces = meta.info.num_pieces
        self.storage = storage
        self.config = config
        self.reporter = reporter
        self.rng = rng or random.Random()
        suffix = bytes(self.rng.getrandbits(8) for _ in range(20 - len(config.peer_id_prefix)))
        self.peer_id = config.peer_id_prefix + suffix
        self.have = have
        self.picker = PiecePicker(
            self.num_pieces,
            self.info.piece_length,
            self.info.total_length,
            have=have,
            rng=self.rng,
        )
        self.choker = Choker(slots=config.unchoke_slots, rng=self.rng)
        self.superseeder = (
            SuperSeeder(self.num_pieces, rng=self.rng, max_offers=OFFERS_PER_PEER)
            if config.super_seed
            else None
        )
        self.up_bucket = TokenBucket(config.upload_rate)
        self.down_bucket = TokenBucket(config.download_rate)
        tiers = trackers if trackers is not None else [list(t) for t in meta.trackers]
        self.tracker: TrackerClient | None = None
        self._tiers = tiers
        self.peers: dict[tuple[str, int], Peer] = {}
        self.by_id: dict[bytes, Peer] = {}
        self.candidates: dict[tuple[str, int], float] = {}  # address -> not before
        self.connecting: set[tuple[str, int]] = set()
        self.banned_ids: set[bytes] = set()
        self.banned_addrs: set[tuple[str, int]] = set()
        self.banned_ips: set[str] = set()
        self.buffers: dict[int, bytearray] = {}
        self.block_from: dict[int, dict[int, tuple[str, int]]] = {}
        self.suspects: dict[int, list[tuple[int, bytes, tuple[str, int]]]] = {}
        self.verifying: set[int] = set()
        self.verifying_bytes = 0
        # pieces waiting for hash + write may hold at most this much memory;
        # past it, peers stop requesting (backpressure instead of growth)
        self.max_verifying_bytes = max(64 * 1024 * 1024, 8 * meta.info.piece_length)
        self.pool = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 2, thread_name_prefix="roost-verify"
        )
        self.uploaded = 0
        self.downloaded = 0
        self.wasted_bytes = 0
        self.upload_log: IO[str] | None = None
        self.port = 0
        self.server: asyncio.AbstractServer | None = None
        self.stopping = asyncio.Event()
        self.completed_at: float | None = None
        self.swarm_expected: int | None = config.expected_peers
        self.swarm_complete: int | None = None
        self.last_interest_at = 0.0
        self.error: str | None = None
        self.loop = asyncio.get_running_loop()
        self._ticks = 0
        self._last_tick = self.loop.time()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rate_paused_until = 0.0
        self._stall_mark = -1
        self._stall_since = 0.0

    # ---- small accessors used by Peer ----
    def now(self) -> float:
        return self.loop.time()

    def piece_size(self, index: int) -> int:
        return self.info.piece_size(index)

    @property
    def complete(self) -> bool:
        return self.have.all()

    def bytes_done(self) -> int:
        return self.info.total_length - self.picker.bytes_left()

    # ---- lifecycle ----
    async def run(self) -> bool:
        """Take part in the swarm until the policy says stop. True when complete."""
        if self.config.upload_log:
            try:
                self.upload_log = open(self.config.upload_log, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise RoostError(f"cannot open the upload log: {exc}") from None
        await self._listen()
        self._install_signals()
        if self._tiers:
            self.tracker = TrackerClient(
                self._tiers,
                info_hash=self.info_hash,
                peer_id=self.peer_id,
                port=self.port,
                location=self.config.location,
                ip=self.config.announce_ip,
            )
        for address in self.config.initial_peers:
            self.candidates[address] = 0.0
        self.reporter.event(
            "started",
            port=self.port,
            peer_id=self.peer_id.hex(),
            pieces=self.num_pieces,
            have=self.have.count(),
            state="seeding" if self.complete else "downloading",
        )
        if self.complete:
            self.completed_at = self.now()
        self.last_interest_at = self.now()
        self._connect_more()
        self._spawn(self._announce_loop())
        try:
            while not self.stopping.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), TICK)
                self._tick()
        finally:
            await self._shutdown()
        return self.complete

    def stop(self, reason: str = "stopped") -> None:
        if not self.stopping.is_set():
            self.reporter.event("stopping", reason=reason)
            self.stopping.set()

    def _install_signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self.loop.add_signal_handler(sig, self.stop, f"signal {sig.name}")

    async def _listen(self) -> None:
        low, high = self.config.ports
        last: OSError | None = None
        for port in range(low, high + 1):
            try:
                self.server = await self.loop.create_server(
                    lambda: Peer(self, ("?", 0), outgoing=False),
                    self.config.listen_host,
                    port,
                    reuse_address=True,
                    ssl=self.config.tls.server if self.config.tls else None,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self.config.tls else None,
                )
            except OSError as exc:
                last = exc
                continue
            sock = self.server.sockets[0]
            self.port = sock.getsockname()[1]
            return
        raise RoostError(f"cannot listen on ports {low}-{high}: {last}")

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for peer in list(self.peers.values()):
            peer.close("shutting down")
        if self.server is not None:
            self.server.close()
        if self.tracker is not None:
            with contextlib.suppress(TrackerError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self._announce("stopped"), 3.0)
        self.pool.shutdown(wait=True)
        if self.upload_log is not None:
            self.upload_log.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                self.loop.remove_signal_handler(sig)

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A background task that dies is a bug: say so and stop, never hang."""
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.error = f"internal error: {type(exc).__name__}: {exc}"
        self.reporter.event("error", message=self.error)
        self.stop("internal error")

    # ---- tracker ----
    async def _announce(self, event: str | None) -> AnnounceResponse | None:
        if self.tracker is None:
            return None
        return await self.tracker.announce(
            event=event,
            uploaded=self.uploaded,
            downloaded=self.downloaded,
            left=self.picker.bytes_left(),
            numwant=self.config.numwant,
        )

    async def _announce_loop(self) -> None:
        event: str | None = "started"
        completed_sent = self.complete
        failures = 0
        while not self.stopping.is_set():
            if self.tracker is None:
                return
            try:
                response = await self._announce(event)
            except TrackerError as exc:
                failures += 1
                self.reporter.event("tracker_error", message=str(exc))
                await self._sleep_or_stop(min(30.0, 2.0 * failures))
                continue
            failures = 0
            event = None
            if response is not None:
                self._on_announce(response)
            if self.complete and not completed_sent:
                event, completed_sent = "completed", True
                continue
            interval = self.tracker.next_announce_in()
            waited = 0.0
            # wake early to send `completed` at once
            while waited < interval and not self.stopping.is_set():
                await self._sleep_or_stop(0.25)
                waited += 0.25
                if self.complete and not completed_sent:
                    break

    def _on_announce(self, response: AnnounceResponse) -> None:
        if response.expected_peers is not None:
            self.swarm_expected = response.expected_peers
        if response.complete_peers is not None:
            self.swarm_complete = response.complete_peers
        for address in response.peers:
            if self._is_self(address) or address in self.peers:
                continue
            self.candidates.setdefault(address, 0.0)
        self._connect_more()  # now, not at the next tick: startup time matters

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    def _is_self(self, address: tuple[str, int]) -> bool:
        if address[1] != self.port:
            return False
        own = {self.config.announce_ip, self.config.listen_host, "127.0.0.1", "::1"}
        return address[0] in own

    # ---- connections ----
    def allowed_address(self, host: str) -> bool:
        if host in self.banned_ips:
            return False
        if self.config.allow is None:
            return True
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.config.allow)

    def on_connected(self, peer: Peer) -> None:
        assert peer.transport is not None
        name = peer.transport.get_extra_info("peername")
        if name:
            peer.address = (str(name[0]), int(name[1]))
        if not self.allowed_address(peer.address[0]):
            peer.close("address not allowed")
            return
        if len(self.peers) >= self.config.max_peers and not peer.outgoing:
            peer.close("connection cap reached")
            return
        self.peers[peer.key] = peer
        self.loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_deadline, peer)

    def _handshake_deadline(self, peer: Peer) -> None:
        if not peer.ready and not peer.closed:
            peer.close("handshake timeout")

    def accept_handshake(self, peer: Peer) -> bool:
        rid = peer.remote_id
        assert rid is not None
        if rid == self.peer_id or rid in self.banned_ids:
            return False
        other = self.by_id.get(rid)
        if other is not None and not other.closed:
            # two connections to one peer: both ends keep the one opened by the
            # smaller peer id, so they agree without talking about it
            new_initiator = self.peer_id if peer.outgoing else rid
            if other.outgoing == peer.outgoing or new_initiator == min(self.peer_id, rid):
                other.close("replaced by a newer connection")
            else:
                return False
        self.by_id[rid] = peer
        return True

    def initial_availability(self, peer: Peer) -> bytes:
        wire = peer.wire
        if self.superseeder is not None:
            return wire.send_have_none() if wire.fast else b""
        if self.complete and wire.fast:
            return wire.send_have_all()
        if self.have.any():
            return wire.send_bitfield(self.have)
        return wire.send_have_none() if wire.fast else b""

    def on_ready(self, peer: Peer) -> None:
        if self.superseeder is not None:
            self.superseeder.add_peer(peer.key, peer.bitfield)
        if peer.wire.fast and self.complete is False and self.have.any():
            for index in self.allowed_fast_for(peer):
                peer.send(peer.wire.send_allowed_fast(index))
        self.offer(peer)

    def allowed_fast_for(self, peer: Peer) -> set[int]:
        """BEP 6: pieces this peer may fetch from us while choked (only ones we have)."""
        try:
            ip = ipaddress.ip_address(peer.address[0]).packed
        except ValueError:
            return set()
        if len(ip) != 4:
            return set()
        pieces = allowed_fast_set(ip, self.info_hash, self.num_pieces, ALLOWED_FAST_K)
        return {i for i in pieces if self.have[i]}

    def on_closed(self, peer: Peer) -> None:
        if peer.forgotten:
            return
        peer.forgotten = True
        if self.peers.get(peer.key) is peer:
            del self.peers[peer.key]
        if peer.remote_id is not None and self.by_id.get(peer.remote_id) is peer:
            del self.by_id[peer.remote_id]
        if not peer.am_choking and not self.stopping.is_set():
            self.loop.call_soon(self._rechoke)  # its upload slot is free now
        if peer.in_picker:
            peer.drop_requests(send_cancel=False)
            self.picker.remove_peer(peer.key)
        if self.superseeder is not None and peer.ready:
            # added at handshake (on_ready), even if it never sent its availability
            self.superseeder.remove_peer(peer.key)

    def log_close(self, peer: Peer, reason: str) -> None:
        if reason and reason != "shutting down":
            self.reporter.event(
                "peer_closed",
                peer=f"{peer.address[0]}:{peer.address[1]}",
                client=peer.client,
                reason=reason,
            )

    def protocol_error(self, peer: Peer, exc: RemoteProtocolError) -> None:
        if exc.ban:
            self.ban(peer, str(exc))

    def internal_error(self, peer: Peer, exc: Exception) -> None:
        self.reporter.event(
            "internal_error",
            peer=f"{peer.address[0]}:{peer.address[1]}",
            error=f"{type(exc).__name__}: {exc}",
        )

    def ban(self, peer: Peer, reason: str) -> None:
        """Refuse this peer from now on: by peer id, by address, by IP unless loopback.

        Loopback peers all share 127.0.0.1 (local swarms and tests), so an IP
        ban there would ban the whole swarm."""
        if peer.remote_id is not None:
            self.banned_ids.add(peer.remote_id)
        self.banned_addrs.add(peer.address)
        with contextlib.suppress(ValueError):
            if not ipaddress.ip_address(peer.address[0]).is_loopback:
                self.banned_ips.add(peer.address[0])
        self.reporter.event(
            "peer_banned",
            peer=f"{peer.address[0]}:{peer.address[1]}",
            client=peer.client,
            reason=reason,
        )
        peer.close(f"banned: {reason}")

    def _connect_more(self) -> None:
        room = self.config.max_peers - len(self.peers) - len(self.connecting)
        if room <= 0 or (self.complete and not self.config.seed):
            return
        now = self.now()
        connected = {p.address for p in self.peers.values()}
        for address, not_before in list(self.candidates.items()):
            if room <= 0:
                break
            if (
                not_before > now
                or address in connected
                or address in self.connecting
                or address in self.banned_addrs
                or not self.allowed_address(address[0])
            ):
                continue
            room -= 1
            self.connecting.add(address)
            self._spawn(self._connect(address))

    async def _connect(self, address: tuple[str, int]) -> None:
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: Peer(self, address, outgoing=True),
                    address[0],
                    address[1],
                    ssl=self.config.tls.client if self.config.tls else None,
                    local_addr=self._source_address(),
                ),
                CONNECT_TIMEOUT,
            )
            self.candidates[address] = self.now() + 5.0
        except (OSError, asyncio.TimeoutError):
            self.candidates[address] = self.now() + 3.0
        finally:
            self.connecting.discard(address)

    def _source_address(self) -> tuple[str, int] | None:
        """Connect from the address we listen on, when it is a specific one:
        peers' allowlists and the tracker know us by it, not by whatever
        address the route would pick on a multi-homed host."""
        host = self.config.listen_host
        if host in ("", "0.0.0.0", "::"):
            return None
        return (host, 0)

    # ---- availability ----
    def on_bitfield(self, peer: Peer) -> None:
        if peer.in_picker:
            self.picker.remove_peer(peer.key)
        peer.in_picker = True
        if peer.is_seed:
            self.picker.add_peer_have_all(peer.key)
        else:
            self.picker.add_peer(peer.key, peer.bitfield)
        if self.superseeder is not None:
            # it was added empty at handshake time; now we know what it has
            self.superseeder.set_bitfield(peer.key, peer.bitfield)
            self.offer(peer)
        if self.complete and peer.is_seed:
            peer.close("both seeds")
            return
        peer.update_interest()

    def on_have(self, peer: Peer, index: int) -> None:
        if not peer.in_picker:  # a Have with no bitfield first: it had nothing before
            peer.in_picker = True
            self.picker.add_peer(peer.key, Bitfield(self.num_pieces))
        self.picker.peer_has(peer.key, index)
        if self.superseeder is not None:
            # only the peers whose offer this Have released get a new one
            for key in self.superseeder.on_peer_has(peer.key, index):
                freed = self.peers.get(key)  # type: ignore[call-overload]
                if freed is not None:
                    self.offer(freed)
        if not peer.am_interested and not self.have[index]:
            peer.update_interest()

    def on_interest_changed(self, peer: Peer) -> None:
        """Fill a free upload slot at once instead of waiting for the next round;
        a full rechoke runs only every RECHOKE_TICKS (choke churn drops queued
        requests, which costs a round trip and bandwidth on every switch)."""
        if peer.peer_interested:
            self.last_interest_at = self.now()
            if peer.am_choking and self._unchoked_count() < self.config.unchoke_slots + 1:
                peer.set_choking(False)
        elif not peer.am_choking:
            self.loop.call_soon(self._rechoke)

    def _unchoked_count(self) -> int:
        return sum(1 for p in self.peers.values() if p.ready and not p.am_choking)

    # ---- downloading ----
    def on_block(self, peer: Peer, index: int, begin: int, block: bytes) -> None:
        self.downloaded += len(block)
        wait = self.down_bucket.consume(len(block), self.now())
        if wait > 0:
            self._pause_reading(wait)
        if self.have[index] or index in self.verifying:
            self.wasted_bytes += len(block)
            return
        buf = self.buffers.get(index)
        if buf is None:
            buf = self.buffers[index] = bytearray(self.piece_size(index))
            self.block_from[index] = {}
        sources = self.block_from[index]
        view = memoryview(block)  # slices without copying; the copy is into buf
        complete = False
        for offset in range(0, len(block), BLOCK_SIZE):
            at = begin + offset
            size = min(BLOCK_SIZE, len(block) - offset)
            outcome = self.picker.block_received(peer.key, index, at, size)
            if outcome.new:
                buf[at : at + size] = view[offset : offset + size]
                sources[at] = peer.key
            else:
                self.wasted_bytes += size
            for other_key, req in outcome.cancels:
                other = self.peers.get(other_key)  # type: ignore[call-overload]
                if other is not None:
                    other.cancel_block(req.index, req.begin, req.length)
            complete = complete or outcome.piece_complete
        if complete:
            self._verify(index)

    def backlogged(self) -> bool:
        return self.verifying_bytes >= self.max_verifying_bytes

    def release_blocks(self, peer: Peer, index: int, begin: int, length: int) -> None:
        for offset in range(0, length, BLOCK_SIZE):
            size = min(BLOCK_SIZE, length - offset)
            self.picker.request_rejected(peer.key, BlockRequest(index, begin + offset, size))

    def wasted(self, nbytes: int) -> None:
        self.wasted_bytes += nbytes

    def _pause_reading(self, seconds: float) -> None:
        until = self.now() + seconds
        if until <= self._rate_paused_until:
            return
        self._rate_paused_until = until
        for peer in self.peers.values():
            if peer.transport is not None:
                peer.transport.pause_reading()
        self.loop.call_later(seconds, self._resume_reading)

    def _resume_reading(self) -> None:
        if self.now() + 0.001 < self._rate_paused_until:
            return
        for peer in self.peers.values():
            if peer.transport is not None and not peer.closed:
                peer.transport.resume_reading()

    def _verify(self, index: int) -> None:
        buf = self.buffers.pop(index)
        sources = self.block_from.pop(index, {})
        self.verifying.add(index)
        self.verifying_bytes += len(buf)
        future = self.loop.run_in_executor(self.pool, self._check_and_write, index, buf)
        future.add_done_callback(lambda f: self._verified(index, buf, sources, f))

    def _check_and_write(self, index: int, buf: bytearray) -> bool:
        if hashlib.sha1(buf).digest() != self.info.piece_hash(index):
            return False
        self.storage.write_piece(index, buf)
        return True

    def _verified(
        self,
        index: int,
        buf: bytearray,
        sources: dict[int, tuple[str, int]],
        future: asyncio.Future[bool],
    ) -> None:
        self.verifying.discard(index)
        was_backlogged = self.backlogged()
        self.verifying_bytes -= len(buf)
        if was_backlogged and not self.backlogged():
            for peer in list(self.peers.values()):
                if peer.ready and not peer.closed:
                    peer.fill_requests()
        if self.stopping.is_set() and future.cancelled():
            return
        try:
            ok = future.result()
        except (OSError, RoostError) as exc:
            self.error = f"cannot write piece {index}: {exc}"
            self.reporter.event("error", message=self.error)
            self.stop("disk error")
            return
        if ok:
            self._piece_passed(index, buf)
        else:
            self._piece_failed(index, buf, sources)

    def _piece_passed(self, index: int, buf: bytearray) -> None:
        self.picker.piece_verified(index)
        self.have.set(index)
        for begin, digest, key in self.suspects.pop(index, []):
            good = hashlib.sha1(buf[begin : begin + BLOCK_SIZE]).digest()
            peer = self.peers.get(key)
            if digest != good and peer is not None:
                self.ban(peer, f"sent a corrupt block of piece {index}")
        for peer in list(self.peers.values()):
            if peer.ready:
                peer.send(peer.wire.send_have(index))
                if peer.am_interested and not self.picker.is_interesting(peer.key):
                    peer.update_interest()
        if self.complete:
            self._on_complete()

    def _piece_failed(
        self, index: int, buf: bytearray, sources: dict[int, tuple[str, int]]
    ) -> None:
        self.picker.piece_failed(index)
        senders = set(sources.values())
        self.reporter.event("hash_failed", piece=index, peers=len(senders))
        if len(senders) == 1:
            peer = self.peers.get(next(iter(senders)))
            if peer is not None:
                self.ban(peer, f"sent piece {index} that failed its hash check")
            return
        suspects = self.suspects.setdefault(index, [])
        for begin, key in sources.items():
            digest = hashlib.sha1(buf[begin : begin + BLOCK_SIZE]).digest()
            suspects.append((begin, digest, key))

    def _on_complete(self) -> None:
        self.completed_at = self.now()
        self.last_interest_at = self.now()
        self._spawn(self._finish())
        self.loop.call_soon(self._rechoke)  # now seeding: slots go to the laggards

    async def _finish(self) -> None:
        await self.loop.run_in_executor(self.pool, self.storage.flush)
        self.reporter.event(
            "complete",
            bytes=self.info.total_length,
            downloaded=self.downloaded,
            wasted=self.wasted_bytes,
        )
        for peer in list(self.peers.values()):
            if peer.is_seed:
                peer.close("both seeds")
            else:
                peer.update_interest()
        if not self.config.seed:
            self.stop("complete")

    # ---- uploading ----
    def may_serve(self, peer: Peer, index: int) -> bool:
        if not self.have[index]:
            return False
        if self.superseeder is not None:
            return bool(self.superseeder.may_serve(peer.key, index))
        return True

    def upload_wait(self, nbytes: int) -> float:
        return self.up_bucket.consume(nbytes, self.now())

    def on_uploaded(self, peer: Peer, index: int, begin: int, length: int) -> None:
        self.uploaded += length
        # distinct blocks, not bytes: a block sent twice (re-requested after a
        # snub or in endgame) must not make a half-sent piece count as sent
        blocks = peer.sent_blocks.setdefault(index, set())
        blocks.update(range(begin // BLOCK_SIZE, -(-(begin + length) // BLOCK_SIZE)))
        if len(blocks) * BLOCK_SIZE >= self.piece_size(index):
            del peer.sent_blocks[index]
            if self.upload_log is not None:
                line = {"t": round(self.now(), 4), "peer": f"{peer.key[0]}:{peer.key[1]}"}
                self.upload_log.write(json.dumps({**line, "piece": index}) + "\n")
            if self.superseeder is not None:
                self.superseeder.on_sent(peer.key, index)
                self.offer(peer)

    def _withdraw_stale_offers(self, now: float) -> None:
        """Pieces revealed to a peer that has not fetched anything from us for
        STALE_OFFER_SECONDS (it is choked, slow or gone) are revealed to others
        instead; otherwise the last uncovered pieces can wait forever."""
        assert self.superseeder is not None
        for peer in self.peers.values():
            if not peer.ready or peer.forgotten:
                continue
            idle_since = max(peer.last_upload_at, peer.offered_at)
            if now - idle_since > STALE_OFFER_SECONDS and self.superseeder.offers_of(peer.key):
                self.superseeder.withdraw(peer.key)

    def on_unchoked(self, peer: Peer) -> None:
        self.offer(peer)

    def offer(self, peer: Peer) -> None:
        """Super-seeding: reveal pieces one at a time, each to as few peers as
        possible, and only to peers we upload to (unchoked)."""
        if self.superseeder is None or not peer.ready or peer.forgotten:
            return
        for _ in range(OFFERS_PER_PEER):
            index = self.superseeder.next_offer(peer.key)
            if index is None:
                return
            peer.send(peer.wire.send_have(index))
            peer.offered_at = self.now()
            peer.offered_at = self.now()

    def offer_all(self) -> None:
        # peers we upload to first: a piece revealed to a choked peer waits
        for peer in sorted(self.peers.values(), key=lambda p: p.am_choking):
            self.offer(peer)

    # ---- periodic work ----
    def _tick(self) -> None:
        now = self.now()
        dt = now - self._last_tick
        self._last_tick = now
        self._ticks += 1
        down = up = 0.0
        for peer in list(self.peers.values()):
            peer.down.tick(dt)
            peer.up.tick(dt)
            down += peer.down.rate
            up += peer.up.rate
            self._check_peer(peer, now)
        if self._ticks % RECHOKE_TICKS == 1:
            self._rechoke()
        if self.superseeder is not None:
            self._withdraw_stale_offers(now)
            self.offer_all()  # a sweep, in case a release was missed
        self._connect_more()
        for peer in list(self.peers.values()):
            if peer.ready and not peer.closed:
                peer.fill_requests()
        state = "seeding" if self.complete else "downloading"
        self.reporter.progress(
            done=self.bytes_done(),
            total=self.info.total_length,
            down_rate=down,
            up_rate=up,
            peers=sum(1 for p in self.peers.values() if p.ready),
            state=state,
        )
        self._report_stall(now)
        self._apply_policy(now)

    def _report_stall(self, now: float) -> None:
        """No verified piece for STALL_SECONDS while incomplete: say why, once a
        period, so a stuck swarm can be diagnosed from the JSON log alone."""
        done = self.bytes_done()
        if done != self._stall_mark:
            self._stall_mark, self._stall_since = done, now
            return
        if self.complete or now - self._stall_since < STALL_SECONDS:
            return
        self._stall_since = now
        missing = [i for i in range(self.num_pieces) if not self.have[i]][:8]
        peers = [
            {
                "peer": f"{p.address[0]}:{p.address[1]}",
                "choked_us": p.peer_choking,
                "interested": p.am_interested,
                "outstanding": len(p.outstanding),
                "has_missing": sum(1 for i in missing if p.bitfield[i]),
                "snubbed": p.snubbed,
                "write_paused": p.write_paused,
                "queue": len(p.upload_queue),
            }
            for p in self.peers.values()
            if p.ready
        ]
        self.reporter.event(
            "stalled",
            missing=missing,
            verifying=len(self.verifying),
            buffers=len(self.buffers),
            peers=peers,
        )

    def _check_peer(self, peer: Peer, now: float) -> None:
        if not peer.ready:
            return
        if peer.outstanding and now - peer.last_block_at > SNUB_SECONDS and not peer.snubbed:
            peer.snubbed = True
            peer.drop_requests(send_cancel=True)
        if now - peer.last_send_at > KEEPALIVE_SECONDS:
            peer.send(peer.wire.send_keepalive())
        if now - peer.last_recv_at > IDLE_SECONDS:
            peer.close("idle")
        if peer.peer_interested:
            self.last_interest_at = now

    def _rechoke(self) -> None:
        stats = [
            PeerStat(
                key=p.key,
                interested=p.peer_interested,
                download_rate=p.down.rate,
                upload_rate=p.up.rate,
                is_seed=p.is_seed,
                snubbed=p.snubbed,
                missing=self.num_pieces - p.bitfield.count(),
            )
            for p in self.peers.values()
            if p.ready
        ]
        unchoked = self.choker.rechoke(stats, seeding=self.complete)
        for peer in list(self.peers.values()):
            if peer.ready:
                peer.set_choking(peer.key not in unchoked)

    def _apply_policy(self, now: float) -> None:
        if not self.complete or self.completed_at is None:
            return
        if not self.config.seed:
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
            self.stop("every expected peer is complete")
            return
        if expected is None and linger is not None and now - self.last_interest_at >= linger:
            self.stop(f"no interested peer for {linger:g} s")


def parse_allow(entries: list[str]) -> list[Network]:
    """CIDRs or addresses, as given to --allow."""
    nets: list[Network] = []
    for entry in entries:
        for item in entry.replace(",", " ").split():
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise RoostError(f"--allow: {item!r} is not an address or network") from None
    return nets
