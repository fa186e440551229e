"""The origin's super-seed offering (BEP 16) and the per-piece upload log.

Theory of operation. With super-seeding on, the origin advertises nothing at
handshake; the pure `roost.choker.SuperSeeder` decides which pieces to reveal
to which peer, and this adapter sends them as Have messages, OFFERS_PER_PEER
at a time, preferring peers we upload to (unchoked). A peer may fetch only
what was revealed to it (`may_serve`). A whole piece sent to a peer
(`on_uploaded`, counted in distinct blocks) frees its slot for the next
offer; so does a Have from a peer that got an offered piece elsewhere
(`on_have`). Offers to a peer that fetched nothing for STALE_OFFER_SECONDS
are withdrawn and revealed to others (`tick`).

Independently of super-seeding, every whole piece uploaded can be logged as
a JSON line (SessionConfig.upload_log), which lets tests audit BEP 16.
"""

from __future__ import annotations

import json
import random
from typing import IO, TYPE_CHECKING

from roost.choker import SuperSeeder
from roost.errors import RoostError
from roost.wire import BLOCK_SIZE

if TYPE_CHECKING:
    from roost.engine.peer import Peer
    from roost.engine.session import Session

STALE_OFFER_SECONDS = 3.0
OFFERS_PER_PEER = 4  # super-seeding: pieces revealed to a peer at a time


class Offers:
    def __init__(self, session: Session, *, super_seed: bool, rng: random.Random) -> None:
        self.session = session
        self.superseeder = (
            SuperSeeder(session.num_pieces, rng=rng, max_offers=OFFERS_PER_PEER)
            if super_seed
            else None
        )
        self.upload_log: IO[str] | None = None

    # ---- the upload log ----
    def open_log(self, path: str) -> None:
        try:
            self.upload_log = open(path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise RoostError(f"cannot open the upload log: {exc}") from None

    def close_log(self) -> None:
        if self.upload_log is not None:
            self.upload_log.close()

    # ---- peers come and go ----
    def add_peer(self, peer: Peer) -> None:
        """At handshake, before the peer said what it has."""
        if self.superseeder is not None:
            self.superseeder.add_peer(peer.key, peer.bitfield)

    def remove_peer(self, peer: Peer) -> None:
        if self.superseeder is not None and peer.ready:
            # added at handshake (on_ready), even if it never sent its availability
            self.superseeder.remove_peer(peer.key)

    def on_bitfield(self, peer: Peer) -> None:
        if self.superseeder is not None:
            # it was added empty at handshake time; now we know what it has
            self.superseeder.set_bitfield(peer.key, peer.bitfield)
            self.offer(peer)

    def on_have(self, peer: Peer, index: int) -> None:
        if self.superseeder is not None:
            # only the peers whose offer this Have released get a new one
            for key in self.superseeder.on_peer_has(peer.key, index):
                freed = self.session.peers.get(key)  # type: ignore[call-overload]
                if freed is not None:
                    self.offer(freed)

    # ---- uploading ----
    def may_serve(self, peer: Peer, index: int) -> bool:
        """Whether super-seeding lets this peer fetch the piece (we have it)."""
        if self.superseeder is not None:
            return bool(self.superseeder.may_serve(peer.key, index))
        return True

    def on_uploaded(self, peer: Peer, index: int, begin: int, length: int) -> None:
        # distinct blocks, not bytes: a block sent twice (re-requested after a
        # snub or in endgame) must not make a half-sent piece count as sent
        blocks = peer.sent_blocks.setdefault(index, set())
        blocks.update(range(begin // BLOCK_SIZE, -(-(begin + length) // BLOCK_SIZE)))
        if len(blocks) * BLOCK_SIZE >= self.session.piece_size(index):
            del peer.sent_blocks[index]
            if self.upload_log is not None:
                line = {"t": round(self.session.now(), 4), "peer": f"{peer.key[0]}:{peer.key[1]}"}
                self.upload_log.write(json.dumps({**line, "piece": index}) + "\n")
            if self.superseeder is not None:
                self.superseeder.on_sent(peer.key, index)
                self.offer(peer)

    # ---- offering ----
    def tick(self, now: float) -> None:
        if self.superseeder is not None:
            self._withdraw_stale_offers(now)
            self.offer_all()  # a sweep, in case a release was missed

    def _withdraw_stale_offers(self, now: float) -> None:
        """Pieces revealed to a peer that has not fetched anything from us for
        STALE_OFFER_SECONDS (it is choked, slow or gone) are revealed to others
        instead; otherwise the last uncovered pieces can wait forever."""
        assert self.superseeder is not None
        for peer in self.session.peers.values():
            if not peer.ready or peer.forgotten:
                continue
            idle_since = max(peer.last_upload_at, peer.offered_at)
            if now - idle_since > STALE_OFFER_SECONDS and self.superseeder.offers_of(peer.key):
                self.superseeder.withdraw(peer.key)

    def offer(self, peer: Peer) -> None:
        """Super-seeding: reveal pieces one at a time, each to as few peers as
        possible, and only to peers we upload to (unchoked)."""
        if self.superseeder is None or not peer.ready or peer.forgotten:
            return
        for _ in range(OFFERS_PER_PEER):
            index = self.superseeder.next_offer(peer.key)
            if index is None:
                return
            peer.send(peer.wire.send_have(index))
            peer.offered_at = self.session.now()

    def offer_all(self) -> None:
        # peers we upload to first: a piece revealed to a choked peer waits
        for peer in sorted(self.session.peers.values(), key=lambda p: p.am_choking):
            self.offer(peer)
