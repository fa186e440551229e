"""The swarm simulator: roost's own members and tracker over a simulated network. Pure.

Theory of operation. One `SwarmMember` (roost.core.member, the engine's very
policy code) per host, and the tracker's `Swarm` (roost.core.tracker_swarm), are
driven by a discrete-event loop in simulated time: a heap of events, each
(time, sequence, kind, ...), the sequence making ties deterministic. The
loop plays the adapter's part (roost.engine does the same with sockets): it
carries out each action a member returns and feeds back the events.

    Send            control bytes onto the connection's pipe (roost.sim.network)
    SendBlock       header + payload onto the pipe, competing for bandwidth
    WantWritable    WriteReady once the pipe's queue drains below WRITE_LOW
    Connect         Connected on both sides one round trip later (or ConnectFailed)
    Close           both pipes close; the other side hears Closed after a latency
    Announce        the tracker's Swarm.announce, answered one round trip later
    CheckAndWrite   PieceChecked at once: ok unless a corrupt sender's bytes are in it
    Flush           Flushed at once
    Stop            the member shuts down and leaves

Coarsened, on purpose (say so when quoting figures): payload bytes are zeros
(a corrupt host sends 0x01 bytes, which is how a check fails), so no SHA-1 is
computed and no disk is written; hashing and writing take no time; the
network is a fluid model in steps of `dt` (roost.sim.network); there is no
CPU model (the lab at N = 32 is CPU-bound on 2 cores; the simulator is not).
Everything else, every message between members, is the real wire format
parsed by the real codec.
"""

from __future__ import annotations

import dataclasses
import heapq
import ipaddress
import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roost.core import metainfo
from roost.core.actions import (
    Action,
    Announce,
    AnnounceAnswered,
    CheckAndWrite,
    Close,
    Closed,
    Connect,
    Connected,
    ConnectFailed,
    Event,
    Flush,
    Flushed,
    PieceChecked,
    Report,
    Send,
    SendBlock,
    Stop,
    WantWritable,
    WriteReady,
)
from roost.core.bitfield import Bitfield
from roost.core.member import MemberConfig, SwarmMember
from roost.core.tracker_server_codec import AnnounceRequest
from roost.core.tracker_swarm import NO_LOCATION, Swarm, SwarmRecord, TrackerPolicy
from roost.core.wire import PeerConnection
from roost.sim.lean import BlockFrame, LeanAssembly, LeanBlock, LeanWire
from roost.sim.network import WRITE_LOW, Network, Pipe
from roost.sim.scenario import MBIT, HostSpec, Scenario

PORT = 6881
NUMWANT = 200  # what the engine asks for (roost.engine.config)
EXPIRE_EVERY = 5.0
_PIECE_HEADER = struct.Struct(">II")  # a Piece frame's index and begin, at byte 5

# event kinds, in the heap
START, TIMER, DELIVER, EVENT, DIE, STEP, EXPIRE = range(7)


class SimError(Exception):
    """A member reported an internal error: a bug in the core, not in the network."""


@dataclass
class End:
    """One side of a connection."""

    host: int
    peer_cid: int
    out: Pipe
    into: Pipe


@dataclass
class Host:
    spec: HostSpec
    member: SwarmMember | None = None
    gen: int = 0  # renewed at every start and death: stale events are dropped
    timer_at: float | None = None
    have: Bitfield | None = None
    cids: set[int] = field(default_factory=set)
    completed_at: float | None = None
    dead: bool = False
    stopped: bool = False


@dataclass
class Result:
    scenario: Scenario
    bound: float
    times: dict[int, float]  # receiver index -> completion time (s after t0)
    dead: list[int]
    unfinished: list[int]
    end_time: float
    announces: int
    peak_announces: int  # in the busiest simulated second
    events: int
    bytes_moved: int
    pieces: int
    digest: str = ""
    per_second: dict[int, int] = field(default_factory=dict)  # announces in each second
    stopped_early: bool = False  # the caller's `stop` ended the run (World.run)
    between_zones: int = 0  # block bytes delivered over the links between zones

    def summary(self) -> dict[str, Any]:
        times = sorted(self.times.values())
        out: dict[str, Any] = {
            "n": self.scenario.n,
            "size": self.scenario.size,
            "rate_mbit": self.scenario.rate_mbit,
            "bound": round(self.bound, 3),
            "completed": len(times),
            "dead": len(self.dead),
            "unfinished": len(self.unfinished),
            "announces_per_s": round(self.announces / self.end_time, 1) if self.end_time else 0.0,
            "peak_announces_per_s": self.peak_announces,
            "announces_first_s": self.per_second.get(0, 0),
            "peak_second": max(self.per_second, key=lambda k: self.per_second[k], default=0),
            "events": self.events,
        }
        if self.stopped_early:
            out["stopped_early"] = True
        if self.scenario.zones > 1:
            # the need is the payload once into every zone the origin is not in
            out["between_zones_mib"] = round(self.between_zones / 2**20, 1)
            out["between_zones_need_mib"] = round(
                (self.scenario.zones - 1) * self.scenario.size / 2**20, 1)
        # hosts still unfinished rank after every finished one: a quantile
        # that falls among them is not known and is left out
        ranked = times + [math.inf] * len(self.unfinished)
        if times:
            for name, q in (("first", 0.0), ("p50", 0.5), ("p99", 0.99), ("last", 1.0)):
                value = quantile(ranked, q)
                if value == math.inf:
                    continue
                out[name] = round(value, 3)
                out[name + "_x"] = round(value / self.bound, 3) if self.bound else None
        return out


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of sorted values."""
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(q * len(sorted_values) + 0.999999) - 1))
    return sorted_values[k]


class World:
    def __init__(self, scenario: Scenario) -> None:
        self.sc = scenario
        self.rng = random.Random(scenario.seed)
        specs = scenario.hosts()
        self.hosts = [Host(s) for s in specs]
        self.by_ip = {s.ip: s.index for s in specs}
        pieces = max(1, -(-scenario.size // scenario.piece_length))
        hashes = bytes(20 * pieces)  # never checked: the payload is zeros (module doc)
        info = metainfo.build_info("payload", scenario.size, scenario.piece_length, hashes)
        meta = metainfo.parse(metainfo.build_torrent(info))
        self.info, self.info_hash = meta.info, meta.info_hash
        zones = max(1, scenario.zones)
        zone_up = [0.0] * zones
        for s in specs:
            zone_up[s.zone] += s.up_mbit * MBIT * scenario.ceiling
        inter = [u * scenario.zone_frac for u in zone_up] if zones > 1 else []
        self.net = Network(
            [s.up_mbit * MBIT * scenario.ceiling for s in specs],
            [s.down_mbit * MBIT * scenario.ceiling for s in specs],
            [s.zone for s in specs],
            inter,
            list(inter),
            latency=scenario.latency,
            loss=scenario.loss,
        )
        self.policy = TrackerPolicy()
        record = SwarmRecord(self.info_hash, "simulated-swarm-token", expected_peers=len(specs))
        self.swarm = Swarm(record, random.Random(self.rng.getrandbits(64)))
        self.heap: list[tuple[float, int, int, Any, Any]] = []
        self.seq = 0
        self.now = 0.0
        self.ends: dict[int, End] = {}
        self.next_cid = 1
        self.step_at: float | None = None
        self.last_step = 0
        self.announces = 0
        self.per_second: dict[int, int] = {}
        self.events = 0
        self.errors: list[str] = []
        self.hash_failures = 0  # pieces that failed their check (a corrupt sender's)
        self.pending_receivers = scenario.n
        self.zeros = bytes(scenario.piece_length)
        self.ones = b"\x01" * scenario.piece_length

    # ---- the heap ----
    def push(self, at: float, kind: int, a: Any = None, b: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, kind, a, b))

    def run(
        self, stop: Callable[[World], bool] | None = None, every: int = 20_000
    ) -> Result:
        """Run to the end; `stop`, called every `every` events, may end the run
        early (the bench's wall-clock limit: this module has no clock)."""
        sc = self.sc
        stopped = False
        bound = sc.bound()
        limit = sc.max_time or (20 * bound + 60)
        for host in self.hosts:
            self.push(host.spec.start, START, host.spec.index)
            if host.spec.die_at is not None:
                self.push(host.spec.die_at, DIE, host.spec.index)
        self.push(EXPIRE_EVERY, EXPIRE)
        heap = self.heap
        while heap and self.pending_receivers > 0:
            at, _, kind, a, b = heapq.heappop(heap)
            if at > limit:
                break
            self.now = at
            self.events += 1
            if stop is not None and self.events % every == 0 and stop(self):
                stopped = True
                break
            if kind == DELIVER:
                self._deliver(a, b)
            elif kind == TIMER:
                self._timer(a, b)
            elif kind == EVENT:
                host_index, gen, ev = a
                host = self.hosts[host_index]
                if host.gen == gen and host.member is not None:
                    self._feed(host, host.member.event(ev, at))
                    if self.sc.lean and isinstance(ev, Connected):
                        self._lean_wire(host, ev.conn)
            elif kind == STEP:
                self._step()
            elif kind == START:
                self._start(self.hosts[a])
            elif kind == DIE:
                self._die(self.hosts[a])
            elif kind == EXPIRE:
                self.swarm.expire(at, self.policy.pace(self.swarm.size()).peer_timeout)
                self.push(at + EXPIRE_EVERY, EXPIRE)
        times = {
            h.spec.index: h.completed_at
            for h in self.hosts[1:]
            if h.completed_at is not None and not (h.dead and sc.restart_after is None)
        }
        dead = [h.spec.index for h in self.hosts[1:] if h.dead]
        unfinished = [h.spec.index for h in self.hosts[1:] if h.completed_at is None and not h.dead]
        return Result(
            sc,
            bound,
            times,
            dead,
            unfinished,
            self.now,
            self.announces,
            max(self.per_second.values(), default=0),
            self.events,
            self.net.moved,
            self.info.num_pieces,
            per_second=dict(self.per_second),
            stopped_early=stopped,
            between_zones=self.net.between_zones,
        )

    # ---- hosts ----
    def _config(self, spec: HostSpec) -> MemberConfig:
        origin = spec.index == 0
        config = MemberConfig(
            super_seed=origin and self.sc.super_seed,
            seed=True,
            linger=None,
            listen_host=spec.ip,
            announce_ip=spec.ip,
            big_block=self.sc.big_block,
            picker_block=self.sc.picker_block,
            # the deploy passes --expected-peers: large swarms spread their bursts
            expected_peers=len(self.hosts) if self.sc.spread_bursts else None,
            local_nets=[ipaddress.ip_network(spec.zone_net)]
            if self.sc.zones > 1 and self.sc.zone_aware else None,
        )
        if origin and self.sc.origin_slots:  # `roost seed --unchoke-slots`
            config = dataclasses.replace(config, unchoke_slots=self.sc.origin_slots)
        return config

    def _start(self, host: Host) -> None:
        spec = host.spec
        host.gen += 1
        host.dead = False
        n = self.info.num_pieces
        if host.have is None:
            host.have = Bitfield.full(n) if spec.index == 0 else Bitfield(n)
        rng = random.Random(self.rng.getrandbits(64))
        member = SwarmMember(self.info, self.info_hash, host.have, self._config(spec), rng=rng)
        if self.sc.lean:
            member.assembly = LeanAssembly(self.info.piece_length)
        host.member = member
        host.timer_at = None
        self._feed(host, member.start(PORT, self.now))

    def _die(self, host: Host) -> None:
        if host.dead or host.member is None:
            return
        was_complete = host.completed_at is not None
        host.gen += 1
        host.dead = True
        host.member = None
        for cid in list(host.cids):
            self._hang_up(cid, "connection reset by peer")
        if self.sc.restart_after is not None:
            self.push(self.now + self.sc.restart_after, START, host.spec.index)
        elif not was_complete and host.spec.index != 0:
            self.pending_receivers -= 1

    def _timer(self, index: int, gen: int) -> None:
        host = self.hosts[index]
        if host.gen != gen or host.member is None or host.timer_at != self.now:
            return
        host.timer_at = None
        self._feed(host, host.member.handle_timer(self.now))

    def _event(self, host: Host, ev: Event, at: float) -> None:
        self.push(at, EVENT, (host.spec.index, host.gen, ev))

    # ---- carrying out actions ----
    def _feed(self, host: Host, actions: list[Action]) -> None:
        now = self.now
        net = self.net
        # by the action's exact type (the core makes no subclasses of them),
        # the most frequent first: a chain of isinstance tests cost a Report
        # ten calls, and this runs for every action of every member (the
        # asserts narrow the type for the type checker: one call each)
        for action in actions:
            if isinstance(action, Send):  # most of them
                end = self.ends.get(action.conn)
                if end is not None:
                    at = net.send_control(end.out, action.data, now)
                    if at is not None:
                        self.push(at, DELIVER, end.out, action.data)
                continue
            kind = type(action)
            if kind is Report:
                assert isinstance(action, Report)  # for the type checker
                if action.name == "hash_failed":
                    self.hash_failures += 1
                elif action.name == "internal_error":
                    self.errors.append(f"host {host.spec.index}: {action.fields}")
                    raise SimError(self.errors[-1])
            elif kind is Close:
                assert isinstance(action, Close)  # for the type checker
                self._hang_up(action.conn, "connection closed by peer", own=host)
            elif kind is Connect:
                assert isinstance(action, Connect)  # for the type checker
                self._connect(host, action.address)
            elif kind is SendBlock:
                assert isinstance(action, SendBlock)  # for the type checker
                end = self.ends.get(action.conn)
                if end is not None:
                    # the payload is made at delivery: queued data costs no memory
                    lazy = (action.header, action.length, host.spec.corrupt)
                    size = action.length + len(action.header)
                    for pipe, at, data in net.send_data(end.out, lazy, size, now, self._writable):
                        self.push(at, DELIVER, pipe, data)
                    if net.active:
                        self._want_step()
            elif kind is CheckAndWrite:
                assert isinstance(action, CheckAndWrite)  # for the type checker
                ok = action.data.find(1) == -1
                self._event(host, PieceChecked(action.index, ok), now)
            elif kind is WantWritable:
                assert isinstance(action, WantWritable)  # for the type checker
                end = self.ends.get(action.conn)
                if end is not None:
                    if end.out.data_bytes < WRITE_LOW:
                        self._event(host, WriteReady(action.conn), now)
                    else:
                        end.out.want_writable = True
            elif kind is Announce:
                assert isinstance(action, Announce)  # for the type checker
                self._announce(host, action)
            elif kind is Flush:
                self._event(host, Flushed(), now)
            elif kind is Stop:
                self._stop(host)
                return
        member = host.member
        if member is None:
            return
        if host.completed_at is None and member.completed_at is not None and host.spec.index:
            host.completed_at = now
            self.pending_receivers -= 1
        deadline = member.next_deadline()
        if now > deadline:  # max(deadline, now), without the call: this runs per event
            deadline = now
        if host.timer_at is None or deadline < host.timer_at:
            host.timer_at = deadline
            self.push(deadline, TIMER, host.spec.index, host.gen)

    def _stop(self, host: Host) -> None:
        member = host.member
        if member is None or host.stopped:
            return
        host.stopped = True
        actions = member.shutdown(self.now)
        host.member = None
        host.gen += 1
        for action in actions:
            if isinstance(action, Close):
                self._hang_up(action.conn, "connection closed by peer", own=host)
            elif isinstance(action, Announce):
                self._tracker(host, action, member.peer_id)

    # ---- connections ----
    def _connect(self, host: Host, address: tuple[str, int]) -> None:
        rtt = 2 * self.sc.latency
        target_index = self.by_ip.get(address[0])
        target = self.hosts[target_index] if target_index is not None else None
        if target is None or target.member is None or address[1] != PORT:
            self._event(host, ConnectFailed(address, "Connection refused"), self.now + rtt)
            return
        a, b = self.next_cid, self.next_cid + 1
        self.next_cid += 2
        src, dst = host.spec.index, target.spec.index
        ab = self.net.pipe(src, dst, a, b)
        ba = self.net.pipe(dst, src, b, a)
        ab.last_delivery = ba.last_delivery = self.now + rtt
        self.ends[a] = End(src, b, ab, ba)
        self.ends[b] = End(dst, a, ba, ab)
        host.cids.add(a)
        target.cids.add(b)
        eport = 10000 + (a // 2) % 50000
        self._event(host, Connected(a, address, dialled=address), self.now + rtt)
        self._event(target, Connected(b, (host.spec.ip, eport)), self.now + rtt)

    def _hang_up(self, cid: int, reason: str, own: Host | None = None) -> None:
        end = self.ends.pop(cid, None)
        if end is None:
            return
        self.net.close(end.out)
        self.net.close(end.into)
        self.hosts[end.host].cids.discard(cid)
        other = self.ends.pop(end.peer_cid, None)
        if other is not None:
            peer = self.hosts[other.host]
            peer.cids.discard(end.peer_cid)
            if peer.member is not None:
                self._event(peer, Closed(end.peer_cid, reason), self.now + self.sc.latency)

    def _deliver(self, pipe: Pipe, message: bytes | tuple[bytes, int, bool]) -> None:
        if pipe.closed:
            return
        host = self.hosts[pipe.dst]
        if host.member is None:
            return
        if isinstance(message, tuple):
            header, length, corrupt = message
            self.net.moved += len(header) + length
            if len(pipe.resources) > 2:  # it crossed the links between zones
                self.net.between_zones += len(header) + length
            if self.sc.lean:  # the payload's length and nothing else (roost.sim.lean)
                index, begin = _PIECE_HEADER.unpack_from(header, 5)
                frame = BlockFrame(index, begin, LeanBlock(length, corrupt))
                self._feed(host, host.member.receive(pipe.dst_cid, frame, self.now))  # type: ignore[arg-type]
                return
            fill = self.ones if corrupt else self.zeros
            data = header + (fill if length == len(fill) else fill[:length])
        else:
            data = message
        self._feed(host, host.member.receive(pipe.dst_cid, data, self.now))

    def _lean_wire(self, host: Host, cid: int) -> None:
        """Give a new connection's codec the lean Piece path (roost.sim.lean.LeanWire):
        the same class but for one method, so switching it in place is safe."""
        member = host.member
        conn = member.conns.get(cid) if member is not None else None
        if conn is not None and type(conn.wire) is PeerConnection:
            conn.wire.__class__ = LeanWire

    def _want_step(self) -> None:
        if self.step_at is None:
            # steps sit on a grid of whole multiples of dt, each used once
            k = max(int(self.now / self.sc.dt + 1e-9) + 1, self.last_step + 1)
            self.last_step = k
            self.step_at = k * self.sc.dt
            self.push(self.step_at, STEP)

    def _step(self) -> None:
        self.step_at = None
        deliveries = self.net.step(self.now, self.sc.dt, self._writable)
        for pipe, at, data in deliveries:
            self.push(at, DELIVER, pipe, data)
        if self.net.active:
            self._want_step()

    def _writable(self, pipe: Pipe, at: float) -> None:
        host = self.hosts[pipe.src]
        if host.member is not None:
            self._event(host, WriteReady(pipe.src_cid), at)

    # ---- the tracker ----
    def _announce(self, host: Host, action: Announce) -> None:
        member = host.member
        assert member is not None
        answer = self._tracker(host, action, member.peer_id)
        if answer is not None:
            self._event(host, answer, self.now + 2 * self.sc.latency)

    def _tracker(self, host: Host, action: Announce, peer_id: bytes) -> AnnounceAnswered | None:
        self.announces += 1
        second = int(self.now)
        self.per_second[second] = self.per_second.get(second, 0) + 1
        req = AnnounceRequest(
            self.info_hash,
            peer_id,
            PORT,
            action.uploaded,
            action.downloaded,
            action.left,
            event=action.event or "",
            numwant=NUMWANT,
        )
        label = f"z{host.spec.zone}" if self.sc.zones > 1 else NO_LOCATION
        pace = self.policy.pace(self.swarm.size())  # as roost.core.tracker_swarm.Tracker
        numwant = min(NUMWANT, pace.list_size)
        result = self.swarm.announce(
            req, host.spec.ip, label, self.now, numwant, self.policy.locality
        )
        if action.event == "stopped":
            return None
        return AnnounceAnswered(
            [(p.ip, p.port) for p in result.peers],
            float(pace.interval),
            expected_peers=self.swarm.record.expected_peers,
            complete_peers=self.swarm.done_count(),
        )


def simulate(
    scenario: Scenario, stop: Callable[[World], bool] | None = None
) -> Result:
    """Run one scenario to the end (every live receiver complete, or the time limit)."""
    return World(scenario).run(stop)
