"""The origin's super-seed offers (BEP 16), on top of roost.core.choker.SuperSeeder. Pure.

Theory of operation. With super-seeding on, the origin advertises nothing at
handshake; SuperSeeder decides which pieces to reveal to which peer, and
this module sends them as Have messages, `offers_per_peer` at a time,
preferring peers we upload to (unchoked). A peer may fetch only what was
revealed to it (`may_serve`). A piece the peer has asked for whole
(`on_piece_given`: it goes out at the peer's pace) frees its slot for the
next offer; so does a Have from a peer that got an
offered piece elsewhere (`on_have`). Offers to a peer that asked for nothing
for STALE_OFFER_SECONDS are withdrawn and revealed to others (`tick`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

from roost.core.actions import Action
from roost.core.choker import SuperSeeder
from roost.core.conn import Conn

STALE_OFFER_SECONDS = 3.0
OFFERS_PER_PEER = 4  # pieces revealed to a peer at a time, at least
# ... and at least this many bytes of them. A peer's offer slot frees only
# when the piece spread (BEP 16), a cycle of about a second (two Have batches,
# two transfers), so the origin's throughput is peers x offered bytes per
# cycle. With 4 pieces of 16 KiB that was 2.5 MB/s to 20 peers, a fifth of a
# 100 Mbit/s link (simulated, 16 MiB: 4.7x the bound, every host in lockstep
# with the origin's rounds); 64 KiB pieces to 60 peers were at the margin.
OFFER_BYTES = 1024 * 1024
# ... and, over all peers, at least this many bytes in flight. With few peers the
# per-peer floor starved the origin: 2 peers x 1 MiB a cycle is a sixth of a
# 100 Mbit/s link, and super-seeding took 2.5x the bound at N=2 against 1.3x for
# a plain origin (simulated, 64 MiB; the lab measured 16 s against 8 s). From
# 8 peers up the per-peer floor already offers this much, so nothing changes there.
TOTAL_OFFER_BYTES = 8 * 1024 * 1024
OFFER_SPREAD_PEERS = 8  # the share when the swarm's size is unknown: the floor alone
# ... and, per peer, what we send it during OFFER_RTTS of its round trips on
# top (conn.rtt; nothing below RTT_MIN_SECONDS). The slot's cycle (our Have,
# its request, the piece, its Have, the spread and the next peer's Have) holds
# a few round trips that the floors above, tuned without latency, do not
# cover: at 50 ms one way, 16 peers, 256 KiB pieces, the origin's link went
# idle for whole round trips (docs/sim.md, "Round trips").
OFFER_RTTS = 3.0


def rtt_offers(conn: Conn, piece_length: int) -> int:
    """Offers beyond the floors that cover OFFER_RTTS of `conn`'s round trip
    at the rate we send it."""
    rtt = conn.rtt.seconds
    if not rtt or conn.remote:
        # a peer in another zone gets one request in flight (conn.py): more
        # offers there lock pieces behind the narrow link (32 hosts in 4 zones,
        # 50 ms: 7.25x the bound with them, 6.8x without; docs/sim.md)
        return 0
    return math.ceil(conn.up.rate * rtt * OFFER_RTTS / max(1, piece_length))


def offers_per_peer(piece_length: int, peers: int = 1) -> int:
    """Pieces revealed to each of `peers` peers at a time: OFFERS_PER_PEER, at least
    OFFER_BYTES of them, and together at least TOTAL_OFFER_BYTES."""
    piece_length = max(1, piece_length)
    return max(OFFERS_PER_PEER, -(-OFFER_BYTES // piece_length),
               -(-TOTAL_OFFER_BYTES // (piece_length * max(1, peers))))


# Below this many receivers super-seeding does not pay. The lab (64 MiB, 100 Mbit/s,
# issue 21) measured 16.2 s super-seeding against 8.2 s plain at N=2 while each peer
# was offered 1 MiB at a time; with TOTAL_OFFER_BYTES shared among the expected
# receivers, N=2 ties (7.6 / 8.1 s against 7.7 / 7.7 s plain) and N=4 wins (7.4 /
# 7.8 s against 9.2 / 8.6 s), as does every N from 8 up.
SUPER_SEED_MIN_PEERS = 4


def super_seed_pays(swarm: int | None) -> bool:
    """Whether an origin asked to super-seed should, for `swarm` receivers (None: unknown)."""
    return swarm is None or swarm >= SUPER_SEED_MIN_PEERS


class Offers:
    def __init__(
        self, num_pieces: int, rng: random.Random, piece_length: int = OFFER_BYTES,
        expected_peers: int | None = None,
    ) -> None:
        self.piece_length = piece_length
        self.per_peer = offers_per_peer(piece_length, expected_peers or OFFER_SPREAD_PEERS)
        self.seeder = SuperSeeder(num_pieces, rng=rng, max_offers=self.per_peer)

    def expect(self, peers: int | None) -> None:
        """The swarm's expected size (the deploy's, or the tracker's word): each peer's
        share of TOTAL_OFFER_BYTES. Unknown, the share of OFFER_SPREAD_PEERS peers, so
        the first peer to connect does not take every offer. A peer holding more than a
        new, smaller share keeps them until they spread."""
        self.per_peer = offers_per_peer(self.piece_length, peers or OFFER_SPREAD_PEERS)
        self.seeder.max_offers = self.per_peer

    def add(self, conn: Conn) -> None:
        """At handshake, before the peer said what it has."""
        self.seeder.add_peer(conn.id, conn.bitfield)

    def remove(self, conn: Conn) -> None:
        self.seeder.remove_peer(conn.id)

    def on_bitfield(self, conn: Conn, out: list[Action], now: float) -> None:
        # it was added empty at handshake time; now we know what it has
        bits = conn.bitfield
        if conn.reserved is not None:  # as good as held: it never requests them
            bits = bits.copy()
            for index in conn.reserved.iter_set():
                bits.set(index)
        self.seeder.set_bitfield(conn.id, bits)
        self.offer(conn, out, now)

    def on_reserved(
        self, conn: Conn, conns: Mapping[int, Conn], out: list[Action], now: float
    ) -> None:
        """A roost peer places these pieces from a kept release (conn.RESERVED_KEY)
        and will never request them: offers of them made at handshake are taken
        back, and it counts as holding them, so no offer waits STALE_OFFER_SECONDS
        on it (measured before: the lab's next release 2x slower)."""
        assert conn.reserved is not None
        self._held_by(conn, list(conn.reserved.iter_set()), conns, out, now)

    def on_not_interested(
        self, conn: Conn, conns: Mapping[int, Conn], out: list[Action], now: float
    ) -> None:
        """The peer is not interested in what we revealed to it (BEP 3): it holds
        every piece we offered it, got elsewhere (a roost peer sends no Have for
        a piece it believes we have, member._announce_haves). Those offers are
        done: their slots go to new offers. Without this they stayed until the
        peer fetched nothing for STALE_OFFER_SECONDS, and a withdrawn offer was
        offered to it again (simulated, 32 hosts, 8 upload slots at the origin:
        every host stuck one piece short). Offers made less than a round trip
        ago may have crossed its message: those wait for the usual release."""
        offered = self.seeder.offers_of(conn.id)
        if not offered or now - conn.offered_at < conn.rtt.seconds:
            return
        self._held_by(conn, sorted(offered), conns, out, now)

    def _held_by(
        self, conn: Conn, indices: list[int], conns: Mapping[int, Conn], out: list[Action],
        now: float,
    ) -> None:
        freed = self.seeder.reserve(conn.id, indices)
        for key in freed:
            other = conns.get(key)  # type: ignore[call-overload]
            if other is not None and other is not conn:
                self.offer(other, out, now)
        self.offer(conn, out, now)

    def on_have(
        self, conn: Conn, index: int, conns: Mapping[int, Conn], out: list[Action], now: float
    ) -> None:
        # only the peers whose offer this Have released get a new one
        for key in self.seeder.on_peer_has(conn.id, index):
            freed = conns.get(key)  # type: ignore[call-overload]
            if freed is not None:
                self.offer(freed, out, now)

    def may_serve(self, conn: Conn, index: int) -> bool:
        return bool(self.seeder.may_serve(conn.id, index))

    def on_piece_given(self, conn: Conn, index: int, out: list[Action], now: float) -> None:
        self.seeder.on_sent(conn.id, index)
        self.offer(conn, out, now)

    def tick(self, conns: Mapping[int, Conn], out: list[Action], now: float) -> None:
        """Withdraw stale offers, then offer again (a sweep, in case a release was
        missed). Pieces revealed to a peer that has not asked us for anything
        for STALE_OFFER_SECONDS (it is choked, slow or gone) are revealed to
        others instead; otherwise the last uncovered pieces can wait forever."""
        for conn in conns.values():
            # when it last asked, not when we last sent: a slow peer whose
            # pipeline to us is full asks nothing, while we keep sending it
            # what it asked for at its pace. Its offers sat there and every
            # other peer waited for them (N = 32, 10 % slow hosts: the fast
            # ones finished at 27 s, not 7; docs/sim.md, "Control messages
            # no longer wait behind queued uploads")
            idle_since = max(conn.last_asked_at, conn.offered_at)
            if (
                conn.ready
                and now - idle_since > STALE_OFFER_SECONDS
                and self.seeder.offers_of(conn.id)
            ):
                self.seeder.withdraw(conn.id)
        # peers we upload to first: a piece revealed to a choked peer waits
        for conn in sorted(conns.values(), key=lambda c: c.am_choking):
            self.offer(conn, out, now)

    def offer(self, conn: Conn, out: list[Action], now: float) -> None:
        """Reveal pieces one at a time, each to as few peers as possible."""
        if not conn.ready or conn.closed:
            return
        extra = rtt_offers(conn, self.piece_length)
        if conn.rtt.seconds:  # else the floors alone, as tuned
            self.seeder.set_extra(conn.id, extra)
        for _ in range(self.per_peer + extra):
            index = self.seeder.next_offer(conn.id)
            if index is None:
                return
            conn.send(out, conn.wire.send_have(index), now)
            conn.offered_at = now
