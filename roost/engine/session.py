"""One torrent's swarm membership: peers, pieces, tracker, policy.

Theory of operation. A Session is the coordinator: it owns the pure decision
makers (PiecePicker, Choker) and the adapters (Storage, TrackerClient, the
listening socket), and delegates one job each to its helpers:

* engine.verify.PieceVerifier: assembles downloaded blocks into pieces,
  hash-checks and writes them in worker threads, bans peers that sent bad
  data (smart ban), and applies backpressure while the disk is behind;
* engine.offers.Offers: the origin's super-seeding (BEP 16) and upload log;
* engine.announcer.Announcer: the tracker announces and what they return;
* engine.diagnostics.StallReporter: says why a download makes no progress.

Peers (engine.peer.Peer) call back into the Session for every event. A tick
every 0.5 s updates rates, reports progress, rechokes, detects snubbed and
idle peers, opens connections to known peers, and applies the completion
policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from roost.admission import Admission, PeerView
from roost.bitfield import Bitfield
from roost.choker import Choker, PeerStat, SuperSeeder
from roost.engine.announcer import Announcer
from roost.engine.config import Network as Network
from roost.engine.config import SessionConfig as SessionConfig
from roost.engine.config import parse_allow as parse_allow
from roost.engine.diagnostics import STALL_SECONDS as STALL_SECONDS
from roost.engine.diagnostics import StallReporter
from roost.engine.offers import OFFERS_PER_PEER as OFFERS_PER_PEER
from roost.engine.offers import STALE_OFFER_SECONDS as STALE_OFFER_SECONDS
from roost.engine.offers import Offers
from roost.engine.peer import Peer
from roost.engine.reporter import Reporter
from roost.engine.storage import Storage
from roost.engine.tracker_client import TrackerClient
from roost.engine.verify import PieceVerifier
from roost.errors import RemoteProtocolError, RoostError
from roost.metainfo import Metainfo
from roost.picker import BlockRequest, PiecePicker
from roost.ratelimit import TokenBucket
from roost.wire import BLOCK_SIZE, allowed_fast_set

# the "X as X" imports above re-export names that moved to the helper modules
# (SessionConfig, parse_allow, Network, STALL_SECONDS, OFFERS_PER_PEER,
# STALE_OFFER_SECONDS), so existing importers of roost.engine.session keep working

TICK = 0.5
HAVE_BATCH_SECONDS = 0.2  # how long a passed piece may wait to be announced
RECHOKE_TICKS = 20  # a full rechoke every 10 s, as BEP 3 clients do
SNUB_SECONDS = 15.0
KEEPALIVE_SECONDS = 60.0
IDLE_SECONDS = 180.0
CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 5.0  # TLS and BitTorrent handshakes (roost.admission)
ALLOWED_FAST_K = 8


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
        self.up_bucket = TokenBucket(config.upload_rate)
        self.down_bucket = TokenBucket(config.download_rate)
        tiers = trackers if trackers is not None else [list(t) for t in meta.trackers]
        self.announcer = Announcer(self, tiers)
        self.peers: dict[tuple[str, int], Peer] = {}
        self.by_id: dict[bytes, Peer] = {}
        self.candidates: dict[tuple[str, int], float] = {}  # address -> not before
        # which peer a candidate address turned out to be: an incoming connection
        # comes from an ephemeral port, so without this we would keep dialling
        # peers we already talk to, only for the duplicate to be closed
        self.candidate_ids: dict[tuple[str, int], bytes] = {}
        self._connect_errors: dict[tuple[str, int], str] = {}  # the last one reported
        self.fellow_seeds: set[bytes] = set()  # peer ids closed as "both seeds"
        self.connecting: set[tuple[str, int]] = set()
        # who gets a slot: pending budget, per-address caps, eviction (pure policy)
        self.admission = Admission(config.max_peers, handshake_seconds=HANDSHAKE_TIMEOUT)
        self.banned_ids: set[bytes] = set()
        self.banned_addrs: set[tuple[str, int]] = set()
        self.banned_ips: set[str] = set()
        # hashing and disk writes (PieceVerifier), and the final flush
        self.pool = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 2, thread_name_prefix="roost-verify"
        )
        self.verifier = PieceVerifier(self, self.pool)
        self.offers = Offers(self, super_seed=config.super_seed, rng=self.rng)
        self.stall = StallReporter(self)
        self.uploaded = 0
        self.downloaded = 0
        self.wasted_bytes = 0
        self.port = 0
        self.server: asyncio.AbstractServer | None = None
        self.stopping = asyncio.Event()
        self.completed_at: float | None = None
        self.swarm_expected: int | None = config.expected_peers
        self.swarm_complete: int | None = None
        self.last_interest_at = 0.0
        self.error: str | None = None
        self.loop = asyncio.get_running_loop()
        self._unannounced: list[int] = []
        self._have_timer: asyncio.TimerHandle | None = None
        self._ticks = 0
        self._last_tick = self.loop.time()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rate_paused_until = 0.0

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

    @property
    def superseeder(self) -> SuperSeeder | None:
        return self.offers.superseeder

    @property
    def upload_log(self) -> IO[str] | None:
        return self.offers.upload_log

    @property
    def tracker(self) -> TrackerClient | None:
        return self.announcer.client

    # ---- lifecycle ----
    async def run(self) -> bool:
        """Take part in the swarm until the policy says stop. True when complete."""
        if self.config.upload_log:
            self.offers.open_log(self.config.upload_log)
        try:
            await self._listen()
        except BaseException:
            self.offers.close_log()
            raise
        self._install_signals()
        self.announcer.start()
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
            if not self.config.seed:  # nothing to fetch, nobody to serve: done
                self._spawn(self._finish())
        self.last_interest_at = self.now()
        self.connect_more()
        self._spawn(self.announcer.run())
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
        self._report_refusals(final=True)
        if self.server is not None:
            self.server.close()
        await self.announcer.announce_stopped()
        self.pool.shutdown(wait=True)
        self.offers.close_log()
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
            self.admission.count("address not allowed", peer.address)
            peer.close("")  # counted, not logged: a flood would flood the log
            return
        # not yet handshaken: no slot of max_peers, only the small pending budget
        for key in self.admission.arrive(peer.key, self.now(), incoming=not peer.outgoing):
            self._drop(key)
        self.peers[peer.key] = peer

    def _drop(self, key: tuple[str, int]) -> None:
        """Close a connection the admission policy gave up on (it counted why)."""
        peer = self.peers.get(key)
        if peer is not None:
            peer.close("" if peer.remote_id is None else "evicted for a peer that may trade")

    def accept_handshake(self, peer: Peer) -> bool:
        rid = peer.remote_id
        assert rid is not None
        if rid == self.peer_id or rid in self.banned_ids:
            return False
        other = self.by_id.get(rid)
        if peer.outgoing:
            self.candidate_ids[peer.address] = rid
        if other is not None and not other.closed:
            # two connections to one peer: both ends keep the one opened by the
            # smaller peer id, so they agree without talking about it
            new_initiator = self.peer_id if peer.outgoing else rid
            if other.outgoing == peer.outgoing or new_initiator == min(self.peer_id, rid):
                other.close("replaced by a newer connection")
            else:
                return False
        decision = self.admission.handshaken(peer.key, self.now(), self._peer_views())
        if decision.evict is not None:
            self._drop(decision.evict)
        if not decision.admit:
            peer.close(decision.reason)
            return False
        self.by_id[rid] = peer
        return True

    def _peer_views(self) -> list[PeerView]:
        return [
            PeerView(
                p.key,
                trading=p.peer_interested or p.am_interested or bool(p.upload_queue),
                last_useful=max(p.ready_at, p.last_block_at, p.last_upload_at),
            )
            for p in self.peers.values()
            if p.ready and not p.closed
        ]

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
        self.offers.add_peer(peer)
        if peer.wire.fast and self.complete is False and self.have.any():
            for index in self.allowed_fast_for(peer):
                peer.send(peer.wire.send_allowed_fast(index))
        self.offers.offer(peer)

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
            self.admission.gone(peer.key)
            del self.peers[peer.key]
        if peer.remote_id is not None and self.by_id.get(peer.remote_id) is peer:
            del self.by_id[peer.remote_id]
        if not peer.am_choking and not self.stopping.is_set():
            self.loop.call_soon(self._rechoke)  # its upload slot is free now
        if peer.in_picker:
            peer.drop_requests(send_cancel=False)
            self.picker.remove_peer(peer.key)
        self.offers.remove_peer(peer)

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

    def connect_more(self) -> None:
        room = self.admission.room_to_dial(len(self.connecting))
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
                or self._talking_to(address)
                or (self.complete and self.candidate_ids.get(address) in self.fellow_seeds)
                or address in self.connecting
                or address in self.banned_addrs
                or not self.allowed_address(address[0])
            ):
                continue
            room -= 1
            self.connecting.add(address)
            self._spawn(self._connect(address))

    def close_fellow_seed(self, peer: Peer) -> None:
        """We are complete and so is it: nothing will ever pass between us, so
        we also stop dialling it (a fleet of lingering seeds otherwise keeps
        reconnecting to each other every few seconds, just to hang up)."""
        if peer.remote_id is not None:
            self.fellow_seeds.add(peer.remote_id)
        peer.close("both seeds")

    def _talking_to(self, address: tuple[str, int]) -> bool:
        known = self.candidate_ids.get(address)
        if known is None:
            return False
        peer = self.by_id.get(known)
        return peer is not None and not peer.closed

    def note_listen_port(self, peer: Peer, port: int) -> None:
        """An incoming peer told us where it listens (BEP 10 `p`): if that is a
        candidate we would dial, we now know it is this peer."""
        address = (peer.address[0], port)
        if peer.remote_id is not None and address in self.candidates:
            self.candidate_ids[address] = peer.remote_id

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
            self._connect_errors.pop(address, None)
        except (OSError, asyncio.TimeoutError) as exc:
            self.candidates[address] = self.now() + 3.0
            error = str(exc) or type(exc).__name__
            if self._connect_errors.get(address) != error:  # once per address and error
                self._connect_errors[address] = error
                peer = f"{address[0]}:{address[1]}"
                self.reporter.event("connect_failed", peer=peer, error=error)
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
        self.offers.on_bitfield(peer)
        if self.complete and peer.is_seed:
            self.close_fellow_seed(peer)
            return
        peer.update_interest()

    def on_have(self, peer: Peer, index: int) -> None:
        if not peer.in_picker:  # a Have with no bitfield first: it had nothing before
            peer.in_picker = True
            self.picker.add_peer(peer.key, Bitfield(self.num_pieces))
        self.picker.peer_has(peer.key, index)
        self.offers.on_have(peer, index)
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
        self.verifier.on_block(peer, index, begin, block)

    def backlogged(self) -> bool:
        return self.verifier.backlogged()

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

    def on_piece_passed(self, index: int) -> None:
        """The verifier wrote a good piece: tell every peer (batched), maybe complete."""
        self._unannounced.append(index)
        if self._have_timer is None:
            self._have_timer = self.loop.call_later(HAVE_BATCH_SECONDS, self.announce_haves)
        for peer in list(self.peers.values()):
            if peer.ready and peer.am_interested and not self.picker.is_interesting(peer.key):
                peer.update_interest()
        if self.complete:
            self.announce_haves()  # peers should learn at once that we are a seed
            self._on_complete()

    def announce_haves(self) -> None:
        """Send the Haves of pieces passed since the last batch, one write per peer.

        Sent one by one, every piece costs each of N peers a tiny packet and a
        wakeup, N^2 per piece across a fleet: in the lab at N=32 a host made
        34,000 writes for 1024 pieces, 8,500 with batches. A batch every
        HAVE_BATCH_SECONDS costs little against the time a piece takes to
        cross a link."""
        if self._have_timer is not None:
            self._have_timer.cancel()
            self._have_timer = None
        batch, self._unannounced = self._unannounced, []
        if not batch:
            return
        for peer in list(self.peers.values()):
            if peer.ready and not peer.closed:
                peer.send(b"".join([peer.wire.send_have(index) for index in batch]))

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
                self.close_fellow_seed(peer)
            else:
                peer.update_interest()
        if not self.config.seed:
            self.stop("complete")

    # ---- uploading ----
    def may_serve(self, peer: Peer, index: int) -> bool:
        return bool(self.have[index]) and self.offers.may_serve(peer, index)

    def upload_wait(self, nbytes: int) -> float:
        return self.up_bucket.consume(nbytes, self.now())

    def on_uploaded(self, peer: Peer, index: int, begin: int, length: int) -> None:
        self.uploaded += length
        self.offers.on_uploaded(peer, index, begin, length)

    def on_unchoked(self, peer: Peer) -> None:
        self.offers.offer(peer)

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
        self.offers.tick(now)
        for key in self.admission.overdue(now):
            self._drop(key)
        self._report_refusals()
        self.connect_more()
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
        self.stall.check(now)
        self._apply_policy(now)

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
        if peer.refused:
            peer.forgive_refusals(now)

    def _report_refusals(self, *, final: bool = False) -> None:
        """Refused and dropped connections, counted by reason, once per interval."""
        refused = self.admission.report(float("inf") if final else self.now())
        if refused:
            last = {r: f"{k[0]}:{k[1]}" for r, k in self.admission.last_refused.items()}
            self.reporter.event("connections_refused", counts=refused, last=last)

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
