"""`roost fetch --tree-manifest`: stage a tree release, reusing files of kept releases.

Split from roost.target.fetch_seed so that a plain fetch never imports the
release, manifest and tree-storage modules (start-up CPU counts per host).
Standard library only (see roost.target.agent).
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

from roost.core.bitfield import Bitfield
from roost.core.metainfo import Metainfo
from roost.core.tree import check_torrent
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
    place,
)


class StagingTreeStorage(TreeStorage):
    """--stage: after the final flush (every file verified, the proofs recorded),
    make releases/<tag> right here, as the deploy host's stage command would, so
    "complete" says the release is staged: no round trip, no second process,
    no second proof of every file. Any failure leaves the staging directory
    as it was; the deploy host then runs its stage command, which reports it."""

    stage_to: tuple[Dest, Manifest, Path, FetchReporter] | None = None
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
    directory, and say which pieces that already gives (held, served to others)."""
    manifest = read_manifest(ns.tree_manifest)
    if manifest.tree is None or ns.dest is None:
        raise UsageError("--tree-manifest needs a manifest of format tree, and --dest")
    tree = manifest.tree
    check_torrent(tree, meta.info, meta.info_hash)
    dest = Dest(ns.dest)
    staging = Path(ns.dir)
    if staging.parent != dest.releases or not staging.name.startswith(f".{manifest.tag}.tmp-"):
        raise UsageError(f"-d must be {dest.releases}/.{manifest.tag}.tmp-<id>")
    chosen: dict[tuple[str, ...], Source] = {}
    hashed = refused = 0
    with dest.locked():  # no prune can remove a source while it is copied
        try:
            staging.mkdir(mode=0o700)
        except FileExistsError:
            raise ReleaseError(f"{staging} already exists") from None
        except OSError as exc:
            raise ReleaseError(f"cannot create {staging}: {exc.strerror}") from None
        if ns.reuse != "none":
            tags = [t for t in dest.release_tags() if t != manifest.tag]
            chosen, hashed, refused = find_reusable(dest.releases, dest.meta, tags, tree)
            place(staging, tree, chosen, ns.reuse)
    sizes = {e.path: e for e in tree.files}
    proofs: dict[str, Proof] = {}
    for path in chosen:
        st = os.stat(staging.joinpath(*path), follow_symlinks=False)
        proofs["/".join(path)] = proof_of(st, sizes[path].sha256)
    have = held_pieces(meta.info, set(chosen))
    # the picker's block size (16 KiB): blocks wholly inside reused files are filled locally
    local = local_blocks(meta.info, set(chosen), BLOCK_SIZE) if meta.info.piece_length \
        % BLOCK_SIZE == 0 else {}
    reporter.event(
        "reused",
        files=len(chosen),
        bytes=sum(sizes[p].size for p in chosen),
        fetch_bytes=bytes_to_fetch(meta.info, have, local, BLOCK_SIZE),
        local_blocks=sum(len(b) for b in local.values()),
        held_pieces=have.count(),
        hashed=hashed,
        refused=refused,
    )
    record = ns.tree_manifest.parent / VERIFIED
    storage = StagingTreeStorage(meta.info, staging, tree, done=set(chosen), record=record,
                                 proofs=proofs)
    if getattr(ns, "stage", False) and isinstance(reporter, FetchReporter):
        storage.stage_to = (dest, manifest, record, reporter)
    storage.local_blocks = local
    return storage, have


def preload(session: Session, storage: TreeStorage) -> None:
    """Give the session the blocks of partly held pieces that we hold locally: the
    picker never requests them and the piece's buffer starts with their bytes
    (read back from the placed files), so the piece is hashed whole as usual."""
    member = session.member  # the core: its picker and piece assembly
    size = member.picker.block_size
    for index, blocks in preload_order(storage.local_blocks):
        buf = bytearray(member.info.piece_size(index))
        piece = len(buf)
        for j in blocks:
            begin = j * size
            buf[begin : begin + min(size, piece - begin)] = storage.read_block(
                index, begin, min(size, piece - begin))
        member.picker.preload(index, blocks)
        member.assembly.buffers[index] = buf
        member.assembly.block_from[index] = {}


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
