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
from typing import Any

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
from roost.deploy.hashcache import HashCache, Segment, now_ns, piece_key
from roost.errors import MetainfoError, UsageError

CHUNK = 1 << 20
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


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


Scanned = list[tuple[Entry, os.stat_result]]


def checked_scan(root: Path) -> Scanned:
    """`scan`, refusing a tree a torrent cannot carry: every refusal of `build`
    that needs no byte read, so a deploy can say it before it reaches a host."""
    scanned = scan(root)
    if not any(e.size for e, _ in scanned if e.type == "file"):
        raise UsageError(f"{root} holds no non-empty file; send it with --format tar")
    return scanned


def build(root: Path, name: str, trackers: list[str] | None = None,
          scanned: Scanned | None = None, cache: HashCache | None = None) -> TreePayload:
    """The manifest and private torrent (named `name`) of `root` (as `checked_scan`
    found it, when given). A deploy gives no tracker: every peer gets the swarm's
    secret announce URL over SSH instead. With `cache`, hashes proven still valid
    are taken from it, and what was hashed is remembered (roost.deploy.hashcache)."""
    if scanned is None:
        scanned = checked_scan(root)
    files = sorted((e for e, _ in scanned if e.type == "file"), key=lambda e: e.relpath.encode())
    total = sum(e.size for e in files)
    piece_length = choose_piece_length(total)
    slots = layout([(e.path, e.size) for e in files], piece_length)
    by_path = {e.path: e for e in files}
    if cache is not None:
        stats = {e.path: st for e, st in scanned if e.type == "file"}
        pieces, digests = _hash_with_cache(root, slots, piece_length, by_path, stats, cache)
        cache.save()
    else:
        pieces, digests = _hash_all(root, slots, piece_length, by_path)
    for e in files:
        if e.size == 0:
            digests[e.path] = hashlib.sha256(b"").hexdigest()
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


def _hash_all(root: Path, slots: list[Slot], piece_length: int,
              by_path: dict[tuple[str, ...], Entry]) -> tuple[bytes, dict[tuple[str, ...], str]]:
    """Every byte read once, in payload order: the pieces' SHA-1 and the files' SHA-256."""
    hasher = _PieceHasher(piece_length)
    digests: dict[tuple[str, ...], str] = {}
    zeros = bytes(piece_length)
    for slot in slots:
        if slot.pad:
            hasher.feed(zeros[: slot.length])
            continue
        digests[slot.path] = _hash_file(root, by_path[slot.path], hasher)
    return hasher.finish(), digests


def _segments(slots: list[Slot], piece_length: int) -> list[list[tuple[Slot, int, int]]]:
    """Per piece, the (slot, offset in the slot, length) slices it is made of."""
    pieces: list[list[tuple[Slot, int, int]]] = [[]]
    room = piece_length
    for slot in slots:
        done = 0
        while done < slot.length:
            take = min(room, slot.length - done)
            pieces[-1].append((slot, done, take))
            done += take
            room -= take
            if room == 0:
                pieces.append([])
                room = piece_length
    if not pieces[-1]:
        pieces.pop()
    return pieces


class _Reader:
    """One source file open at a time; the proof rules of roost.deploy.hashcache."""

    def __init__(self, root: Path, stats: dict[tuple[str, ...], os.stat_result],
                 cache: HashCache, hashing: dict[tuple[str, ...], Any]) -> None:
        self.root, self.stats, self.cache, self.hashing = root, stats, cache, hashing
        self.path: tuple[str, ...] | None = None
        self.fd = -1
        self.before: os.stat_result | None = None
        self.read_at = 0

    def read(self, path: tuple[str, ...], offset: int, length: int) -> bytes:
        if path != self.path:
            self.close(check=True)
            self.read_at = now_ns()
            self.fd = os.open(self.root.joinpath(*path), os.O_RDONLY | _O_NOFOLLOW)
            self.path, self.before = path, os.fstat(self.fd)
            if path not in self.hashing and not HashCache.same(self.before, self.stats[path]):
                raise UsageError(f"{self._name()} changed while the tree was being read")
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise UsageError(f"{self._name()} shrank while it was being read")
        return data

    def finished(self, path: tuple[str, ...], size: int) -> None:
        """The file's last byte was read: prove it did not move meanwhile."""
        assert self.before is not None and path == self.path
        after = os.fstat(self.fd)
        hasher = self.hashing.get(path)
        if hasher is not None:
            if after.st_size != size:
                raise UsageError(f"{self._name()} changed size while it was being read")
            self.hashing[path] = hasher.hexdigest()
            self.cache.remember("/".join(path), self.hashing[path], self.before, after,
                                self.read_at)
        self.close(check=hasher is None)

    def close(self, check: bool = False) -> None:
        """With `check`, a proven file read in part must still be the proven file:
        the bytes read went into pieces remembered under its SHA-256."""
        if self.fd < 0:
            return
        try:
            if check and self.path is not None and self.path not in self.hashing \
                    and not HashCache.same(os.fstat(self.fd), self.stats[self.path]):
                raise UsageError(f"{self._name()} changed while the tree was being read")
        finally:
            os.close(self.fd)
            self.fd, self.path = -1, None

    def _name(self) -> str:
        return str(self.root.joinpath(*self.path)) if self.path else str(self.root)


def _hash_with_cache(
    root: Path, slots: list[Slot], piece_length: int, by_path: dict[tuple[str, ...], Entry],
    stats: dict[tuple[str, ...], os.stat_result], cache: HashCache,
) -> tuple[bytes, dict[tuple[str, ...], str]]:
    """As _hash_all, piece by piece: a piece whose files are all proven unchanged and
    whose SHA-1 the cache holds is not read; a file not proven is read whole (its
    pieces all need reading) and hashed as it is."""
    known: dict[tuple[str, ...], str | None] = {
        s.path: cache.sha256("/".join(s.path), stats[s.path]) for s in slots if not s.pad}
    hashing: dict[tuple[str, ...], Any] = {p: hashlib.sha256() for p, d in known.items()
                                           if d is None}
    reader = _Reader(root, stats, cache, hashing)
    zeros = bytes(piece_length)
    digests: list[bytes] = []
    keyless: list[tuple[int, list[tuple[Slot, int, int]]]] = []
    try:
        for index, segments in enumerate(_segments(slots, piece_length)):
            if all(s.pad or known[s.path] is not None for s, _, _ in segments):
                key = piece_key(_described(segments, known))
                cached = cache.piece(key)
                if cached is not None:
                    digests.append(cached)
                    cache.remember_piece(key, cached)
                    continue
            sha1 = hashlib.sha1()
            for slot, offset, length in segments:
                if slot.pad:
                    sha1.update(zeros[:length])
                    continue
                data = reader.read(slot.path, offset, length)
                sha1.update(data)
                if known[slot.path] is None:
                    hashing[slot.path].update(data)
                if offset + length == slot.length:
                    reader.finished(slot.path, by_path[slot.path].size)
            digests.append(sha1.digest())
            keyless.append((index, segments))
        reader.close(check=True)
    finally:
        reader.close()
    files = {p: d if d is not None else hashing[p] for p, d in known.items()}
    for index, segments in keyless:  # every file's SHA-256 is known now
        cache.remember_piece(piece_key(_described(segments, files)), digests[index])
    return b"".join(digests), files


def _described(segments: list[tuple[Slot, int, int]],
               sha: dict[tuple[str, ...], Any]) -> list[Segment]:
    return [("", 0, n) if s.pad else (sha[s.path], off, n) for s, off, n in segments]


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
