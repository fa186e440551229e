"""Scan a directory into a tree manifest and its torrent (the "tree" format).

One pass over the bytes: each file is read once, in payload order, and feeds
both its own SHA-256 (for the manifest) and the SHA-1 of the pieces it falls
in (for the torrent); pad files feed zeros. Only one file is open at a time,
so a tree of 100,000 files needs no more descriptors than a tree of one.
See roost.core.tree for the layout and why small files are packed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from roost import __version__
from roost.core.metainfo import choose_piece_length, safe_relpath
from roost.core.tree import (
    PAD_DIR,
    Entry,
    Slot,
    TreeManifest,
    encode_info,
    layout,
    link_stays_inside,
    torrent_with_info,
)
from roost.errors import MetainfoError, UsageError

CHUNK = 1 << 20


@dataclass(frozen=True)
class TreePayload:
    root: Path
    manifest: TreeManifest
    torrent: bytes
    slots: tuple[Slot, ...]

    @property
    def padding(self) -> int:
        return sum(s.length for s in self.slots if s.pad)


def scan(root: Path) -> list[tuple[Entry, os.stat_result]]:
    """Every entry under `root` (not root itself), parents before children."""
    out: list[tuple[Entry, os.stat_result]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).parts
            try:
                parts = safe_relpath(list(rel))
            except MetainfoError as exc:
                raise UsageError(f"cannot send {full}: {exc}") from None
            if parts == (PAD_DIR,) or (parts[0] == PAD_DIR and len(parts) == 1):
                raise UsageError(f"{full}: a top-level {PAD_DIR!r} is reserved for pad files")
            st = os.lstat(full)
            common = dict(path=parts, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid,
                          gid=st.st_gid, mtime_ns=st.st_mtime_ns)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(full)
                if not link_stays_inside(parts, target):
                    raise UsageError(f"symlink {full} -> {target} leads out of the release")
                entry = Entry(type="symlink", target=target, **common)  # type: ignore[arg-type]
                if name in dirnames:
                    dirnames.remove(name)  # os.walk does not follow it anyway
            elif stat.S_ISDIR(st.st_mode):
                entry = Entry(type="dir", **common)  # type: ignore[arg-type]
            elif stat.S_ISREG(st.st_mode):
                entry = Entry(type="file", size=st.st_size, sha256="", **common)  # type: ignore[arg-type]
            else:
                raise UsageError(f"{full} is a device, FIFO or socket; a release cannot hold it")
            out.append((entry, st))
    return out


class _PieceHasher:
    """SHA-1 of consecutive pieces, fed with arbitrary chunks."""

    def __init__(self, piece_length: int) -> None:
        self.piece_length = piece_length
        self.current = hashlib.sha1()
        self.filled = 0
        self.digests: list[bytes] = []

    def feed(self, data: memoryview | bytes) -> None:
        view = memoryview(data)
        while len(view):
            take = min(len(view), self.piece_length - self.filled)
            self.current.update(view[:take])
            self.filled += take
            view = view[take:]
            if self.filled == self.piece_length:
                self.digests.append(self.current.digest())
                self.current, self.filled = hashlib.sha1(), 0

    def finish(self) -> bytes:
        if self.filled:
            self.digests.append(self.current.digest())
        return b"".join(self.digests)


def build(root: Path, name: str, trackers: list[str] | None = None) -> TreePayload:
    """The manifest and private torrent (named `name`) of `root`. A deploy gives no
    tracker: every peer gets the swarm's secret announce URL over SSH instead."""
    scanned = scan(root)
    files = sorted((e for e, _ in scanned if e.type == "file"), key=lambda e: e.relpath.encode())
    total = sum(e.size for e in files)
    if total == 0:
        raise UsageError(f"{root} holds no non-empty file; send it with --format tar")
    piece_length = choose_piece_length(total)
    slots = layout([(e.path, e.size) for e in files], piece_length)
    hasher = _PieceHasher(piece_length)
    digests: dict[tuple[str, ...], str] = {}
    by_path = {e.path: e for e in files}
    zeros = bytes(piece_length)
    for slot in slots:
        if slot.pad:
            hasher.feed(zeros[: slot.length])
            continue
        digests[slot.path] = _hash_file(root, by_path[slot.path], hasher)
    for e in files:
        if e.size == 0:
            digests[e.path] = hashlib.sha256(b"").hexdigest()
    pieces = hasher.finish()
    entries = tuple(
        Entry(**{**e.__dict__, "sha256": digests[e.path]}) if e.type == "file" else e
        for e, _ in scanned
    )
    # hosts rebuild the torrent from the manifest and the pieces (roost.core.tree.proven_torrent):
    # made the same way here, so the info-hash in the manifest is the one they get
    draft = TreeManifest("0" * 40, piece_length, entries)
    info = encode_info(draft, name, pieces)
    torrent = torrent_with_info(info, trackers or [], f"roost {__version__}")
    info_hash = hashlib.sha1(info).hexdigest()
    return TreePayload(root, TreeManifest(info_hash, piece_length, entries), torrent,
                       tuple(slots))


def _hash_file(root: Path, entry: Entry, hasher: _PieceHasher) -> str:
    digest = hashlib.sha256()
    left = entry.size
    path = root.joinpath(*entry.path)
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(min(CHUNK, max(left, 1)))
        view = memoryview(buf)
        while left:
            got = f.readinto(view[: min(len(buf), left)])
            if not got:
                raise UsageError(f"{path} shrank while it was being read")
            digest.update(view[:got])
            hasher.feed(view[:got])
            left -= got
    return digest.hexdigest()
