"""Which pieces a host brings into its zone: the zone's import shares. Pure.

With zones (MemberConfig.local_nets) the link between zones is the narrow
one, and a remote peer is only asked for pieces no local peer has. But every
host of a zone that lacked a piece fetched it from outside at the same time
(each knows only its own requests): 32 hosts in 4 zones, 64 MiB, moved
1,203 MiB between zones where 192 MiB is the need (docs/sim.md, "Zones: one
importer per piece").

So the hosts of a zone split the pieces among themselves without a message:
rendezvous hashing of (peer id, piece) over this host and the local peers it
knows. A piece is ours to bring in when our rank for it beats every local
peer's; the others wait for our Have and fetch it over the wide in-zone
links. Hosts that know the same local peers agree on every piece. Where
their views differ, the host ranked highest in its own view always imports,
so no piece is left without an importer; the picker still lets anyone take
what an upload-only peer offers (a super-seeding origin offers a piece to one
peer and waits for it), and the member lifts the split when a host starves
(IMPORT_GRACE_SECONDS), for an importer that is slow, dead or reaches no
holder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable

_MASK = (1 << 64) - 1


def ranks(peer_id: bytes, num_pieces: int) -> list[int]:
    """The peer's rank for every piece: a 64-bit hash of (peer id, index),
    the same on every host (splitmix64 from a BLAKE2b seed of the id)."""
    seed = int.from_bytes(hashlib.blake2b(peer_id, digest_size=8).digest(), "big")
    out = []
    for index in range(num_pieces):
        z = (seed + (index + 1) * 0x9E3779B97F4A7C15) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        out.append(z ^ (z >> 31))
    return out


class ZoneShares:
    """Our share of the pieces our zone lacks, among the local peers we know."""

    def __init__(self, own_id: bytes, num_pieces: int) -> None:
        self.num_pieces = num_pieces
        self._own_id = own_id
        self._own: list[int] = []  # made at the first local peer: unzoned hosts never pay
        self._best: list[int] = []  # per piece, the highest rank of a local peer
        self._peers: dict[Hashable, list[int]] = {}

    def add(self, key: Hashable, peer_id: bytes) -> None:
        """A local peer joined (under the picker's key for it)."""
        if key in self._peers:
            self.remove(key)
        if not self._own:
            self._own = ranks(self._own_id, self.num_pieces)
            self._best = [0] * self.num_pieces
        peer = ranks(peer_id, self.num_pieces)
        self._peers[key] = peer
        self._best = list(map(max, self._best, peer))

    def remove(self, key: Hashable) -> bool:
        """A local peer left; whether it was one (our share may have grown)."""
        if self._peers.pop(key, None) is None:
            return False
        best = [0] * self.num_pieces
        for peer in self._peers.values():
            best = list(map(max, best, peer))
        self._best = best
        return True

    def ours(self, index: int) -> bool:
        """Whether we bring this piece into the zone (always, with no local peer)."""
        return not self._peers or self._own[index] > self._best[index]

    def count(self) -> int:
        """How many pieces are ours."""
        return sum(1 for i in range(self.num_pieces) if self.ours(i))
