"""Piece assembly, hash verification and smart-ban for one Session.

Theory of operation. Downloaded blocks are assembled in a per-piece buffer
(`buffers`), remembering which peer sent each block (`block_from`). A full
piece is SHA-1-checked and written in a worker thread (hashlib and os.pwrite
release the GIL, so verification uses every core). Memory is bounded by the
pieces in flight, not by the payload size: while `verifying_bytes` is at
`max_verifying_bytes`, peers stop requesting (`backlogged`).

Bad data: a piece that fails its hash is re-fetched. If one peer sent all of
it, that peer is banned at once. Otherwise the blocks' digests are kept
(`suspects`), and when the piece later passes, the peers whose blocks
differed from the good data are banned (libtorrent's "smart ban").

The Session owns one PieceVerifier and stays the coordinator: bans, the
Have broadcast and completion go back through it.
"""

from __future__ import annotations

import asyncio
import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from roost.errors import RoostError
from roost.wire import BLOCK_SIZE

if TYPE_CHECKING:
    from roost.engine.peer import Peer
    from roost.engine.session import Session

#: (block offset, SHA-1 of the block as received, the peer that sent it)
Suspect = tuple[int, bytes, tuple[str, int]]


class PieceVerifier:
    def __init__(self, session: Session, pool: ThreadPoolExecutor) -> None:
        self.session = session
        self.pool = pool
        self.buffers: dict[int, bytearray] = {}
        self.block_from: dict[int, dict[int, tuple[str, int]]] = {}
        self.suspects: dict[int, list[Suspect]] = {}
        self.verifying: set[int] = set()
        self.verifying_bytes = 0
        # pieces waiting for hash + write may hold at most this much memory;
        # past it, peers stop requesting (backpressure instead of growth)
        self.max_verifying_bytes = max(64 * 1024 * 1024, 8 * session.info.piece_length)

    def backlogged(self) -> bool:
        return self.verifying_bytes >= self.max_verifying_bytes

    def on_block(self, peer: Peer, index: int, begin: int, block: bytes) -> None:
        """Copy a received block (possibly several picker blocks) into its piece."""
        session = self.session
        if session.have[index] or index in self.verifying:
            session.wasted_bytes += len(block)
            return
        buf = self.buffers.get(index)
        if buf is None:
            buf = self.buffers[index] = bytearray(session.piece_size(index))
            self.block_from[index] = {}
        sources = self.block_from[index]
        view = memoryview(block)  # slices without copying; the copy is into buf
        complete = False
        for offset in range(0, len(block), BLOCK_SIZE):
            at = begin + offset
            size = min(BLOCK_SIZE, len(block) - offset)
            outcome = session.picker.block_received(peer.key, index, at, size)
            if outcome.new:
                buf[at : at + size] = view[offset : offset + size]
                sources[at] = peer.key
            else:
                session.wasted_bytes += size
            for other_key, req in outcome.cancels:
                other = session.peers.get(other_key)  # type: ignore[call-overload]
                if other is not None:
                    other.cancel_block(req.index, req.begin, req.length)
            complete = complete or outcome.piece_complete
        if complete:
            self._verify(index)

    def _verify(self, index: int) -> None:
        buf = self.buffers.pop(index)
        sources = self.block_from.pop(index, {})
        self.verifying.add(index)
        self.verifying_bytes += len(buf)
        future = self.session.loop.run_in_executor(self.pool, self._check_and_write, index, buf)
        future.add_done_callback(lambda f: self._verified(index, buf, sources, f))

    def _check_and_write(self, index: int, buf: bytearray) -> bool:
        """In a worker thread: hash the piece and, when good, write it."""
        if hashlib.sha1(buf).digest() != self.session.info.piece_hash(index):
            return False
        self.session.storage.write_piece(index, buf)
        return True

    def _verified(
        self,
        index: int,
        buf: bytearray,
        sources: dict[int, tuple[str, int]],
        future: asyncio.Future[bool],
    ) -> None:
        session = self.session
        self.verifying.discard(index)
        was_backlogged = self.backlogged()
        self.verifying_bytes -= len(buf)
        if was_backlogged and not self.backlogged():
            for peer in list(session.peers.values()):
                if peer.ready and not peer.closed:
                    peer.fill_requests()
        if session.stopping.is_set() and future.cancelled():
            return
        try:
            ok = future.result()
        except (OSError, RoostError) as exc:
            session.error = f"cannot write piece {index}: {exc}"
            session.reporter.event("error", message=session.error)
            session.stop("disk error")
            return
        if ok:
            self._piece_passed(index, buf)
        else:
            self._piece_failed(index, buf, sources)

    def _piece_passed(self, index: int, buf: bytearray) -> None:
        session = self.session
        session.picker.piece_verified(index)
        session.have.set(index)
        for begin, digest, key in self.suspects.pop(index, []):
            good = hashlib.sha1(buf[begin : begin + BLOCK_SIZE]).digest()
            peer = session.peers.get(key)
            if digest != good and peer is not None:
                session.ban(peer, f"sent a corrupt block of piece {index}")
        session.on_piece_passed(index)

    def _piece_failed(
        self, index: int, buf: bytearray, sources: dict[int, tuple[str, int]]
    ) -> None:
        session = self.session
        session.picker.piece_failed(index)
        senders = set(sources.values())
        session.reporter.event("hash_failed", piece=index, peers=len(senders))
        if len(senders) == 1:
            peer = session.peers.get(next(iter(senders)))
            if peer is not None:
                session.ban(peer, f"sent piece {index} that failed its hash check")
            return
        suspects = self.suspects.setdefault(index, [])
        for begin, key in sources.items():
            digest = hashlib.sha1(buf[begin : begin + BLOCK_SIZE]).digest()
            suspects.append((begin, digest, key))
