"""Who we upload to: the choker, and the origin's super-seeder (BEP 16). Pure.

Theory of operation
-------------------
Choker. A roost fleet is cooperative, so tit-for-tat is only used to put our
upload where it moves the swarm fastest. Every rechoke round (the engine
calls it every ~10 s and when a peer's interest changes) we unchoke up to
`slots` peers among the interested peers that still need data (seeds never:
they need nothing). While we download, regular slots go to the peers that
upload to us fastest (reciprocation; snubbed peers get none). Once we seed,
they go to the peers furthest behind, then the fastest receivers: the deploy
ends when its last host does, so the laggards are fed first. One slot is
optimistic: a random other candidate, kept for `optimistic_every` rounds and
then rotated, so new peers get a first piece and a chance to prove a rate.

SuperSeeder (BEP 16). The origin announces no pieces (HaveNone / an empty
bitfield) and reveals pieces one at a time per peer with Have messages, and
serves only what it revealed to that peer (`may_serve`). Until every piece is
*covered* (sent by the origin to a peer still connected, or announced by some
connected peer), a piece is revealed to at most one peer at a time and only while it is
uncovered; so with peers that request what they are offered, the origin
never uploads a piece twice before it uploaded every piece once. After that
it offers the piece sent the fewest times among those the peer lacks. A piece
sent only to a peer that left before announcing it is uncovered again: the
copy died with the peer, and phase 1 must not end without it.

A peer gets its next offer only once its previous one is released: the offer
was fully sent (`on_sent`) and then either another peer announced the piece
(it spread) or no other peer lacks it. `on_peer_has` for an offered piece
(the peer got it from the swarm first) also releases the offer.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from roost.core.bitfield import Bitfield
from roost.errors import UsageError


@dataclass
class PeerStat:
    """One peer as a rechoke round sees it."""

    key: Hashable
    interested: bool
    download_rate: float  # bytes/s it sends us
    upload_rate: float  # bytes/s we send it
    is_seed: bool
    snubbed: bool = False
    missing: int = 0  # pieces it still lacks, as far as we know


class Choker:
    """Upload-slot choice, one instance per torrent."""

    def __init__(
        self, slots: int = 8, optimistic_every: int = 3, rng: random.Random | None = None
    ) -> None:
        if slots < 1 or optimistic_every < 1:
            raise UsageError("choker needs at least one slot and a positive rotation period")
        self.slots = slots
        self.optimistic_every = optimistic_every
        self._rng = rng or random.Random()
        self._round = 0
        self._optimistic: Hashable | None = None

    @property
    def optimistic(self) -> Hashable | None:
        """The peer holding the optimistic slot after the last rechoke."""
        return self._optimistic

    def rechoke(self, peers: list[PeerStat], *, seeding: bool = False) -> set[Hashable]:
        """Return the keys to unchoke; every other peer is choked.

        `seeding`: we have the whole payload and nothing to reciprocate, so the
        peers furthest behind come first (then our upload rate to them): in a
        fleet the deploy waits for the last host, not the first."""
        candidates = [p for p in peers if p.interested and not p.is_seed]
        return self.rechoke_candidates([p.key for p in candidates], lambda: candidates,
                                       seeding=seeding)

    def rechoke_candidates(
        self,
        keys: list[Hashable],
        stats: Callable[[], list[PeerStat]],
        *,
        seeding: bool = False,
    ) -> set[Hashable]:
        """`rechoke` for candidates the caller already chose (interested, not
        seeds, in its order): `stats()` lists them as PeerStats and is called
        only when they do not all fit in the slots (a member rechokes often,
        and usually every candidate fits)."""
        rotate = self._round % self.optimistic_every == 0
        self._round += 1
        if len(keys) <= self.slots:
            self._optimistic = None
            return set(keys)
        candidates = stats()
        self._rng.shuffle(candidates)  # random order among equal rates
        if seeding:
            ranked = sorted(candidates, key=lambda p: (-p.missing, -p.upload_rate))
        else:
            ranked = sorted(candidates, key=lambda p: (p.snubbed, -p.download_rate))
        regular_slots = self.slots - 1 if self.slots > 1 else self.slots
        regular = [p for p in ranked if seeding or not p.snubbed][:regular_slots]
        chosen = {p.key for p in regular}
        if self.slots > 1:
            chosen.add(self._pick_optimistic(candidates, chosen, rotate))
        return chosen

    def _pick_optimistic(
        self, candidates: list[PeerStat], chosen: set[Hashable], rotate: bool
    ) -> Hashable:
        others = [p.key for p in candidates if p.key not in chosen]
        # `others` is never empty here: there are more candidates than slots
        if rotate or self._optimistic not in others:
            fresh = [k for k in others if k != self._optimistic] or others
            self._optimistic = self._rng.choice(fresh)
        return self._optimistic


class _Offers:
    __slots__ = ("awaiting", "bits", "extra", "offered", "unconfirmed")

    def __init__(self, bits: Bitfield) -> None:
        self.bits = bits
        self.extra = 0  # offers beyond max_offers (set_extra)
        self.offered: set[int] = set()  # revealed, not yet fully sent
        self.awaiting: set[int] = set()  # sent, waiting for the piece to spread
        self.unconfirmed: set[int] = set()  # sent, its own Have not seen yet


class SuperSeeder:
    """BEP 16 origin: which piece to reveal to which peer. See module docstring."""

    def __init__(
        self, num_pieces: int, rng: random.Random | None = None, *, max_offers: int = 1
    ) -> None:
        if num_pieces < 0 or max_offers < 1:
            raise UsageError("super-seeder needs num_pieces >= 0 and max_offers >= 1")
        self.num_pieces = num_pieces
        self.max_offers = max_offers
        self._rng = rng or random.Random()
        self._sent = [0] * num_pieces
        self._in_flight = [0] * num_pieces  # sent to connected peers, not yet announced
        self._holders = [0] * num_pieces  # connected peers announcing the piece
        self._pending = [0] * num_pieces  # peers it is offered to, not yet sent
        self._peers: dict[Hashable, _Offers] = {}
        self._awaiting_by: dict[int, set[Hashable]] = {}  # piece -> peers awaiting its spread
        # uncovered pieces offered to nobody, as a list + positions for O(1) random choice
        self._pool: list[int] = list(range(num_pieces))
        self._pos: dict[int, int] = {i: i for i in range(num_pieces)}
        self._uncovered = num_pieces

    # ------------------------------------------------------------ bookkeeping

    def _covered(self, index: int) -> bool:
        return self._in_flight[index] > 0 or self._holders[index] > 0

    def _pool_remove(self, index: int) -> None:
        pos = self._pos.pop(index, None)
        if pos is None:
            return
        last = self._pool.pop()
        if last != index:
            self._pool[pos] = last
            self._pos[last] = pos

    def _pool_restore(self, index: int) -> None:
        """Put an uncovered piece nobody is offered back into the pool."""
        if not self._covered(index) and not self._pending[index] and index not in self._pos:
            self._pos[index] = len(self._pool)
            self._pool.append(index)

    def _cover(self, index: int, was_covered: bool) -> None:
        if not was_covered:
            self._uncovered -= 1
            self._pool_remove(index)

    def add_peer(self, key: Hashable, bitfield: Bitfield) -> None:
        if key in self._peers:
            raise UsageError(f"peer {key!r} already added")
        if len(bitfield) != self.num_pieces:
            raise UsageError("bitfield does not match the piece count")
        self._peers[key] = _Offers(bitfield.copy())
        for index in bitfield.iter_set():
            was = self._covered(index)
            self._holders[index] += 1
            self._cover(index, was)

    def remove_peer(self, key: Hashable) -> None:
        peer = self._peers.pop(key)
        self._withdraw(peer)
        for index in peer.awaiting:
            self._unawait(key, index)
        lost = set(peer.unconfirmed)
        for index in peer.unconfirmed:
            self._in_flight[index] -= 1
        for index in peer.bits.iter_set():
            self._holders[index] -= 1
            lost.add(index)
        for index in lost:
            if not self._covered(index):
                self._uncovered += 1
                self._pool_restore(index)

    def set_bitfield(self, key: Hashable, bitfield: Bitfield) -> None:
        """The peer's Bitfield / HaveAll arrived after it was added (empty) at
        handshake time. Unlike remove_peer + add_peer this keeps the offers it
        was already sent a Have for, except those it turns out to have."""
        peer = self._peers[key]
        if len(bitfield) != self.num_pieces:
            raise UsageError("bitfield does not match the piece count")
        for index in bitfield.iter_set():
            self.on_peer_has(key, index)
        for index in [i for i in peer.bits.iter_set() if not bitfield[i]]:
            peer.bits.clear(index)
            self._holders[index] -= 1
            if not self._covered(index):
                self._uncovered += 1
                self._pool_restore(index)

    def reserve(self, key: Hashable, indices: list[int]) -> list[Hashable]:
        """The peer will hold these pieces by local means and never request
        them: an offer of one is taken back (the piece may go to another peer),
        and the peer counts as a holder, as after its Have. Returns the peers
        whose offer slot that freed, as on_peer_has does."""
        peer = self._peers[key]
        freed: list[Hashable] = []
        for index in indices:
            if not 0 <= index < self.num_pieces:
                continue
            if index in peer.offered:
                peer.offered.discard(index)
                self._pending[index] -= 1
            for other in self.on_peer_has(key, index):
                if other not in freed:
                    freed.append(other)
        return freed

    def set_extra(self, key: Hashable, extra: int) -> None:
        """Let this peer hold `extra` offers more than max_offers (its round
        trip's worth, roost.core.offers). Offers it holds beyond a new, smaller
        limit stay until they are released."""
        self._peers[key].extra = max(0, extra)

    def withdraw(self, key: Hashable) -> None:
        """Take back the unsent offers of a peer that does not request them
        (it choked us, or sat on an offer too long); they go to other peers."""
        self._withdraw(self._peers[key])

    def _withdraw(self, peer: _Offers) -> None:
        for index in peer.offered:
            self._pending[index] -= 1
            self._pool_restore(index)
        peer.offered.clear()

    def _await(self, key: Hashable, peer: _Offers, index: int) -> None:
        """The offer of `index` to the peer is fulfilled; its slot waits for the spread."""
        if index in peer.offered:
            peer.offered.discard(index)
            self._pending[index] -= 1
            peer.awaiting.add(index)
            self._awaiting_by.setdefault(index, set()).add(key)

    def _unawait(self, key: Hashable, index: int) -> None:
        keys = self._awaiting_by.get(index)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._awaiting_by[index]

    def _release(self, key: Hashable, peer: _Offers) -> None:
        for index in [i for i in peer.awaiting if self._released(peer, i)]:
            peer.awaiting.discard(index)
            self._unawait(key, index)

    def on_peer_has(self, key: Hashable, index: int) -> list[Hashable]:
        """The peer announced Have(index). Returns the peers whose offer slot
        this freed (the piece spread from them): call next_offer for those,
        instead of for every peer on every Have."""
        peer = self._peers[key]
        if not peer.bits.set(index):
            return []
        was = self._covered(index)
        self._holders[index] += 1
        if index in peer.unconfirmed:
            peer.unconfirmed.discard(index)
            self._in_flight[index] -= 1
        self._cover(index, was)
        self._await(key, peer, index)  # it got it elsewhere first: the offer moves on
        freed: list[Hashable] = []
        for other in list(self._awaiting_by.get(index, ())):
            waiting = self._peers[other]
            self._release(other, waiting)
            if len(waiting.offered) + len(waiting.awaiting) < self.max_offers + waiting.extra:
                freed.append(other)
        return freed

    def on_sent(self, key: Hashable, index: int) -> None:
        """The whole piece is the peer's: it asked for all of it (its blocks go
        out at its pace, roost.core.uploads)."""
        self._sent[index] += 1
        peer = self._peers.get(key)
        if peer is None or peer.bits[index] or index in peer.unconfirmed:
            return
        was = self._covered(index)
        self._in_flight[index] += 1
        peer.unconfirmed.add(index)
        self._cover(index, was)
        self._await(key, peer, index)

    # ------------------------------------------------------------ decisions

    def may_serve(self, key: Hashable, index: int) -> bool:
        """BEP 16: serve only pieces revealed to this peer and not yet sent to it,
        or counted as given to it but not announced by it: a piece counts as
        given once the peer asked for all of it (roost.core.uploads), and a
        choke or a Cancel may drop what it asked for before it went out; it
        asks again, or the piece would be held by nobody and offered to
        nobody."""
        peer = self._peers.get(key)
        return peer is not None and (
            index in peer.offered or (index in peer.unconfirmed and not peer.bits[index])
        )

    def _released(self, peer: _Offers, index: int) -> bool:
        others = len(self._peers) - 1
        others_having = self._holders[index] - (1 if peer.bits[index] else 0)
        return others_having >= 1 or others_having >= others

    def next_offer(self, key: Hashable) -> int | None:
        """The piece to reveal to this peer now (send it a Have), or None to wait."""
        peer = self._peers[key]
        self._release(key, peer)
        if len(peer.offered) + len(peer.awaiting) >= self.max_offers + peer.extra:
            return None
        if self._uncovered:
            # phase 1: only uncovered pieces nobody else is offered; no peer has
            # an uncovered piece, so this one lacks it too
            if not self._pool:
                return None
            index = self._rng.choice(self._pool)
            self._pool_remove(index)
        else:
            index_or_none = self._least_sent(peer)
            if index_or_none is None:
                return None
            index = index_or_none
        peer.offered.add(index)
        self._pending[index] += 1
        return index

    def _least_sent(self, peer: _Offers) -> int | None:
        """Phase 2: fewest (sent + pending) among pieces the peer lacks; ties random."""
        if peer.bits.all():
            return None
        best: list[int] = []
        best_count = -1
        sent, pending = self._sent, self._pending
        for index in peer.bits.iter_unset():
            if index in peer.offered or index in peer.awaiting:
                continue
            count = sent[index] + pending[index]
            if not best or count < best_count:
                best, best_count = [index], count
            elif count == best_count:
                best.append(index)
        return self._rng.choice(best) if best else None

    def sent_counts(self) -> list[int]:
        return list(self._sent)

    def offers_of(self, key: Hashable) -> set[int]:
        """Pieces revealed to the peer and not yet fully sent to it."""
        return set(self._peers[key].offered)
