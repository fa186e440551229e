"""`roost fetch --tree-manifest`: stage a tree release, reusing files of kept releases.

Split from roost.target.fetch_seed so that a plain fetch never imports the
release, manifest and tree-storage modules (start-up CPU counts per host).
Standard library only (see roost.target.agent).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

from roost.core.bitfield import Bitfield
from roost.core.metainfo import Info, Metainfo
from roost.core.tree import TreeManifest, check_torrent
from roost.core.wire import BLOCK_SIZE
from roost.engine.reporter import Reporter
from roost.engine.session import Session
from roost.engine.treestorage import Proof, TreeStorage, proof_of
from roost.errors import RoostError, UsageError
from roost.target.fetchreport import FetchReporter
from roost.target.release import VERIFIED, Dest, Manifest, ReleaseError, read_manifest, stage
from roost.target.treestage import (
    Source,
    bytes_to_fetch,
    find_reusable,
    held_pieces,
    local_blocks,
    make_parents,
    place,
)


class StagingTreeStorage(TreeStorage):
    """--stage: after the final flush (every file verified, the proofs recorded),
    make releases/<tag> right here, as the deploy host's stage command would, so
    "complete" says the release is staged: no round trip, no second process,
    no second proof of every file. Any failure leaves the staging directory
    as it was; the deploy host then runs its stage command, which reports it."""

    stage_to: tuple[Dest, Manifest, Path, FetchReporter] | None = None
    placer: LatePlacer | None = None
    _staged = False

    def flush(self) -> None:
        super().flush()
        if self.stage_to is None or self._staged:
            return
        dest, manifest, record, reporter = self.stage_to
        self._staged = True
        try:
            stage(dest, manifest, self.root, record=record)
        except (RoostError, OSError) as exc:
            reporter.event("stage_deferred", message=str(exc)[:500])
            return
        reporter.complete_fields = {"staged": manifest.tag}


def tree_setup(meta: Metainfo, ns: argparse.Namespace, reporter: Reporter
               ) -> tuple[TreeStorage, Bitfield]:
    """Check the torrent against the manifest, place reused files in the staging
    directory, and say which pieces that already gives (held, served to others).

    With --place-beside-swarm, when some pieces must still be fetched, only the
    reused files that share a piece with bytes to fetch are placed here (their
    blocks preload those pieces); the others, whose pieces are wholly reused, are
    left to a LatePlacer that places them while the swarm runs (storage.placer):
    their pieces are reserved, never requested, and held once every file in them
    is there. The member tells its peers the reserved pieces in its extended
    handshake (roost.core.conn.RESERVED_KEY): without that a super-seeding origin
    (BEP 16) revealed them to the host by its bitfield and waited
    STALE_OFFER_SECONDS for requests that never came (the lab's next release 2x
    slower). Off by default all the same: with it the lab's next release was no
    faster (docs/deploy.md, "Placing beside the swarm, told to the peers")."""
    manifest = read_manifest(ns.tree_manifest)
    if manifest.tree is None or ns.dest is None:
        raise UsageError("--tree-manifest needs a manifest of format tree, and --dest")
    tree = manifest.tree
    info = meta.info
    check_torrent(tree, info, meta.info_hash)
    dest = Dest(ns.dest)
    staging = Path(ns.dir)
    if staging.parent != dest.releases or not staging.name.startswith(f".{manifest.tag}.tmp-"):
        raise UsageError(f"-d must be {dest.releases}/.{manifest.tag}.tmp-<id>")
    chosen: dict[tuple[str, ...], Source] = {}
    late: dict[tuple[str, ...], Source] = {}
    hashed = refused = 0
    hold = contextlib.ExitStack()  # the lock: no prune removes a source while it is copied
    hold.enter_context(dest.locked())
    try:
        try:
            staging.mkdir(mode=0o700)
        except FileExistsError:
            raise ReleaseError(f"{staging} already exists") from None
        except OSError as exc:
            raise ReleaseError(f"cannot create {staging}: {exc.strerror}") from None
        if ns.reuse != "none":
            tags = [t for t in dest.release_tags() if t != manifest.tag]
            chosen, hashed, refused = find_reusable(dest.releases, dest.meta, tags, tree)
            final = held_pieces(info, set(chosen))
            if not final.all() and getattr(ns, "place_beside_swarm", False):
                late = wholly_reused(info, chosen, final)
            place(staging, tree, {p: s for p, s in chosen.items() if p not in late}, ns.reuse)
            make_parents(staging, list(late))
    except BaseException:
        hold.close()
        raise
    if not late:
        hold.close()
    sizes = {e.path: e for e in tree.files}
    proofs: dict[str, Proof] = {}
    for path in chosen:
        if path not in late:
            st = os.stat(staging.joinpath(*path), follow_symlinks=False)
            proofs["/".join(path)] = proof_of(st, sizes[path].sha256)
    have = held_pieces(info, set(chosen) - set(late))
    final = held_pieces(info, set(chosen))
    # the picker's block size (16 KiB): blocks wholly inside reused files are filled locally
    local = local_blocks(info, set(chosen), BLOCK_SIZE) if info.piece_length \
        % BLOCK_SIZE == 0 else {}
    reporter.event(
        "reused",
        files=len(chosen),
        bytes=sum(sizes[p].size for p in chosen),
        fetch_bytes=bytes_to_fetch(info, final, local, BLOCK_SIZE),
        local_blocks=sum(len(b) for b in local.values()),
        held_pieces=final.count(),
        hashed=hashed,
        refused=refused,
    )
    record = ns.tree_manifest.parent / VERIFIED
    storage = StagingTreeStorage(info, staging, tree, done=set(chosen), pending=set(late),
                                 record=record, proofs=proofs)
    if getattr(ns, "stage", False) and isinstance(reporter, FetchReporter):
        storage.stage_to = (dest, manifest, record, reporter)
    storage.local_blocks = local
    if late:
        storage.placer = LatePlacer(info, staging, tree, late, ns.reuse, storage, hold)
    return storage, have


def wholly_reused(info: Info, chosen: dict[tuple[str, ...], Source], held: Bitfield
                  ) -> dict[tuple[str, ...], Source]:
    """The chosen files every piece of which is held once the chosen files are
    placed (in torrent order): they can be placed while the swarm runs."""
    plen = info.piece_length
    late: dict[tuple[str, ...], Source] = {}
    for f in info.files:
        src = chosen.get(f.path)
        if src is None or f.pad or not f.length:
            continue
        if all(held[i] for i in range(f.offset // plen, (f.offset + f.length - 1) // plen + 1)):
            late[f.path] = src
    return late


class LatePlacer:
    """Places the wholly reused files while the swarm already fetches the rest.

    Their pieces are reserved in the picker (never requested); a piece is held,
    announced and served once every late file in it is placed and its proof
    recorded (the proof first, so the final flush finds them all). Placing holds
    the destination's lock until it ends. A failure (disk full, a source changed
    while copied) stops the session with that one line: the release is never
    staged, as when placing failed before the swarm."""

    BATCH_SECONDS = 0.05  # pieces held are told to the session at most this often

    def __init__(self, info: Info, staging: Path, tree: TreeManifest,
                 late: dict[tuple[str, ...], Source], mode: str, storage: TreeStorage,
                 hold: contextlib.ExitStack) -> None:
        self.staging = staging
        self.tree = tree
        self.late = late
        self.mode = mode
        self.storage = storage
        self._hold = hold
        self._sha = {e.path: e.sha256 for e in tree.files if e.path in late}
        plen = info.piece_length
        self.pieces_of: dict[tuple[str, ...], range] = {}
        self.waiting: dict[int, int] = {}  # piece -> its late files not yet placed
        for f in info.files:
            if f.path in late and not f.pad and f.length:
                pieces = range(f.offset // plen, (f.offset + f.length - 1) // plen + 1)
                self.pieces_of[f.path] = pieces
                for i in pieces:
                    self.waiting[i] = self.waiting.get(i, 0) + 1
        self.error: str | None = None
        self.cancelled = False

    def reserved(self) -> list[int]:
        return sorted(self.waiting)

    def run(self, held: Callable[[tuple[int, ...]], None]) -> None:
        """In a worker thread: place every late file; `held` gets the pieces that
        became whole, in batches. On failure, `error` says why."""
        batch: list[int] = []
        told = time.monotonic()

        def on_placed(path: tuple[str, ...]) -> None:
            nonlocal told
            st = os.stat(self.staging.joinpath(*path), follow_symlinks=False)
            self.storage.proofs["/".join(path)] = proof_of(st, self._sha[path])
            for i in self.pieces_of[path]:
                self.waiting[i] -= 1
                if not self.waiting[i]:
                    batch.append(i)
            if batch and time.monotonic() - told >= self.BATCH_SECONDS:
                held(tuple(batch))
                batch.clear()
                told = time.monotonic()

        try:
            place(self.staging, self.tree, self.late, self.mode, on_placed=on_placed,
                  cancelled=lambda: self.cancelled)
        except (RoostError, OSError) as exc:
            self.error = str(exc)[:500]
        finally:
            self.release()
        if batch and self.error is None:
            held(tuple(batch))

    def release(self) -> None:
        """Let go of the destination's lock (also when run never started)."""
        self._hold.close()


def preload(session: Session, storage: TreeStorage) -> None:
    """Tell the picker the blocks of partly held pieces that we hold locally: it
    never requests them. Their bytes are read from the placed files when the piece
    is checked (TreeStorage.fill_local, on the checker's thread, while the transfer
    runs), not here: the session starts without those reads. The piece is hashed
    whole as usual; if it fails, all of it is fetched again."""
    member = session.member  # the core: its picker
    size = member.picker.block_size
    for index, blocks in preload_order(storage.local_blocks):
        member.picker.preload(index, blocks)
        storage.fill_at_check(index, blocks, size)


def preload_order(local: dict[int, list[int]], rng: random.Random | None = None
                  ) -> list[tuple[int, list[int]]]:
    """The partly held pieces in a random order of this host's own. The picker asks
    for the rest of its started pieces oldest first, and after a release every
    host holds the same ones: in index order, every host asked the origin for the
    same blocks at the same time, so the origin sent each of them to every host
    and no host had anything to give another (16 hosts drew 750 KB/s each, the
    origin's link divided by 16). In an order of its own, each host first gets
    other blocks from the origin, and the hosts trade the rest."""
    order = list(local.items())
    (rng or random.Random()).shuffle(order)
    return order
