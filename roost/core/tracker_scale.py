"""How tracker traffic follows the swarm's size, so one tracker serves 10,000 hosts. Pure.

Theory of operation. One tracker process was measured at about 5,200
announces/s with a new connection per announce (bench/tracker_load.py, the
worst case: roost's engine and aria2c open one per announce). Three kinds of
announce load a deploy's tracker, and each gets a budget well under that:

* regular announces: N hosts every `interval` seconds, N / interval a second.
  The interval grows with N so that this stays at or under REGULAR_BUDGET
  (a fifth of capacity): 5 s up to 5,000 hosts, 10 s at 10,000.
* `started`: every host's first announce. Hosts launched at the same instant
  would all announce in the same second (10,000 at N = 10,000, about twice
  capacity), so past BURST_BUDGET hosts each member draws its first
  announce uniformly over N / BURST_BUDGET seconds. The member knows N: the
  deploy and the pull agent pass `--expected-peers`.
* `completed`: hosts finishing together would burst the same way, so it is
  spread over the same window (the deploy's view of completion is at most
  that late; the host seeds meanwhile).

Both bursts are spread on the client, not refused by the tracker: an
arriving announce costs the tracker its connection, parse and reply whatever
the answer says, so a tracker-side "come back later" would not lower the
first second's load, only add a second round of requests.

Peer lists: a reply of the whole swarm while it is small (everyone knows
everyone, up to the policy's cap); past LARGE_SWARM, as many as a member's
table holds (MEMBER_TABLE), so one reply fills the table and the rest would
only be dialled and dropped (docs/sim.md, connection churn). The pure
tracker's cost per announce does not depend on the list's length at 50-200
(measured, docs/tracker.md), so this is for the members, not for capacity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: announces/s one tracker process served, a new connection per announce
MEASURED_CAPACITY = 5_200
#: regular announces may use this many a second (20 % of capacity)
REGULAR_BUDGET = 1_000
#: `started` (and `completed`) announces spread so they stay under this a second
BURST_BUDGET = 1_500
#: above this many peers a reply is only as long as a member's table
LARGE_SWARM = 1_000
MEMBER_TABLE = 60  # roost.core.config.MemberConfig.max_peers


def interval_for(n: int, base: int) -> int:
    """The re-announce interval for a swarm of n peers: base, or longer so n / interval
    stays within REGULAR_BUDGET."""
    return max(base, math.ceil(n / REGULAR_BUDGET))


def min_interval_for(n: int, base_interval: int, base_min: int) -> int:
    """`min interval` grows in step with the interval (and never exceeds it)."""
    interval = interval_for(n, base_interval)
    if base_interval <= 0:
        return min(base_min, interval)
    return min(interval, math.ceil(base_min * interval / base_interval))


def peer_timeout_for(n: int, base_interval: int, base_timeout: float) -> float:
    """Expiry grows with the interval, so it stays as many intervals long."""
    if base_interval <= 0:
        return base_timeout
    return base_timeout * interval_for(n, base_interval) / base_interval


def list_size_for(n: int, cap: int) -> int:
    """Longest peer list for a swarm of n peers (the caller also clamps to numwant)."""
    if n <= LARGE_SWARM:
        return cap
    return min(cap, MEMBER_TABLE)


def burst_spread(n: int | None) -> float:
    """Seconds over which n hosts spread their `started` and `completed` announces
    (0: small enough to announce at once)."""
    if not n or n <= BURST_BUDGET:
        return 0.0
    return n / BURST_BUDGET


@dataclass(frozen=True, slots=True)
class Pace:
    """What the tracker tells, and expects of, the peers of one swarm."""

    interval: int
    min_interval: int
    peer_timeout: float
    list_size: int


def pace_for(
    n: int, *, interval: int, min_interval: int, peer_timeout: float, max_numwant: int
) -> Pace:
    """The tracker policy's base values, scaled for a swarm of n peers."""
    return Pace(
        interval_for(n, interval),
        min_interval_for(n, interval, min_interval),
        peer_timeout_for(n, interval, peer_timeout),
        list_size_for(n, max_numwant),
    )
