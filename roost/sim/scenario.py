"""What a simulated deploy looks like: hosts, links, faults. Pure.

A `Scenario` is the input of roost.sim.world.simulate; `hosts()` expands it
into one `HostSpec` per host, drawing slow hosts, deaths, late joins and
zones from the scenario's seed, so the same scenario always gives the same
fleet. Host 0 is the origin (it has the payload); hosts 1..n receive it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MBIT = 1_000_000 / 8  # bytes per second in one Mbit/s


@dataclass(frozen=True)
class Scenario:
    n: int  # receivers (the origin comes on top)
    size: int  # payload bytes
    rate_mbit: float  # every link, both directions, as configured (lab: htb rate)
    piece_length: int = 256 * 1024  # the lab's default (mktorrent, --piece-size)
    ceiling: float = 0.956  # TCP payload per configured bit (lab: iperf3, 1448/1514)
    slow_frac: float = 0.0  # share of receivers at rate / slow_factor
    slow_count: int | None = None  # or exactly this many (the lab's hetero row: 4)
    slow_factor: float = 10.0
    die_frac: float = 0.0  # share of receivers that die mid-transfer
    restart_after: float | None = None  # a dead host comes back after this (None: never)
    late_frac: float = 0.0  # share of receivers that join late
    late_window: float = 0.0  # late joiners start uniformly within this many seconds
    zones: int = 1
    zone_frac: float = 0.1  # a zone's link to the others: this share of its hosts' uplinks
    zone_aware: bool = True  # members get their zone's network (MemberConfig.local_nets)
    latency: float = 0.0  # one way, seconds
    loss: float = 0.0  # packet loss probability
    startup: float = 0.0  # seconds from launch until a host's first action
    startup_jitter: float = 0.0  # plus uniformly up to this
    corrupt: int = 0  # receivers that send corrupt blocks
    seed: int = 1
    dt: float = 0.01  # network step (see roost.sim.network; 0.05 cost N = 32 13 %)
    max_time: float = 0.0  # give up after this many simulated seconds (0: 20 x bound + 60)
    super_seed: bool = True  # the origin as the lab runs it (`roost seed --super-seed`)
    origin_slots: int | None = None  # the origin's upload slots (`--unchoke-slots`; None: default)
    lean: bool = False  # count blocks instead of keeping piece bytes (roost.sim.lean)
    spread_bursts: bool = True  # members know N (--expected-peers), so large swarms spread
    big_block: int = 256 * 1024  # MemberConfig.big_block: the wire request size between roost peers
    # MemberConfig.picker_block: the picker's unit (16 KiB in the engine); up to
    # big_block, a coarsening that cuts the picker's work (docs/sim.md, "Sixth pass")
    picker_block: int = 16 * 1024

    @property
    def rate(self) -> float:
        """Configured link rate in bytes per second."""
        return self.rate_mbit * MBIT

    def bound(self) -> float:
        """T_min of design.md at the configured rates: max(S/u0, S/d_min, N*S/(u0 + sum u))."""
        specs = self.hosts()
        u0 = specs[0].up_mbit * MBIT
        receivers = specs[1:]
        if not receivers:
            return 0.0
        d_min = min(h.down_mbit for h in receivers) * MBIT
        total_up = u0 + sum(h.up_mbit for h in receivers) * MBIT
        s = self.size
        return max(s / u0, s / d_min, len(receivers) * s / total_up)

    def hosts(self) -> list[HostSpec]:
        rng = random.Random(self.seed * 7919 + 17)
        n = self.n
        ids = list(range(1, n + 1))
        order = ids[:]
        rng.shuffle(order)
        slow_n = self.slow_count if self.slow_count is not None else round(self.slow_frac * n)
        slow = set(order[:slow_n])
        rng.shuffle(order)
        dying = set(order[: round(self.die_frac * n)])
        rng.shuffle(order)
        late = set(order[: round(self.late_frac * n)])
        rng.shuffle(order)
        corrupt = set(order[: self.corrupt])
        plain = self.size / self.rate if self.rate else 0.0  # S*8/R, in seconds
        specs = [HostSpec(0, self.rate_mbit, self.rate_mbit, 0, 0.0, None, False)]
        for i in ids:
            rate = self.rate_mbit / self.slow_factor if i in slow else self.rate_mbit
            start = self.startup + rng.random() * self.startup_jitter
            if i in late:
                start += rng.random() * self.late_window
            die = start + (0.2 + 0.6 * rng.random()) * plain if i in dying else None
            zone = i % self.zones if self.zones > 1 else 0
            specs.append(HostSpec(i, rate, rate, zone, start, die, i in corrupt, i in slow))
        return specs


@dataclass(frozen=True)
class HostSpec:
    index: int
    up_mbit: float
    down_mbit: float
    zone: int
    start: float
    die_at: float | None
    corrupt: bool
    slow: bool = False

    @property
    def ip(self) -> str:
        # a zone's hosts share a /12 (10.16z.0.0/12), so members can tell by address
        i = self.index + 1
        return f"10.{((i >> 16) & 15) + 16 * self.zone}.{(i >> 8) & 255}.{i & 255}"

    @property
    def zone_net(self) -> str:
        return f"10.{16 * self.zone}.0.0/12"
