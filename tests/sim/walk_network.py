"""The simulator's network as it was before it became event-driven (roost.sim.network
at 5a5cc6f): every step walks every active pipe. Kept as the reference that
tests/sim/test_network.py holds the event-driven network to; not used by the
simulator.

Theory of operation. Every host has an upload and a download capacity (bytes
per second of TCP payload); hosts may sit in zones whose traffic to other
zones crosses a narrower shared link (one egress and one ingress capacity per
zone). A connection carries two `Pipe`s, one per direction. What a member
sends goes into its pipe in order:

* block data (a Piece message: header + payload) competes for bandwidth;
* a small control message (handshake, Have, Request...) takes no bandwidth:
  it is delivered one latency after it was sent, but never before the data
  queued ahead of it on the same pipe (TCP keeps a stream in order).

Time moves in steps of `dt`. At the start of a step the pipes that hold data
share the capacities max-min fairly (as the lab's per-peer htb classes do):
water-filling for `ROUNDS` rounds, then any resource still over its capacity
scales its flows down, so the allocation is always feasible and close to
max-min. During the step each pipe moves rate x dt bytes; a message that
finishes inside the step is delivered at its exact finishing time (plus
latency). New data waits for the next step, so `dt` is the coarsening of the
model's reaction time (0.05 s by default then; 0.01 s since, Scenario.dt).

Loss: TCP's throughput under random loss is capped per flow by the Mathis
formula, MSS x 1.22 / (RTT x sqrt(p)); with the lab's sub-millisecond RTT that
cap is far above the links, as the lab measured (2 % loss cost roost 3 %).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from roost.sim import network as _network
from roost.sim.network import max_min_rates

MSS = 1448
MIN_RTT = 0.0005  # a LAN's round trip when no latency is configured

#: a message: bytes, or block data the sender makes at delivery (header, length, corrupt)
Message = bytes | tuple[bytes, int, bool]
#: (pipe, delivery time, message) for what a step finished
Delivery = tuple["Pipe", float, Message]


@dataclass(slots=True)
class Pipe:
    """One direction of one connection: src host -> dst host."""

    src: int
    dst: int
    src_cid: int  # the connection id at the sender
    dst_cid: int  # the connection id at the receiver
    resources: tuple[int, ...]
    # items: [bytes left to move, message, size]; control messages ride at 0
    queue: deque[list[object]] = field(default_factory=deque)
    data_bytes: int = 0  # block bytes queued, not yet delivered
    last_delivery: float = 0.0  # deliveries leave in order
    want_writable: bool = False
    closed: bool = False
    rate: float = 0.0
    # the step this pipe's rate was allocated for ends at live_until; its
    # queue ran dry at free_at, so rate x (live_until - free_at) is unused
    live_until: float = 0.0
    free_at: float = 0.0


class Network:
    def __init__(
        self,
        up: list[float],
        down: list[float],
        zone_of: list[int],
        zone_out: list[float],
        zone_in: list[float],
        *,
        latency: float = 0.0,
        loss: float = 0.0,
    ) -> None:
        self.n = len(up)
        nz = len(zone_out)
        self.zone_of = zone_of
        self.nz = nz
        # resource ids: up h -> h, down h -> n + h, zone egress z -> 2n + z, ingress 2n + nz + z
        self.capacity: list[float] = list(up) + list(down) + list(zone_out) + list(zone_in)
        self.latency = latency
        self.flow_cap = math.inf
        if loss > 0:
            rtt = max(2 * latency, MIN_RTT)
            self.flow_cap = MSS * 1.22 / (rtt * math.sqrt(loss))
        self.active: dict[int, Pipe] = {}  # id(pipe) -> pipe, insertion ordered
        self.moved = 0  # block bytes delivered in total
        self._dirty = True

    def set_host_rate(self, host: int, up: float, down: float) -> None:
        self.capacity[host] = up
        self.capacity[self.n + host] = down
        self._dirty = True

    def pipe(self, src: int, dst: int, src_cid: int, dst_cid: int) -> Pipe:
        res: tuple[int, ...] = (src, self.n + dst)
        zs, zd = self.zone_of[src], self.zone_of[dst]
        if zs != zd and self.nz > 0:
            res = (*res, 2 * self.n + zs, 2 * self.n + self.nz + zd)
        return Pipe(src, dst, src_cid, dst_cid, res)

    # ---- sending ----
    def send_control(self, pipe: Pipe, data: bytes, now: float) -> float | None:
        """A control message: its delivery time, or None when it waits behind data."""
        if pipe.closed:
            return None
        if pipe.queue:
            pipe.queue.append([0, data, 0])
            return None
        at = max(now + self.latency, pipe.last_delivery)
        pipe.last_delivery = at
        return at

    def send_data(
        self, pipe: Pipe, data: Message, size: int, now: float = 0.0,
        writable: Callable[[Pipe, float], None] | None = None,
    ) -> list[Delivery]:
        """Queue block data; what it finishes at once (see `_move`).

        A pipe whose queue ran dry inside the current step keeps its share of
        the step: new data moves at once at that rate until the step ends (the
        lab's htb lends the idle share at once too), instead of waiting for the
        next step. Without this, every time a pipe runs dry the rest of its
        step's share was lost: 1.25x the bound at N = 8 with dt = 50 ms, 1.15x
        with 2 ms."""
        if pipe.closed:
            return []
        idle = not pipe.queue
        pipe.queue.append([size, data, size])
        pipe.data_bytes += size
        out: list[Delivery] = []
        if idle and pipe.rate > 0 and pipe.free_at <= now < pipe.live_until:
            self._move(pipe, now, pipe.live_until - now, out, writable or _ignore)
        if pipe.queue and id(pipe) not in self.active:
            self.active[id(pipe)] = pipe
            self._dirty = True
        return out

    def close(self, pipe: Pipe) -> None:
        pipe.closed = True
        pipe.queue.clear()
        pipe.data_bytes = 0
        if self.active.pop(id(pipe), None) is not None:
            self._dirty = True

    # ---- moving bytes ----
    def allocate(self) -> None:
        """Max-min fair rates for the active pipes: the same allocation as the
        event-driven network's (max_min_rates), so only the stepping differs."""
        pipes = list(self.active.values())
        rates = max_min_rates(pipes, self.capacity, self.flow_cap, zoned=self.nz > 0)
        for p, rate in zip(pipes, rates, strict=True):
            p.rate = rate
        self._dirty = False

    def step(
        self, now: float, dt: float, writable: Callable[[Pipe, float], None]
    ) -> list[Delivery]:
        """Move bytes for [now, now + dt]; what finished, with delivery times."""
        if self._dirty:
            self.allocate()
        out: list[Delivery] = []
        emptied = []
        until = now + dt
        for key, pipe in self.active.items():
            pipe.live_until = until
            rate = pipe.rate
            if rate <= 0:
                continue
            head = pipe.queue[0]
            left: float = head[0]  # type: ignore[assignment]
            budget = rate * dt
            if left > budget:  # most pipes, most steps: the head message goes on
                head[0] = left - budget
                pipe.free_at = until
                continue
            self._move(pipe, now, dt, out, writable)
            if not pipe.queue:
                emptied.append(key)
        for key in emptied:
            del self.active[key]
        if emptied:
            self._dirty = True
        return out

    def _move(
        self, pipe: Pipe, now: float, span: float, out: list[Delivery],
        writable: Callable[[Pipe, float], None],
    ) -> None:
        """Move pipe.rate x span bytes of its queue from `now`; finished messages to out."""
        rate = pipe.rate
        latency = self.latency
        budget = rate * span
        t = now
        queue = pipe.queue
        while queue:
            item = queue[0]
            left = item[0]
            assert isinstance(left, (int, float))
            if left > budget:
                item[0] = left - budget
                break
            budget -= left
            t += left / rate
            queue.popleft()
            data: Message = item[1]  # type: ignore[assignment]
            size = item[2]
            assert isinstance(size, int)
            pipe.data_bytes -= size
            at = max(t + latency, pipe.last_delivery)
            pipe.last_delivery = at
            out.append((pipe, at, data))
            # control messages queued right behind go with it
            while queue and queue[0][0] == 0:
                ctl: Message = queue.popleft()[1]  # type: ignore[assignment]
                out.append((pipe, at, ctl))
        if queue:
            pipe.free_at = now + span
        else:
            pipe.data_bytes = 0
            pipe.free_at = t
        if pipe.want_writable and pipe.data_bytes < WRITE_LOW:
            pipe.want_writable = False
            writable(pipe, t)


def _ignore(pipe: Pipe, at: float) -> None:
    pass


#: the threshold is the simulator's (it has changed since 5a5cc6f: a model
#: constant, not part of how pipes are walked)
WRITE_LOW = _network.WRITE_LOW
