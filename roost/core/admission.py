"""Who gets a connection slot: the admission and eviction policy of a peer table.

Theory of operation. A listening peer must not be lockable by whoever can
reach its port. Three rules, all decided here without sockets or a clock (the
caller passes `now`), so that a fake clock can test them:

* A connection that has not completed the BitTorrent handshake is *pending*.
  Pending connections do not count against `max_peers`; they have their own
  small budget and a short deadline. When the budget is full, a newcomer
  replaces the OLDEST pending connection: an honest peer handshakes within a
  round trip, so the oldest is the one least likely to ever do so. Refusing
  newcomers instead would let a few idle sockets lock the port for a whole
  deadline, again and again.
* A per-address cap on pending connections, with the same rule: one address
  that opens many sockets only churns its own.
* Peers that completed the handshake fill the table (`max_peers`). When it is
  full, a new peer replaces the least useful one: a peer that trades with us
  in neither direction (no interest either way), the one idle the longest.
  Peers that trade are never evicted; when every peer trades, the newcomer is
  refused. Among idle peers that never traded with us, the victim is one in
  the table's own pseudo-random order (not the oldest: a fleet that starts at
  once would evict the same first hosts everywhere). Outside loopback, one
  address may hold at most `ready_per_address` peers (loopback is where local
  swarms and tests run many peers from one address, so it is exempt, as from
  IP bans).

Every refusal is counted by reason, and `report` hands the counts out at most
once per interval, so a flood costs one log line per interval, not one per
attempt.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

Key = tuple[str, int]

HANDSHAKE_SECONDS = 5.0  # a pending connection's deadline to complete the handshake
# pending incoming connections held at once. Not 32: a fleet that starts at
# once dials every host ~60 times in the same instant; a budget below that
# dropped honest connections that would have completed their handshake
# within a round trip, and their dialers waited REDIAL_CONNECTED (5 s) to try
# again (simulated, N = 100, 64 MiB: hosts with no piece for 5 s, last host
# at 2.27x the bound; with 200: 1.85x). One address still holds at most
# PENDING_PER_ADDRESS, and a newcomer still replaces the oldest.
PENDING_BUDGET = 200
PENDING_PER_ADDRESS = 4  # of which from one address
READY_PER_ADDRESS = 8  # peers with a completed handshake per address (not loopback)
REPORT_SECONDS = 10.0  # refusal counts are reported at most this often

# reasons (also the keys of the refusal counts)
NOT_ALLOWED = "address not allowed"
PENDING_FULL = "pending budget full, oldest dropped"
ADDRESS_FULL = "per-address cap, oldest dropped"
HANDSHAKE_LATE = "no handshake in time"
TABLE_FULL = "peer table full"
EVICTED = "evicted for a peer that may trade"


class PeerView(NamedTuple):
    """What the policy needs to know of a peer with a completed handshake.
    (A named tuple: the table makes one per peer whenever it is full.)"""

    key: Key
    trading: bool  # interest in either direction, or data in flight
    last_useful: float  # when it last traded (or joined, if it never did)
    traded: bool = True  # a block passed between us, either way, at some time


@dataclass(frozen=True)
class Decision:
    """The verdict on a peer that completed its handshake."""

    admit: bool
    evict: Key | None = None  # close this one to make room
    reason: str = ""  # why refused, when not admitted


@dataclass
class Admission:
    max_peers: int
    pending_budget: int = PENDING_BUDGET
    pending_per_address: int = PENDING_PER_ADDRESS
    ready_per_address: int = READY_PER_ADDRESS
    handshake_seconds: float = HANDSHAKE_SECONDS
    report_seconds: float = REPORT_SECONDS
    # ours (the table's peer id): orders the peers that never traded with us,
    # differently on every host (see _make_room)
    salt: bytes = b""
    # key -> (arrival time, incoming); insertion order is arrival order. Change
    # it only through _put and _pop, which keep the indices below up to date
    pending: dict[Key, tuple[float, bool]] = field(default_factory=dict)
    ready: set[Key] = field(default_factory=set)
    refused: Counter[str] = field(default_factory=Counter)
    last_refused: dict[str, Key] = field(default_factory=dict)
    _reported: Counter[str] = field(default_factory=Counter)
    _report_at: float | None = None
    # indices of `pending`, so an arrival costs O(1), not a scan of every
    # pending connection (a fleet that starts at once brings up to
    # PENDING_BUDGET of them to a host in one instant): the incoming keys in
    # arrival order, the same per host, the number of outgoing ones, and the
    # earliest arrival time with how many keys have it (recounted when the
    # last of them leaves)
    _incoming: dict[Key, None] = field(default_factory=dict, init=False, repr=False)
    _incoming_by_host: dict[str, dict[Key, None]] = field(
        default_factory=dict, init=False, repr=False
    )
    _outgoing: int = field(default=0, init=False, repr=False)
    _earliest: float = field(default=0.0, init=False, repr=False)
    _earliest_n: int = field(default=0, init=False, repr=False)  # 0: recount

    def __post_init__(self) -> None:
        self._reindex()

    # ---- the pending table and its indices ----
    def _reindex(self) -> None:
        self._incoming = {}
        self._incoming_by_host = {}
        self._outgoing = 0
        for key, (_, incoming) in self.pending.items():
            if incoming:
                self._incoming[key] = None
                self._incoming_by_host.setdefault(key[0], {})[key] = None
            else:
                self._outgoing += 1
        self._earliest_n = 0

    def _put(self, key: Key, now: float, incoming: bool) -> None:
        if key in self.pending:
            # a key already pending keeps its place in the arrival order: rare,
            # so the indices are rebuilt rather than patched
            self.pending[key] = (now, incoming)
            self._reindex()
            return
        self.pending[key] = (now, incoming)
        if incoming:
            self._incoming[key] = None
            by_host = self._incoming_by_host.get(key[0])
            if by_host is None:
                self._incoming_by_host[key[0]] = {key: None}
            else:
                by_host[key] = None
        else:
            self._outgoing += 1
        if self._earliest_n:
            if now < self._earliest:
                self._earliest, self._earliest_n = now, 1
            elif now == self._earliest:
                self._earliest_n += 1
        elif len(self.pending) == 1:
            self._earliest, self._earliest_n = now, 1

    def _pop(self, key: Key) -> None:
        entry = self.pending.pop(key, None)
        if entry is None:
            return
        at, incoming = entry
        if incoming:
            del self._incoming[key]
            by_host = self._incoming_by_host[key[0]]
            del by_host[key]
            if not by_host:
                del self._incoming_by_host[key[0]]
        else:
            self._outgoing -= 1
        if self._earliest_n and at == self._earliest:
            self._earliest_n -= 1

    # ---- connections before the handshake ----
    def arrive(self, key: Key, now: float, *, incoming: bool = True) -> list[Key]:
        """A new connection. Returns older pending connections to close for it.

        Outgoing connections (we dialled them, within our own table's room)
        get the deadline but take nothing from the incoming budget."""
        self._put(key, now, incoming)
        if not incoming:
            return []
        drop: list[Key] = []
        same = self._incoming_by_host[key[0]]
        if len(same) > self.pending_per_address:
            victim = next(iter(same))  # the oldest from this address
            drop.append(victim)
            self._forget(victim, ADDRESS_FULL)
        if len(self._incoming) > self.pending_budget:
            victim = next(iter(self._incoming))  # the oldest incoming
            drop.append(victim)
            self._forget(victim, PENDING_FULL)
        return drop

    def overdue(self, now: float) -> list[Key]:
        """Pending connections past their deadline: close them (counted here)."""
        first = self._first_arrival()
        if first is None or now - first < self.handshake_seconds:
            return []  # none is: the earliest arrival is not
        late = [k for k, (t, _) in self.pending.items() if now - t >= self.handshake_seconds]
        for key in late:
            self._forget(key, HANDSHAKE_LATE)
        return late

    def _first_arrival(self) -> float | None:
        if not self.pending:
            return None
        if not self._earliest_n:
            self._earliest = min(t for t, _ in self.pending.values())
            self._earliest_n = sum(1 for t, _ in self.pending.values() if t == self._earliest)
        return self._earliest

    def next_deadline(self) -> float | None:
        first = self._first_arrival()
        if first is None:
            return None
        return first + self.handshake_seconds

    # ---- the handshake ----
    def handshaken(
        self,
        key: Key,
        now: float,
        peers: list[PeerView] | Callable[[], list[PeerView]],
        *,
        same_host_at_most: int | None = None,
        idle: Callable[[], list[PeerView]] | None = None,
    ) -> Decision:
        """`key` completed its handshake; `peers` are the ones already in the table.

        `peers` may be a function that lists them, called only when the policy
        needs them (the table is full, or the address may be at its cap), and
        `same_host_at_most` a bound on how many of them share the key's host:
        below the cap the list is not needed for the per-address rule. The
        caller keeps the table; building its list for every handshake cost
        O(peers) each. `idle`, when given, lists only those of `peers` that
        are not trading, in the same order: all a full table needs (building
        a view of every peer there was the start's largest cost left)."""
        self._pop(key)
        listed: list[PeerView] | None = None if callable(peers) else peers

        def views() -> list[PeerView]:
            nonlocal listed
            if listed is None:
                assert callable(peers)
                listed = peers()
            return listed

        host = key[0]
        if self.ready_per_address and (
            same_host_at_most is None or same_host_at_most >= self.ready_per_address
        ) and not _loopback(host):
            same = [p for p in views() if p.key[0] == host]
            if len(same) >= self.ready_per_address:
                return self._make_room(key, same)
        if len(self.ready) >= self.max_peers:
            # _make_room looks at the idle ones only
            return self._make_room(key, idle() if idle is not None else views())
        self.ready.add(key)
        return Decision(admit=True)

    def _make_room(self, key: Key, among: list[PeerView]) -> Decision:
        idle = [p for p in among if not p.trading and p.key in self.ready]
        if not idle:
            self.count(TABLE_FULL, key)
            return Decision(admit=False, reason=TABLE_FULL)
        fresh = [p for p in idle if not p.traded]
        if fresh:
            # none of them has shown anything: when it joined is only when it
            # started, the same order on every host of a fleet that starts at
            # once. Evicting the oldest made every host evict the same few
            # hosts, the first to start, which were left with 5-8 peers for
            # the whole deploy (N = 64: docs/sim.md, "Peer tables above 60
            # hosts"). Each host's own order (a hash salted with its peer id)
            # spreads the evictions over the fleet instead.
            victim = min(fresh, key=lambda p: self._order(p.key)).key
        else:
            victim = min(idle, key=lambda p: p.last_useful).key
        self.ready.discard(victim)
        self.count(EVICTED, victim)
        self.ready.add(key)
        return Decision(admit=True, evict=victim)

    def _order(self, key: Key) -> int:
        """This table's own pseudo-random rank of a peer (stable, no RNG state)."""
        # a real hash: crc32 is linear, and a salt only flipped the same bits
        # of every key's value, so the tables' orders barely differed
        digest = hashlib.blake2b(f"{key[0]}:{key[1]}".encode(), digest_size=8, key=self.salt[:64])
        return int.from_bytes(digest.digest(), "big")

    # ---- bookkeeping ----
    def gone(self, key: Key) -> None:
        """A connection closed, for whatever reason."""
        self._pop(key)
        self.ready.discard(key)

    def count(self, reason: str, key: Key) -> None:
        self.refused[reason] += 1
        self.last_refused[reason] = key

    def _forget(self, key: Key, reason: str) -> None:
        self._pop(key)
        self.count(reason, key)

    def room_to_dial(self, connecting: int) -> int:
        """How many more outgoing connections the table has room for."""
        return self.max_peers - len(self.ready) - self._outgoing - connecting

    def report(self, now: float) -> dict[str, int] | None:
        """Refusals since the last report, when one is due (at most once per interval)."""
        if self._report_at is not None and now < self._report_at:
            return None
        fresh = self.refused - self._reported
        if not fresh:
            return None
        self._reported = Counter(self.refused)
        self._report_at = now + self.report_seconds
        return dict(fresh)


@functools.lru_cache(maxsize=4096)
def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
