"""Piece picker: which blocks to request from which peer. Pure: no I/O, no clock.

Theory of operation
-------------------
Pieces are split into blocks of `block_size` bytes, fixed for the picker's
lifetime (the last block of a piece, and the last piece, may be shorter). A
roost-to-roost swarm that negotiated bigger blocks simply builds its picker
with a bigger `block_size`; one picker never mixes layouts, so a block is
always identified by (index, begin) with a known length.

Every piece is in exactly one state:

* fresh      not started: all blocks FREE, no per-block record kept;
* partial    started: one byte of state per block, FREE / REQUESTED /
             RECEIVED, plus who requested each block and who delivered it
             (lists indexed by block, written a run at a time);
* verifying  every block RECEIVED, waiting for the engine's hash check;
* have       verified (or known at start).

`pick` fills a peer's request queue in this order: (1) FREE blocks of partial
pieces, the pieces this peer already works on first, then the oldest; (2) a
new piece: a `prefer()`-ed one if the peer has it, a random one while we have
fewer than `random_first` pieces, otherwise the rarest (random tie-break);
(3) endgame, once no FREE block is left anywhere: blocks already requested
from other peers, at most `endgame_dup` requesters per block, only to a peer
with no other request of ours and one piece per pick.

Requests are runs. `pick(..., run=n)` hands out requests of up to n
contiguous FREE blocks of one piece, each one wire request (a roost peer
is asked for up to its big block in one Request; any other client for one
16 KiB block, run=1). The picker keeps a peer's requests as runs, piece ->
{begin: length}, and books a Piece message that answers a run with a few
slice assignments (`span_received`), not a Python object per 16 KiB: in a
1 GiB pair of 256 KiB pieces that is 4,096 bookings instead of 65,536. A
request is dropped when it is answered, rejected or cancelled, and is
cancelled (returned for a Cancel) once another peer delivered every block of
it; a block delivered by another peer while a longer request still covers
it simply stops being that request's to deliver (it is wasted if it comes).

Rarest first without scanning every piece: fresh pieces sit in buckets by
availability (an insertion-ordered dict per count; a random initial order is
the tie-break). A peer that announced HaveAll or a full bitfield is a seed and
counted once in `_seeds`, not per piece. Changing one piece's availability
moves it between two buckets in O(1); `pick` walks buckets from the rarest up
and stops at the first pieces the peer has. Partial pieces with FREE blocks
are kept in their own small set, so the common pick never touches `fresh`.
Pieces only ever leave `fresh` (a failed piece goes back to partial with every
block FREE), so a peer found to have no fresh piece is marked exhausted and
not scanned again until it announces a new piece.

Zones. Peers added with `local=True` are in our zone (the engine decides, by
address: MemberConfig.local_nets). Once any peer is local, a second count,
`_local_avail`, says which pieces some local peer has, and a remote peer is
only asked to start fresh pieces no local peer has: what the zone holds comes
over the wide in-zone links, and the narrow link between zones carries only
what is new to the zone. And only once: of the pieces new to the zone, a host
starts from a remote peer only its own share (`ZoneShares`, given our peer
id), what an upload-only peer (a super-seeding origin) offers, or any piece
once the member has lifted the split (`lift_zone_shares`); a partial piece
is not continued from a remote peer once a local peer has it.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from roost.core.bitfield import Bitfield
from roost.core.wire import BLOCK_SIZE, Block
from roost.core.zone_shares import ZoneShares
from roost.errors import RemoteProtocolError, UsageError

FREE, REQUESTED, RECEIVED = 0, 1, 2
_FREE_BYTE = bytes((FREE,))
_REQUESTED_BYTE = bytes((REQUESTED,))
_RECEIVED_BYTE = bytes((RECEIVED,))
_TAKEN_BYTES = (_REQUESTED_BYTE, _RECEIVED_BYTE)
_REQUESTED_RUNS = [bytes((REQUESTED,)) * n for n in range(65)]
#: when starting a rarest piece, consider this many equally rare candidates
_TIE_SAMPLE = 8
#: random tries before the random-first phase falls back to rarest-first
_RANDOM_TRIES = 32


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    """What a received block changed.

    `new`: the block was needed and is now RECEIVED (write it; otherwise drop
    it). `piece_complete`: every block of the piece is now received: hash it,
    then call piece_verified or piece_failed. `cancels`: (peer, request) pairs
    to send Cancel for (endgame duplicates of this block)."""

    new: bool
    piece_complete: bool
    cancels: list[tuple[Hashable, Block]] = field(default_factory=list)


class _Partial:
    """Block states of one started piece. A REQUESTED block has an `owner`
    (the first peer asked for it) and, in endgame, `extra` requesters; a FREE
    or RECEIVED block has none."""

    __slots__ = ("extra", "free", "owner", "received", "senders", "state")

    def __init__(self, nblocks: int) -> None:
        self.state = bytearray(nblocks)  # FREE everywhere
        self.owner: list[Hashable | None] = [None] * nblocks  # block -> its first requester
        self.extra: dict[int, list[Hashable]] = {}  # block -> endgame duplicate requesters
        self.senders: list[Hashable | None] = [None] * nblocks  # block -> who delivered it
        self.free = nblocks
        self.received = 0

    def owners(self, j: int) -> list[Hashable]:
        first = self.owner[j]
        if first is None:
            return []
        return [first, *self.extra.get(j, ())]


class _Peer:
    __slots__ = (
        "bits", "exhausted", "local", "needed", "pieces", "seed", "upload_only", "version",
    )

    def __init__(self, bits: Bitfield | None, needed: int, local: bool = False) -> None:
        self.bits = bits  # None for a seed
        self.local = local  # in our zone (see the module doc)
        self.seed = bits is None
        self.needed = needed  # pieces it has that we do not (bitfield peers only)
        # piece -> {begin: length} of the requests (runs of blocks) it has of ours
        self.pieces: dict[int, dict[int, int]] = {}
        # no fresh piece is left that it has; fresh only shrinks, so this stays
        # true until the peer announces a new piece
        self.exhausted = False
        self.version = 0  # renewed when it announces a piece a pick could take (pick_state)
        # it never downloads (conn.UPLOAD_ONLY_KEY): what it shows are a
        # super-seeding origin's offers
        self.upload_only = False


class PiecePicker:
    """Block-level piece picker. Peers are identified by any hashable key."""

    def __init__(
        self,
        num_pieces: int,
        piece_length: int,
        total_length: int,
        *,
        block_size: int = BLOCK_SIZE,
        have: Bitfield | None = None,
        rng: random.Random | None = None,
        random_first: int = 4,
        endgame_dup: int = 2,
        own_id: bytes | None = None,
    ) -> None:
        if piece_length <= 0 or block_size <= 0 or num_pieces < 0:
            raise UsageError("piece_length and block_size must be positive")
        if num_pieces != -(-total_length // piece_length):
            raise UsageError(f"{num_pieces} pieces do not match {total_length} bytes")
        if have is not None and len(have) != num_pieces:
            raise UsageError("have bitfield does not match the piece count")
        self.num_pieces = num_pieces
        self.piece_length = piece_length
        self.total_length = total_length
        self.block_size = block_size
        self.random_first = random_first
        self.endgame_dup = endgame_dup
        self._rng = rng or random.Random()
        self._have = have.copy() if have is not None else Bitfield(num_pieces)
        self._have_bytes = sum(self.piece_size(i) for i in self._have.iter_set())
        self._avail = [0] * num_pieces  # non-seed peers having each piece
        self._seeds = 0
        self._local_avail = [0] * num_pieces  # local non-seed peers having each piece
        self._local_seeds = 0
        self._zoned = False  # some peer was added as local
        # our share of what the zone lacks (None: no peer id given, no split)
        self._shares = ZoneShares(own_id, num_pieces) if own_id is not None else None
        self._shares_lifted = False
        self._zone_epoch = 0  # grows when a remote peer's picks may find more (see pick_state)
        self._peers: dict[Hashable, _Peer] = {}
        self._partial: dict[int, _Partial] = {}  # started (verifying ones too)
        self._with_free: dict[int, None] = {}  # partial pieces with a FREE block, oldest first
        self._freed = 0  # blocks that went back to FREE, ever (see pick_state)
        self._versions = 0
        self._verifying: set[int] = set()
        self._preferred: dict[int, None] = {}
        fresh = list(self._have.iter_unset())
        self._rng.shuffle(fresh)
        self._buckets: list[dict[int, None]] = [dict.fromkeys(fresh)]
        self._deleted = [0]  # deletions per bucket since its last compaction
        self._fresh: set[int] = set(fresh)
        # pieces we will hold by local means (reserve): told to peers at handshake
        self.reserved: set[int] = set()

    # ------------------------------------------------------------ geometry

    def piece_size(self, index: int) -> int:
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} out of range")
        if index == self.num_pieces - 1:
            return self.total_length - index * self.piece_length
        return self.piece_length

    def num_blocks(self, index: int) -> int:
        return -(-self.piece_size(index) // self.block_size)

    def block(self, index: int, block: int) -> Block:
        begin = block * self.block_size
        return Block(index, begin, min(self.block_size, self.piece_size(index) - begin))

    # ------------------------------------------------------------ availability

    def add_peer(
        self, key: Hashable, bitfield: Bitfield, *, local: bool = False,
        peer_id: bytes | None = None,
    ) -> None:
        """A peer joined with this bitfield (an empty one if it sent none);
        `local`: it is in our zone; `peer_id`: its id, for the zone's shares."""
        if key in self._peers:
            raise UsageError(f"peer {key!r} already added")
        if len(bitfield) != self.num_pieces:
            raise UsageError("bitfield does not match the piece count")
        if local and peer_id is not None and self._shares is not None:
            self._shares.add(key, peer_id)
        if bitfield.all() and self.num_pieces:
            self._add_seed(key, local)
            return
        bits = bitfield.copy()
        mine = int.from_bytes(self._have.to_bytes(), "big")
        needed = (int.from_bytes(bits.to_bytes(), "big") & ~mine).bit_count()
        self._peers[key] = _Peer(bits, needed, local)
        self._peers[key].version = self._next_version()
        self._zoned = self._zoned or local
        for index in bits.iter_set():
            self._bump(index, 1)
            if local:
                self._local_avail[index] += 1

    def add_peer_have_all(
        self, key: Hashable, *, local: bool = False, peer_id: bytes | None = None
    ) -> None:
        if key in self._peers:
            raise UsageError(f"peer {key!r} already added")
        if local and peer_id is not None and self._shares is not None:
            self._shares.add(key, peer_id)
        self._add_seed(key, local)

    def _add_seed(self, key: Hashable, local: bool) -> None:
        self._peers[key] = _Peer(None, 0, local)
        self._peers[key].version = self._next_version()
        self._seeds += 1
        if local:
            self._zoned = True
            self._local_seeds += 1

    def peer_has(self, key: Hashable, index: int) -> None:
        """The peer announced Have(index)."""
        self.peer_has_all_of(key, (index,))

    def peer_has_all_of(self, key: Hashable, indices: Iterable[int]) -> bool:
        """The peer announced Have for each of `indices` (a batch of Haves
        from one read): one availability update for all of them. The peer's
        pick_state changes only when one of them is a piece a pick could start
        or join (fresh, or partial with a FREE block): a Have for a piece we
        have, verify or fetch every block of from others cannot make a pick
        find more, and most Haves in a swarm are such (a piece spreads to
        every host; the first hosts to get it are the ones we hear about).
        Returns whether a pick for the peer may now find more: its pick_state
        changed, or we are in endgame (where duplicates of other peers'
        requests are picked and pick_state is None)."""
        peer = self._peers[key]
        bits = peer.bits
        if bits is None:
            return False
        fresh, with_free = self._fresh, self._with_free
        avail, buckets = self._avail, self._buckets
        local = self._local_avail if peer.local else None
        new = bits.set_all_of(indices)
        if not new:
            return False
        needed = len(self._have.unset_of(new))
        pickable = started = False
        for index in new:
            old = avail[index]
            avail[index] = old + 1
            if index in fresh:  # _bump, inlined
                pickable = started = True
                self._unbucket(index, old)
                if old + 1 == len(buckets):
                    buckets.append({})
                    self._deleted.append(0)
                buckets[old + 1][index] = None
            elif index in with_free:
                pickable = True
            if local is not None:
                local[index] += 1
        peer.needed += needed
        if pickable:
            peer.version = self._next_version()
        if started:
            peer.exhausted = False
        if bits.all():  # it became a seed: count it once
            for i in range(self.num_pieces):
                self._bump(i, -1)
                if peer.local:
                    self._local_avail[i] -= 1
            peer.bits, peer.seed, peer.needed = None, True, 0
            self._seeds += 1
            self._local_seeds += peer.local
            peer.version = self._next_version()
            pickable = True
        return pickable or self.in_endgame

    def peer_lacks(self, key: Hashable, index: int) -> None:
        """The peer refused a request for this piece while unchoking us (a
        super-seeding origin whose offer moved on does that): stop asking it
        for the piece until it announces Have again. Without this the piece,
        now partial, is picked first from the same peer forever."""
        peer = self._peers[key]
        if peer.bits is None or not peer.bits[index]:
            return  # a seed refusing is overloaded, not missing the piece
        peer.bits.clear(index)
        if not self._have[index]:
            peer.needed -= 1
        self._bump(index, -1)
        if peer.local:
            self._local_avail[index] -= 1

    def remove_peer(self, key: Hashable) -> list[Block]:
        """The peer left; its outstanding requests become FREE again (returned)."""
        freed = self.cancel_peer_requests(key)
        peer = self._peers.pop(key)
        if peer.local:
            # what it had may be new to the zone again, and our share grew
            self._zone_epoch += 1
            if self._shares is not None:
                self._shares.remove(key)
        if peer.bits is None:
            self._seeds -= 1
            self._local_seeds -= peer.local
        else:
            for index in peer.bits.iter_set():
                self._bump(index, -1)
                if peer.local:
                    self._local_avail[index] -= 1
        return freed

    def availability(self, index: int) -> int:
        return self._avail[index] + self._seeds

    def local_availability(self, index: int) -> int:
        """Peers in our zone that have the piece."""
        return self._local_avail[index] + self._local_seeds

    def is_local(self, key: Hashable) -> bool:
        return self._peers[key].local

    def is_interesting(self, key: Hashable) -> bool:
        """The peer has a piece we do not have yet."""
        peer = self._peers[key]
        return not self._have.all() if peer.seed else peer.needed > 0

    def _bump(self, index: int, delta: int) -> None:
        old = self._avail[index]
        self._avail[index] = old + delta
        if index in self._fresh:
            self._unbucket(index, old)
            buckets = self._buckets
            if old + delta == len(buckets):
                buckets.append({})
                self._deleted.append(0)
            buckets[old + delta][index] = None

    def _unbucket(self, index: int, avail: int) -> None:
        """Remove a fresh piece from its bucket. A dict never shrinks on
        deletion and iterating it walks the dead slots too, so a bucket that
        lost most of its pieces is copied (amortised O(1))."""
        bucket = self._buckets[avail]
        del bucket[index]
        dead = self._deleted[avail] + 1
        if dead > 32 and dead > 2 * len(bucket):
            self._buckets[avail] = dict(bucket)
            dead = 0
        self._deleted[avail] = dead

    # ------------------------------------------------------------ picking

    def _next_version(self) -> int:
        # picker-wide, so a peer removed and added again never reuses a value
        self._versions += 1
        return self._versions

    def pick_state(self, key: Hashable) -> tuple[int, int] | None:
        """A token that stays equal while a pick for this peer cannot find more
        than it last did: nothing went back to FREE and the peer announced no
        piece a pick could start or join (see peer_has_all_of). None in
        endgame, where other peers' requests change the answer. Lets a peer
        skip a pick that is sure to come back empty (most calls in a large
        swarm, where each peer's pieces are soon all taken)."""
        if self.in_endgame:
            return None
        # both counters only grow, so the sum changes whenever either does
        return (self._freed + self._zone_epoch, self._peers[key].version)

    def prefer(self, index: int) -> None:
        """Start this piece before others when a peer has it (SuggestPiece, super-seed offers)."""
        if index in self._fresh:
            self._preferred[index] = None

    def pick(
        self,
        key: Hashable,
        max_blocks: int,
        *,
        allowed: set[int] | None = None,
        fresh_first: bool = False,
        run: int = 1,
    ) -> list[Block]:
        """Choose up to `max_blocks` blocks to request from this peer, and mark
        them requested by it, as requests of up to `run` contiguous blocks of
        one piece each (one Block per request). `allowed` restricts the pieces
        (AllowedFast set while the peer chokes us). `fresh_first` starts new
        pieces before joining partial ones (a web seed: one range per piece,
        and a piece it alone sent names it alone when the hash fails)."""
        peer = self._peers[key]
        out: list[Block] = []
        if max_blocks <= 0:
            return out
        run = max(1, run)
        left = max_blocks
        if not fresh_first:
            for index in self._partials_for(peer, allowed):
                left = self._take_free(key, peer, index, left, run, out)
                if left <= 0:
                    return out
        while left > 0:
            started = self._start_piece(peer, allowed)
            if started is None:
                break
            left = self._take_free(key, peer, started, left, run, out)
        if fresh_first and left > 0:
            for index in self._partials_for(peer, allowed):
                left = self._take_free(key, peer, index, left, run, out)
                if left <= 0:
                    return out
        if left > 0 and not self._fresh and not self._with_free:
            self._endgame(key, peer, left, run, allowed, out)
        return out

    def _has(self, peer: _Peer, index: int, allowed: set[int] | None) -> bool:
        if allowed is not None and index not in allowed:
            return False
        return peer.bits is None or peer.bits[index]

    def _partials_for(self, peer: _Peer, allowed: set[int] | None) -> list[int]:
        """Partial pieces with FREE blocks the peer can serve: its own first."""
        if not self._with_free:
            return []
        own = [i for i in peer.pieces if i in self._with_free]
        rest = [i for i in self._with_free if i not in peer.pieces]
        if self._zoned and not peer.local:
            # what a local peer has comes over the wide link, not this one
            local = self._local_avail
            return [i for i in own + rest if self._has(peer, i, allowed) and not local[i]]
        return [i for i in own + rest if self._has(peer, i, allowed)]

    def _take_free(
        self, key: Hashable, peer: _Peer, index: int, left: int, run: int, out: list[Block]
    ) -> int:
        """Request runs of FREE blocks of a piece, `left` blocks at most; the rest."""
        part = self._partial[index]
        state, owner = part.state, part.owner
        n, size, bs = len(state), self.piece_size(index), self.block_size
        mine = peer.pieces.get(index)
        if mine is None:
            mine = peer.pieces[index] = {}
        j = state.find(_FREE_BYTE)
        while j >= 0 and left > 0:
            stop = min(n, j + run, j + left)
            if stop - j > 1:  # the FREE run ends at the first block that is not
                for other in _TAKEN_BYTES:
                    k = state.find(other, j + 1, stop)
                    if k >= 0:
                        stop = k
            count = stop - j
            state[j:stop] = _REQUESTED_RUNS[count] if count < len(_REQUESTED_RUNS) \
                else bytes((REQUESTED,)) * count
            owner[j:stop] = [key] * count
            begin = j * bs
            length = min(stop * bs, size) - begin
            mine[begin] = length
            out.append(Block(index, begin, length))
            part.free -= count
            left -= count
            j = state.find(_FREE_BYTE, stop)
        if not mine:
            del peer.pieces[index]
        if part.free == 0:
            self._with_free.pop(index, None)
        return left

    @staticmethod
    def _drop_request(peer: _Peer, index: int, begin: int) -> int | None:
        """Forget a request of the peer; its length, None when it had no such request."""
        mine = peer.pieces.get(index)
        if mine is None:
            return None
        length = mine.pop(begin, None)
        if not mine:
            del peer.pieces[index]
        return length

    def _start_piece(self, peer: _Peer, allowed: set[int] | None) -> int | None:
        """Move one fresh piece the peer has to partial; return it or None."""
        index = self._choose_fresh(peer, allowed)
        if index is not None:
            self._start_fresh(index)
        return index

    def _choose_fresh(self, peer: _Peer, allowed: set[int] | None) -> int | None:
        if not self._fresh or peer.exhausted or (not peer.seed and peer.needed == 0):
            return None
        zone_only = self._zoned and not peer.local
        if zone_only and self._local_seeds:
            return None  # a local seed has every piece: nothing is new to the zone
        # an origin offers each piece to one peer and waits for it: its offers
        # are taken whoever's share they are, or it would wait for ever
        split = zone_only and not peer.upload_only
        local = self._local_avail
        for index in self._preferred:
            if self._has(peer, index, allowed) and not (
                zone_only and (local[index] or (split and not self._ours(index)))
            ):
                return index
        if self._have.count() < self.random_first:
            for _ in range(_RANDOM_TRIES):
                index = self._rng.randrange(self.num_pieces)
                if index in self._fresh and self._has(peer, index, allowed) and not (
                    zone_only and (local[index] or (split and not self._ours(index)))
                ):
                    return index
        rarest = self._rarest(peer, allowed, zone_only, split)
        if rarest is None and allowed is None and not zone_only:
            # (a remote peer is not: the zone lacking a piece can change back
            # when a local peer leaves)
            peer.exhausted = True
        return rarest

    def _ours(self, index: int) -> bool:
        """Whether we bring this piece into our zone: our share (ZoneShares),
        or anything once the split is lifted or when there is none."""
        shares = self._shares
        return shares is None or self._shares_lifted or shares.ours(index)

    def upload_only(self, key: Hashable) -> None:
        """The peer said it never downloads (conn.UPLOAD_ONLY_KEY: a super-seeding
        origin): a local one has no share to bring in, and a remote one's
        offers are taken whoever's share they are."""
        peer = self._peers[key]
        if peer.upload_only:
            return
        peer.upload_only = True
        peer.version = self._next_version()
        if self._shares is not None and self._shares.remove(key):
            self._zone_epoch += 1

    def lift_zone_shares(self) -> bool:
        """Start anything new to the zone from remote peers from now on (the
        member's call, when we starve); whether this changed anything."""
        if self._shares is None or self._shares_lifted or not self._zoned:
            return False
        self._shares_lifted = True
        self._zone_epoch += 1
        return True

    def _rarest(
        self, peer: _Peer, allowed: set[int] | None, zone_only: bool = False,
        split: bool = False,
    ) -> int | None:
        """Rarest fresh piece the peer has; random among the first few equals
        (the buckets start in a random order, so this only adds spread).
        `zone_only`: only pieces no peer of our zone has; `split`: only our
        share of them (_ours)."""
        bits = peer.bits
        local = self._local_avail
        for bucket in self._buckets[0 if bits is None else 1 :]:
            found: list[int] = []
            for index in bucket:
                if zone_only and (local[index] or (split and not self._ours(index))):
                    continue
                if (allowed is None or index in allowed) and (bits is None or bits[index]):
                    found.append(index)
                    if len(found) >= _TIE_SAMPLE:
                        break
            if found:
                return self._rng.choice(found)
        return None

    def _endgame(
        self,
        key: Hashable,
        peer: _Peer,
        left: int,
        run: int,
        allowed: set[int] | None,
        out: list[Block],
    ) -> None:
        """Duplicate requests for blocks other peers are still fetching: only
        to a peer with nothing else of ours to fetch, and one piece at a time,
        the oldest started first. A duplicate already on the wire is rarely
        cancelled in time, so every one is likely a block sent twice: when
        every busy peer got duplicates of everything outstanding (up to 60
        peers' pipelines), 12 % of a 100-host fleet's traffic was endgame waste
        (simulated, 64 MiB), taken from the uploads the last hosts wait for."""
        if peer.pieces or out:
            return
        bs, dup = self.block_size, self.endgame_dup
        for index, part in self._partial.items():
            if index in self._verifying or not self._has(peer, index, allowed):
                continue
            size, owner, extra = self.piece_size(index), part.owner, part.extra
            mine: dict[int, int] = {}
            start = -1  # the run being built: blocks start..j-1
            for j in range(len(part.state) + 1):
                ok = j < len(part.state) and left > 0 and owner[j] is not None and \
                    owner[j] != key and 1 + len(extra.get(j, ())) < dup and \
                    key not in extra.get(j, ())
                if ok:
                    extra.setdefault(j, []).append(key)
                    left -= 1
                    if start < 0:
                        start = j
                if start >= 0 and (not ok or j + 1 - start >= run):
                    stop = j + 1 if ok else j
                    length = min(stop * bs, size) - start * bs
                    mine[start * bs] = length
                    out.append(Block(index, start * bs, length))
                    start = -1
            if mine:
                peer.pieces[index] = mine
                return

    @property
    def in_endgame(self) -> bool:
        """No FREE block is left: only duplicate requests can be handed out."""
        return not self._fresh and not self._with_free and bool(self._partial)

    # ------------------------------------------------------------ outcomes

    def _locate(self, index: int, begin: int, length: int) -> int:
        """Block number of (index, begin, length); RemoteProtocolError if it does not fit."""
        if not 0 <= index < self.num_pieces or begin % self.block_size:
            raise RemoteProtocolError(f"block {index}:{begin} does not fit the layout", ban=True)
        left = self.piece_size(index) - begin
        if left <= 0 or length != min(self.block_size, left):
            raise RemoteProtocolError(f"block {index}:{begin}+{length} has a bad size", ban=True)
        return begin // self.block_size

    def block_received(self, key: Hashable, index: int, begin: int, length: int) -> BlockOutcome:
        """A block arrived from `key`. Unrequested blocks are accepted when still needed."""
        self._locate(index, begin, length)
        new, complete, cancels = self.span_received(key, index, begin, length)
        return BlockOutcome(bool(new), complete, cancels)

    def span_received(
        self, key: Hashable, index: int, begin: int, length: int
    ) -> tuple[list[tuple[int, int]], bool, list[tuple[Hashable, Block]]]:
        """A span of blocks arrived from `key` in one message (a request of
        several blocks, answered; unrequested blocks are accepted when still
        needed). Returns (the byte ranges of it that were new, start and stop
        offsets in the piece, in order; the piece is now complete; the
        requests to cancel, (peer, request), those another peer now has
        nothing left to deliver of)."""
        bs = self.block_size
        if not 0 <= index < self.num_pieces or begin % bs or length <= 0:
            raise RemoteProtocolError(f"block {index}:{begin} does not fit the layout", ban=True)
        size = self.piece_size(index)
        end = begin + length
        if end > size or (length % bs and end != size):
            raise RemoteProtocolError(f"block {index}:{begin}+{length} has a bad size", ban=True)
        part = self._partial.get(index)
        if part is None:
            if index not in self._fresh:  # have or verifying: a late duplicate
                peer = self._peers.get(key)
                if peer is not None:
                    self._drop_request(peer, index, begin)
                return [], False, []
            self._start_fresh(index)
            part = self._partial[index]
        j, k = begin // bs, -(-end // bs)
        state = part.state
        peer = self._peers.get(key)
        mine = peer.pieces.get(index) if peer is not None else None
        if mine is not None and mine.get(begin) == length and not part.extra and \
                state.find(_FREE_BYTE, j, k) < 0 and state.find(_RECEIVED_BYTE, j, k) < 0:
            # the common case: the answer to its own request, nobody else asked
            del mine[begin]
            if not mine:
                del peer.pieces[index]  # type: ignore[union-attr]
            count = k - j
            state[j:k] = bytes((RECEIVED,)) * count
            part.owner[j:k] = [None] * count
            part.senders[j:k] = [key] * count
            part.received += count
            new: list[tuple[int, int]] = [(begin, end)]
            cancels: list[tuple[Hashable, Block]] = []
        else:
            new, cancels = self._book(part, key, index, j, k, end)
            if not new:
                return new, False, cancels
        if part.free == 0:
            self._with_free.pop(index, None)
        complete = part.received == len(state)
        if complete:
            self._verifying.add(index)
        return new, complete, cancels

    def _book(
        self, part: _Partial, key: Hashable, index: int, j: int, k: int, end: int
    ) -> tuple[list[tuple[int, int]], list[tuple[Hashable, Block]]]:
        """span_received, block by block: blocks j..k-1 arrived from `key`."""
        bs = self.block_size
        state, owner, extra = part.state, part.owner, part.extra
        requesters: dict[Hashable, None] = {key: None}
        new: list[tuple[int, int]] = []
        for b in range(j, k):
            first = owner[b]
            if first is not None:
                requesters[first] = None
                for other in extra.pop(b, ()):
                    requesters[other] = None
                owner[b] = None
            if state[b] == RECEIVED:
                continue
            if state[b] == FREE:
                part.free -= 1
            state[b] = RECEIVED
            part.senders[b] = key
            part.received += 1
            if new and new[-1][1] == b * bs:
                new[-1] = (new[-1][0], min(end, (b + 1) * bs))
            else:
                new.append((b * bs, min(end, (b + 1) * bs)))
        # every request that has nothing left to deliver is done: its own is
        # answered, another peer's is cancelled
        cancels: list[tuple[Hashable, Block]] = []
        lo, hi = j * bs, end
        for who in requesters:
            peer = self._peers.get(who)
            mine = peer.pieces.get(index) if peer is not None else None
            if not mine:
                continue
            for at, n in list(mine.items()):
                if at >= hi or at + n <= lo:
                    continue
                a, z = at // bs, -(-(at + n) // bs)
                if state.find(_FREE_BYTE, a, z) >= 0 or state.find(_REQUESTED_BYTE, a, z) >= 0:
                    continue
                del mine[at]
                if who != key:
                    cancels.append((who, Block(index, at, n)))
            if not mine:
                del peer.pieces[index]  # type: ignore[union-attr]
        cancels.sort(key=lambda c: c[1].begin)  # in the order of the blocks (stable)
        return new, cancels

    def preload(self, index: int, blocks: Iterable[int], key: Hashable = "local") -> None:
        """Blocks of a fresh piece we already hold locally (bytes of files placed from
        an earlier release): RECEIVED from `key`, never requested; the rest of the
        piece is fetched, and the whole piece is hashed as usual. A failed hash
        makes every block FREE again, these too."""
        if index not in self._fresh:
            raise UsageError(f"piece {index} is not fresh; cannot preload blocks of it")
        wanted = sorted(set(blocks))
        if not wanted:
            return
        if wanted[0] < 0 or wanted[-1] >= self.num_blocks(index) or \
                len(wanted) == self.num_blocks(index):
            raise UsageError(f"preloaded blocks {wanted[:4]}... do not fit piece {index}")
        self._start_fresh(index)
        part = self._partial[index]
        for j in wanted:
            part.state[j] = RECEIVED
            part.senders[j] = key
        part.free -= len(wanted)
        part.received += len(wanted)

    def reserve(self, index: int) -> None:
        """A fresh piece we are about to hold by local means (its files are being
        placed from a kept release while the swarm runs): never requested, never
        duplicated in the endgame; have(index) ends the reservation."""
        if index not in self._fresh:
            raise UsageError(f"piece {index} is not fresh; cannot reserve it")
        self.reserved.add(index)
        self._fresh.discard(index)
        self._unbucket(index, self._avail[index])
        self._preferred.pop(index, None)

    def _start_fresh(self, index: int) -> None:
        self._fresh.discard(index)
        self._unbucket(index, self._avail[index])
        self._preferred.pop(index, None)
        self._partial[index] = _Partial(self.num_blocks(index))
        self._with_free[index] = None

    def _release(self, key: Hashable, index: int, begin: int, length: int) -> None:
        """`key` no longer fetches these blocks: FREE those nobody else fetches."""
        part = self._partial.get(index)
        if part is None:
            return
        bs = self.block_size
        owner, extra, state = part.owner, part.extra, part.state
        freed = 0
        for j in range(begin // bs, -(-(begin + length) // bs)):
            others = extra.get(j)
            if owner[j] == key:
                if others:
                    owner[j] = others.pop(0)
                    if not others:
                        del extra[j]
                    continue
                owner[j] = None
                if state[j] == REQUESTED:
                    state[j] = FREE
                    freed += 1
            elif others and key in others:
                others.remove(key)
                if not others:
                    del extra[j]
        if freed:
            part.free += freed
            self._with_free[index] = None
            self._freed += 1

    def cancel_peer_requests(self, key: Hashable) -> list[Block]:
        """The peer choked us or left: its outstanding blocks go back to FREE."""
        peer = self._peers[key]
        freed = sorted(Block(i, b, n) for i, mine in peer.pieces.items() for b, n in mine.items())
        for req in freed:
            self._release(key, *req)
        peer.pieces.clear()
        return freed

    def request_rejected(self, key: Hashable, req: Block) -> None:
        """The peer rejected (BEP 6) or we cancelled one request: it, or every
        request of the peer within its range, is dropped and its blocks FREE
        unless another peer fetches them too."""
        peer = self._peers[key]
        mine = peer.pieces.get(req.index)
        if not mine:
            return
        if mine.get(req.begin) == req.length:
            dropped = [(req.begin, req.length)]
        else:
            stop = req.begin + req.length
            dropped = [(b, n) for b, n in mine.items() if req.begin <= b and b + n <= stop]
        for begin, length in dropped:
            del mine[begin]
            self._release(key, req.index, begin, length)
        if not mine:
            del peer.pieces[req.index]

    def piece_verified(self, index: int) -> None:
        """The hash matched."""
        if index not in self._verifying:
            raise UsageError(f"piece {index} is not waiting for verification")
        self._verifying.discard(index)
        self._mark_have(index)

    def piece_failed(self, index: int) -> set[Hashable]:
        """The hash did not match: every block becomes FREE again; returns the
        peers that delivered blocks of it (ban candidates)."""
        if index not in self._verifying:
            raise UsageError(f"piece {index} is not waiting for verification")
        self._verifying.discard(index)
        part = self._partial[index]
        senders = set(part.senders)
        senders.discard(None)
        self._partial[index] = _Partial(len(part.state))
        self._with_free[index] = None
        self._freed += 1
        for peer in self._peers.values():  # requests answered by others, not yet cancelled
            peer.pieces.pop(index, None)
        return senders

    def have(self, index: int) -> list[tuple[Hashable, Block]]:
        """We have the piece by other means; returns outstanding requests to cancel."""
        if self._have[index]:
            return []
        self.reserved.discard(index)
        cancels: list[tuple[Hashable, Block]] = []
        for key, peer in self._peers.items():
            mine = peer.pieces.pop(index, None)
            if mine:
                cancels.extend((key, Block(index, b, n)) for b, n in sorted(mine.items()))
        if index in self._fresh:
            self._fresh.discard(index)
            self._unbucket(index, self._avail[index])
            self._preferred.pop(index, None)
        self._verifying.discard(index)
        self._mark_have(index)
        return cancels

    def _mark_have(self, index: int) -> None:
        self._partial.pop(index, None)
        self._with_free.pop(index, None)
        self._have.set(index)
        self._have_bytes += self.piece_size(index)
        # every peer's bit of this piece, read directly (index is in range:
        # _have.set checked it); this loop runs per piece over every peer
        at, mask = index >> 3, 0x80 >> (index & 7)
        for peer in self._peers.values():
            bits = peer.bits
            if bits is not None and bits.raw()[at] & mask:
                peer.needed -= 1
            if peer.pieces:  # requests answered by others, not yet cancelled
                peer.pieces.pop(index, None)

    # ------------------------------------------------------------ queries

    def complete(self) -> bool:
        return self._have.all()

    def missing_count(self) -> int:
        return self.num_pieces - self._have.count()

    def bytes_left(self) -> int:
        return self.total_length - self._have_bytes

    def have_bitfield(self) -> Bitfield:
        return self._have.copy()

    def requests_of(self, key: Hashable) -> set[Block]:
        """Its requests, one Block per request (a run of blocks)."""
        pieces = self._peers[key].pieces
        return {Block(i, b, n) for i, mine in pieces.items() for b, n in mine.items()}

    def peers(self) -> Iterable[Hashable]:
        return self._peers.keys()

    def block_state(self, index: int, begin: int) -> int:
        """FREE / REQUESTED / RECEIVED of one block (RECEIVED for verifying and had pieces)."""
        part = self._partial.get(index)
        if part is not None:
            return part.state[begin // self.block_size]
        return FREE if index in self._fresh else RECEIVED

    def piece_state(self, index: int) -> str:
        """'fresh', 'partial', 'verifying' or 'have'."""
        if self._have[index]:
            return "have"
        if index in self._verifying:
            return "verifying"
        return "partial" if index in self._partial else "fresh"
