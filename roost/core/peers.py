"""The peer table: whom we are connected to, whom we may dial, whom we refuse. Pure.

Theory of operation. `PeerTable` holds the live connections (by connection
id and by remote peer id), the addresses we may dial (`candidates`, each
with a not-before time), and the bans. It decides; the member acts: methods
return the connections to close and why, and the member closes them (so the
rest of its state, the picker and the choker, hears of every close).

Rules, in the order a connection meets them: the --allow list and IP bans
(refused silently, counted); the admission policy (roost.core.admission:
a pending budget and deadline before the handshake, the table's size and
eviction after it); at handshake, ourselves, banned peer ids and duplicates.
Two connections to one peer: both ends keep the one opened by the smaller
peer id, so they agree without talking about it. An incoming connection
comes from an ephemeral port, so `candidate_ids` remembers which peer a
dialled address turned out to be, and we stop dialling peers we already
talk to. Complete peers we closed as fellow seeds are not dialled again.
A dialled peer that hangs up before any block passed either way (a client
that closes right after the handshake) is dialled again after a delay that
doubles each time, from REDIAL_CONNECTED up to BACKOFF_MAX, until a
connection to it trades data.
"""

from __future__ import annotations

import bisect
import ipaddress

from roost.core.actions import Address
from roost.core.admission import EVICTED, NOT_ALLOWED, Admission, PeerView
from roost.core.config import MemberConfig
from roost.core.conn import Conn

REDIAL_CONNECTED = 5.0  # a candidate we reached is not dialled again before this
REDIAL_FAILED = 3.0
BACKOFF_MAX = 300.0  # the longest wait before dialling a peer that keeps hanging up
DUPLICATE = "duplicate, banned or self connection"
REPLACED = "replaced by a newer connection"

#: a connection to close, and the reason ("" for counted, not logged)
Closing = tuple[Conn, str]


class PeerTable:
    def __init__(self, config: MemberConfig, peer_id: bytes, handshake_seconds: float) -> None:
        self.config = config
        self.peer_id = peer_id
        self.port = 0
        self.conns: dict[int, Conn] = {}
        self.by_id: dict[bytes, Conn] = {}
        self.candidates: dict[Address, float] = {}  # address -> not before
        self.candidate_ids: dict[Address, bytes] = {}
        self.connect_errors: dict[Address, str] = {}  # the last one reported
        self.backoff: dict[Address, float] = {}  # its last redial delay, while it trades nothing
        self.fellow_seeds: set[bytes] = set()  # peer ids closed as "both seeds"
        self.connecting: dict[Address, float] = {}  # address -> when we dialled it
        self.banned_ids: set[bytes] = set()
        self.banned_addrs: set[Address] = set()
        self.banned_ips: set[str] = set()
        # indices of `conns` (change it only through arrive and remove): the
        # connections at each address in arrival order, how many share each
        # host, and the admitted ones with their arrival number, so that a
        # handshake, a drop or a dial does not scan every connection
        self._by_addr: dict[Address, list[Conn]] = {}
        self._per_host: dict[str, int] = {}
        # admitted connections in arrival order (the order of `conns`): their
        # arrival numbers and the connections, side by side
        self._admitted_at: list[int] = []
        self._admitted: list[Conn] = []
        self._arrival: dict[int, int] = {}
        self._arrivals = 0
        # who gets a slot: pending budget, per-address caps, eviction
        self.admission = Admission(
            config.max_peers, handshake_seconds=handshake_seconds, salt=peer_id
        )

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

    # ---- a connection's life ----
    def dialled(self, address: Address, now: float) -> float | None:
        """Connected to `address`: when we dialled it (None: not by to_dial)."""
        dialled_at = self.connecting.pop(address, None)
        self.candidates[address] = now + REDIAL_CONNECTED
        self.connect_errors.pop(address, None)
        return dialled_at

    def dial_failed(self, address: Address, error: str, now: float) -> bool:
        """True when this error is news for this address (report it once)."""
        self.connecting.pop(address, None)
        self.candidates[address] = now + REDIAL_FAILED
        if self.connect_errors.get(address) == error:
            return False
        self.connect_errors[address] = error
        return True

    def arrive(self, conn: Conn, now: float) -> list[Closing]:
        """A new connection, registered; what to close (it too, if not allowed)."""
        old = self.conns.get(conn.id)
        if old is not None and old is not conn:
            self._unindex(old)
        self.conns[conn.id] = conn
        self._by_addr.setdefault(conn.address, []).append(conn)
        host = conn.address[0]
        self._per_host[host] = self._per_host.get(host, 0) + 1
        self._arrival[conn.id] = self._arrivals
        self._arrivals += 1
        if not self.allowed_address(conn.address[0]):
            self.admission.count(NOT_ALLOWED, conn.address)
            return [(conn, "")]  # counted, not logged: a flood would flood the log
        # not yet handshaken: no slot of max_peers, only the small pending budget
        dropped = self.admission.arrive(conn.address, now, incoming=not conn.outgoing)
        return [c for key in dropped for c in self._dropped(key)]

    def handshaken(self, conn: Conn, now: float) -> tuple[str | None, list[Closing]]:
        """Its handshake arrived: (why it is refused or None, others to close)."""
        rid = conn.remote_id
        assert rid is not None
        if rid == self.peer_id or rid in self.banned_ids:
            return DUPLICATE, []
        closing: list[Closing] = []
        other = self.by_id.get(rid)
        if conn.outgoing:
            self.candidate_ids[conn.address] = rid
        if other is not None and not other.closed:
            new_initiator = self.peer_id if conn.outgoing else rid
            if other.outgoing != conn.outgoing and new_initiator != min(self.peer_id, rid):
                return DUPLICATE, []
            closing.append((other, REPLACED))
            self.admission.gone(other.address)

        def views() -> list[PeerView]:
            return [v for v in self.views() if other is None or v.key != other.address]

        def idle() -> list[PeerView]:
            return [v for v in self.idle_views() if other is None or v.key != other.address]

        # the peers at its host are among the connections from there (this one too)
        at_most = self._per_host.get(conn.address[0], 0)
        decision = self.admission.handshaken(
            conn.address, now, views, same_host_at_most=at_most, idle=idle
        )
        if decision.evict is not None:
            closing += self._dropped(decision.evict)
        if not decision.admit:
            return decision.reason, closing
        self.by_id[rid] = conn
        at = self._arrival.get(conn.id)
        if at is None:  # handshaken without arrive (not the member's way)
            at = self._arrival[conn.id] = self._arrivals
            self._arrivals += 1
        i = bisect.bisect_left(self._admitted_at, at)
        self._admitted_at.insert(i, at)
        self._admitted.insert(i, conn)
        return None, closing

    def remove(self, conn: Conn) -> None:
        if self.conns.get(conn.id) is conn:
            del self.conns[conn.id]
            self._unindex(conn)
            self.admission.gone(conn.address)
        if conn.remote_id is not None and self.by_id.get(conn.remote_id) is conn:
            del self.by_id[conn.remote_id]

    def _unindex(self, conn: Conn) -> None:
        same = self._by_addr.get(conn.address)
        if same is not None and conn in same:
            same.remove(conn)
            if not same:
                del self._by_addr[conn.address]
        host = conn.address[0]
        left = self._per_host.get(host, 0) - 1
        if left > 0:
            self._per_host[host] = left
        else:
            self._per_host.pop(host, None)
        arrived = self._arrival.pop(conn.id, None)
        if arrived is not None:
            i = bisect.bisect_left(self._admitted_at, arrived)
            if i < len(self._admitted_at) and self._admitted_at[i] == arrived:
                del self._admitted_at[i]
                del self._admitted[i]

    def ended(self, conn: Conn, now: float) -> float | None:
        """A connection ended: the delay before dialling its address again when
        we dialled it and nothing was traded (None when no backoff applies)."""
        if not conn.outgoing:
            return None
        address = conn.address
        if conn.down.total or conn.up.total:
            self.backoff.pop(address, None)
            return None
        last = self.backoff.get(address)
        delay = REDIAL_CONNECTED if last is None else min(BACKOFF_MAX, 2 * last)
        self.backoff[address] = delay
        self.candidates[address] = max(self.candidates.get(address, 0.0), now + delay)
        return delay

    def overdue(self, now: float) -> list[Closing]:
        """Connections past their handshake deadline (the policy counted them)."""
        return [c for key in self.admission.overdue(now) for c in self._dropped(key)]

    def _dropped(self, key: Address) -> list[Closing]:
        """The connections at an address the admission policy gave up on."""
        return [
            (c, "" if c.remote_id is None else EVICTED)
            for c in self._by_addr.get(key, ())
            if not c.closed
        ]

    def views(self) -> list[PeerView]:
        """The peers with a completed handshake, in the order they connected.

        Only admitted connections are ever made ready (the member marks a
        connection ready after `handshaken` let it in), so this lists those,
        not every connection in the table."""
        return [
            PeerView(
                c.address,
                trading=c.peer_interested or c.am_interested or bool(c.upload_queue),
                last_useful=max(c.ready_at, c.last_block_at, c.last_upload_at),
                traded=bool(c.down.total or c.up.total),
            )
            for c in self._admitted
            if c.ready and not c.closed
        ]

    def idle_views(self) -> list[PeerView]:
        """Those of `views` that are not trading, in the same order (what a
        full table's eviction looks at), without making a view of the others."""
        return [
            PeerView(
                c.address, False, max(c.ready_at, c.last_block_at, c.last_upload_at),
                bool(c.down.total or c.up.total),
            )
            for c in self._admitted
            if c.ready and not c.closed
            and not (c.peer_interested or c.am_interested or c.upload_queue)
        ]

    def admitted(self) -> list[Conn]:
        """The connections let in at their handshake and not yet removed, in
        the order of `conns`: every connection that is `ready` is among them
        (the member sets `ready` only on those), so a loop over the ready
        connections need not visit the pending ones. A copy: safe to close
        connections while looping over it."""
        return list(self._admitted)

    def ban(self, conn: Conn) -> None:
        """Refuse this peer from now on: by peer id, by address, by IP unless loopback.

        Loopback peers all share 127.0.0.1 (local swarms and tests), so an IP
        ban there would ban the whole swarm."""
        if conn.remote_id is not None:
            self.banned_ids.add(conn.remote_id)
        self.banned_addrs.add(conn.address)
        try:
            if not ipaddress.ip_address(conn.address[0]).is_loopback:
                self.banned_ips.add(conn.address[0])
        except ValueError:
            pass

    def fellow_seed(self, conn: Conn) -> None:
        """We are complete and so is it: nothing will pass between us, so we
        also stop dialling it (lingering seeds otherwise keep reconnecting to
        each other every few seconds, just to hang up)."""
        if conn.remote_id is not None:
            self.fellow_seeds.add(conn.remote_id)

    # ---- whom to dial ----
    def add_candidates(self, peers: list[Address]) -> None:
        connected = self._by_addr
        for address in peers:
            if not self._is_self(address) and address not in connected:
                self.candidates.setdefault(address, 0.0)

    def listens_at(self, conn: Conn, port: int) -> None:
        """An incoming peer said where it listens (BEP 10 `p`): that address is
        this peer, so we do not dial it while this connection lasts, also when
        the tracker lists it only later (a second connection replaced the
        first, its requests lost, in every pair of hosts at the first
        re-announce: docs/sim.md, "Round trips")."""
        address = (conn.address[0], port)
        if conn.remote_id is not None:
            self.candidate_ids[address] = conn.remote_id

    def to_dial(self, now: float, *, complete: bool) -> list[Address]:
        """Candidates to connect to now, as many as the table has room for."""
        room = self.admission.room_to_dial(len(self.connecting))
        if room <= 0 or (complete and not self.config.seed):
            return []
        connected = self._by_addr
        chosen = []
        for address, not_before in list(self.candidates.items()):
            if room <= 0:
                break
            if (
                not_before > now
                or address in connected
                or self._talking_to(address)
                or (complete and self.candidate_ids.get(address) in self.fellow_seeds)
                or address in self.connecting
                or address in self.banned_addrs
                or not self.allowed_address(address[0])
            ):
                continue
            room -= 1
            self.connecting[address] = now
            chosen.append(address)
        return chosen

    def _talking_to(self, address: Address) -> bool:
        known = self.candidate_ids.get(address)
        if known is None:
            return False
        conn = self.by_id.get(known)
        return conn is not None and not conn.closed

    def _is_self(self, address: Address) -> bool:
        if address[1] != self.port:
            return False
        own = {self.config.announce_ip, self.config.listen_host, "127.0.0.1", "::1"}
        return address[0] in own
