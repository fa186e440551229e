"""A flow-level network for the swarm simulator. Pure: simulated time only.

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
model's reaction time (Scenario.dt: 0.01 s by default, well under one piece time on a lab link).

Between allocations the rates do not change, so a step does not walk every
active pipe: each pipe keeps the time `since` at which its head message's
bytes left were exact, and the time its head finishes sits in a heap. A step
that does not re-allocate touches only the pipes whose head finishes in it
(at fleet scale the allocation changes in about one step in ten); a step
that re-allocates first brings every pipe's head up to the step's start at
its old rate. The times are the walking model's up to float rounding
(tests/sim/test_network.py holds the two side by side).

Loss: TCP's throughput under random loss is capped per flow by the Mathis
formula, MSS x 1.22 / (RTT x sqrt(p)); with the lab's sub-millisecond RTT that
cap is far above the links, as the lab measured (2 % loss cost roost 3 %).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

ROUNDS = 3
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
    # the head message's bytes left are exact at `since`; NOT_RUNNING when the
    # pipe joined after the last allocation (exact at the next step's start)
    since: float = -1.0
    ticket: int = 0  # its live entry in the network's heap of finishing times; 0: none


NOT_RUNNING = -1.0


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
        self.between_zones = 0  # ... of them over a link between zones
        self._dirty = True
        # (head's finishing time, ticket, pipe) for the running pipes with a rate;
        # an entry whose ticket is no longer its pipe's is stale and skipped
        self._finish: list[tuple[float, int, Pipe]] = []
        self._seq = 0
        self._alloc_at = 0.0  # the start of the step being allocated
        self._joined: list[Pipe] = []  # pipes that joined the active since the last allocation

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
            pipe.since = NOT_RUNNING
            self._joined.append(pipe)
            self._dirty = True
        return out

    def close(self, pipe: Pipe) -> None:
        pipe.closed = True
        pipe.ticket = 0
        pipe.queue.clear()
        pipe.data_bytes = 0
        if self.active.pop(id(pipe), None) is not None:
            self._dirty = True

    # ---- moving bytes ----
    def allocate(self) -> None:
        """Max-min fair rates for the active pipes (max_min_rates)."""
        pipes = list(self.active.values())
        self._apply(pipes, max_min_rates(pipes, self.capacity, self.flow_cap, zoned=self.nz > 0))
        self._dirty = False

    def _apply(self, pipes: list[Pipe], rates: list[float]) -> None:
        """Set the new rates. A running pipe whose rate is unchanged keeps its
        head's state and its heap entry (about four pipes in five at N = 100);
        one whose rate changed is first brought to the step's start at its old
        rate, then scheduled anew, as is a pipe that joined since. The
        unchanged are found in a comprehension: this runs at every allocation."""
        now = self._alloc_at
        heap = self._finish
        if len(heap) > 2 * len(pipes) + 1024:  # drop the stale entries now and then
            heap = self._finish = [e for e in heap if e[2].ticket == e[1]]
            heapq.heapify(heap)
        changed = [
            (pipe, rate) for pipe, rate in zip(pipes, rates, strict=True) if rate != pipe.rate
        ]
        joined = self._joined
        self._joined = []
        push = heapq.heappush
        seq = self._seq
        for pipe, rate in changed:
            since = pipe.since
            old = pipe.rate
            if since >= 0 and old > 0 and since < now:
                head = pipe.queue[0]
                left: float = head[0]  # type: ignore[assignment]
                # rounding may leave a head due at `now` a hair below zero
                head[0] = max(left - old * (now - since), 0.0)
            pipe.since = now
            pipe.rate = rate
            if rate > 0:
                seq += 1
                pipe.ticket = seq
                left = pipe.queue[0][0]  # type: ignore[assignment]
                push(heap, (now + left / rate, seq, pipe))
            else:
                pipe.ticket = 0
        # pipes that joined with their old rate unchanged start here too
        for pipe in joined:
            if pipe.since < 0 and not pipe.closed and pipe.queue:
                pipe.since = now
                if pipe.rate > 0:
                    seq += 1
                    pipe.ticket = seq
                    left = pipe.queue[0][0]  # type: ignore[assignment]
                    push(heap, (now + left / pipe.rate, seq, pipe))
        self._seq = seq

    def step(
        self, now: float, dt: float, writable: Callable[[Pipe, float], None]
    ) -> list[Delivery]:
        """Move bytes for [now, now + dt]; what finished, with delivery times.

        Only the pipes whose head message finishes inside the step are
        touched (see the module doc)."""
        if self._dirty:
            self._alloc_at = now
            self.allocate()
        out: list[Delivery] = []
        until = now + dt
        heap = self._finish
        active = self.active
        emptied = False
        while heap and heap[0][0] <= until:
            _, ticket, pipe = heapq.heappop(heap)
            if pipe.ticket != ticket:
                continue  # stale: rescheduled, emptied or closed since
            since = pipe.since
            pipe.live_until = until
            self._move(pipe, since, until - since, out, writable)
            if pipe.queue:
                pipe.since = until
                left: float = pipe.queue[0][0]  # type: ignore[assignment]
                due = until + left / pipe.rate
                if due <= until:  # a rounding crumb: it goes in the next step
                    due = math.nextafter(until, math.inf)
                self._seq += 1
                pipe.ticket = self._seq
                heapq.heappush(heap, (due, self._seq, pipe))
            else:
                pipe.ticket = 0
                del active[id(pipe)]
                emptied = True
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



class _Routed(Protocol):
    resources: tuple[int, ...]


def max_min_rates(
    pipes: Sequence[_Routed], capacity: list[float], flow_cap: float, *, zoned: bool
) -> list[float]:
    """Max-min fair rates for `pipes` over the resources' `capacity` (see the
    module doc), each capped at `flow_cap`; `zoned`: some pipes cross zones.

    Written for speed (it is most of the network's cost at fleet scale).
    A resource only ever sits at one position of a pipe's resources (up,
    down, zone egress, zone ingress), so the tables are walked one position
    at a time, in comprehensions: every resource still sums its pipes in
    the pipes' order, and the arithmetic is the plain algorithm's, so the
    rates are the same to the last bit."""
    cap = capacity
    nres = len(cap)
    ups = [p.resources[0] for p in pipes]
    downs = [p.resources[1] for p in pipes]
    # pipes between zones also cross their zones' links: (pipe, egress, ingress)
    cross = [(i, p.resources[2], p.resources[3])
             for i, p in enumerate(pipes) if len(p.resources) > 2] if zoned else []
    egress = [c[1] for c in cross]
    ingress = [c[2] for c in cross]
    count = [0] * nres
    for column in (ups, downs, egress, ingress):
        for r in column:
            count[r] += 1
    touched = [r for r in range(nres) if count[r]]
    share = [0.0] * nres
    for r in touched:
        share[r] = cap[r] / count[r]

    def lowest(table: list[float]) -> list[float]:
        """Per pipe, the least of table[r] over its resources."""
        got = table.__getitem__
        low = [x if x < y else y for x, y in zip(map(got, ups), map(got, downs), strict=True)]
        for i, e, g in cross:
            if table[e] < low[i]:
                low[i] = table[e]
            if table[g] < low[i]:
                low[i] = table[g]
        return low

    def fill() -> list[float]:
        rates = lowest(share)
        if flow_cap < math.inf:
            rates = [flow_cap if flow_cap < low else low for low in rates]
        return rates

    def per_column(rates: list[float]) -> list[tuple[list[float], list[int]]]:
        """(rate of each pipe, its resource at one position), position by position."""
        cross_rates = [rates[c[0]] for c in cross]
        return [(rates, ups), (rates, downs), (cross_rates, egress), (cross_rates, ingress)]

    for _ in range(ROUNDS):
        rates = fill()
        # a resource whose flows are held back elsewhere gives the rest to the others
        used = [0.0] * nres
        here = [0] * nres
        # each resource's threshold once, not once per pipe (the same floats)
        held = [s * 0.999 for s in share]
        for column_rates, column in per_column(rates):
            for rate, r in zip(column_rates, column, strict=True):
                if rate < held[r]:
                    used[r] += rate
                else:
                    here[r] += 1
        for r in touched:
            if here[r]:
                spare = (cap[r] - used[r]) / here[r]
                if spare > share[r]:
                    share[r] = spare
    rates = fill()
    load = [0.0] * nres
    for column_rates, column in per_column(rates):
        for rate, r in zip(column_rates, column, strict=True):
            load[r] += rate
    factor = [1.0] * nres
    scaled = False
    for r in touched:
        if load[r] > cap[r] * 1.000001:
            factor[r] = cap[r] / load[r]
            scaled = True
    if scaled:
        rates = [
            rate * f if f < 1.0 else rate
            for rate, f in zip(rates, lowest(factor), strict=True)
        ]
    return rates

def _ignore(pipe: Pipe, at: float) -> None:
    pass


#: a sender that asked to be told when there is room hears so below this many
#: queued bytes: the engine's unsent limit per socket (roost.engine.session's
#: UNSENT_LOWAT). Was 1 MiB, when the engine queued megabytes per peer
WRITE_LOW = 64 * 1024
