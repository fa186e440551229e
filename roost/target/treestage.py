"""Target side of tree releases: reuse files of kept releases, then finalize.

Standard library only (ships in the zipapp).

Theory of operation. Every staged tree release leaves a record,
`<dest>/.roost/trees/<tag>.json`: for each of its files, the SHA-256 (from
the manifest, proven when it was staged) and the proof that the bytes have
not changed since: inode, size, mtime_ns and ctime_ns as they were once the
release was final. ctime cannot be set by anyone, and any write or chmod
moves it, so a file whose four numbers still match holds the recorded bytes.

Reuse (`find_reusable`, `place`): before joining the swarm, each file of the
new manifest is looked up by SHA-256 among the files of every kept release,
whatever their path (a renamed file is found too). A candidate whose proof
no longer matches (edited in place, touched, chmod-ed, hard-linked) is
hashed afresh and used only if the hash still matches. It is then placed in
the staging directory:

* "copy" (default): FICLONE (a reflink: shares extents copy-on-write on
  btrfs/XFS, no extra space until one side is written), else
  os.copy_file_range (in-kernel copy; a full copy of the bytes on ext4/tmpfs),
  else read/write. The new release is independent of the old one, so
  nothing done to one (an edit, a prune) can reach the other.
* "hardlink" (opt-in): no bytes at all, but both releases then share one
  inode: an edit in place of the running release changes the kept one too,
  and modes/owners are shared (so a file is linked only when its metadata is
  identical). Linking moves the inode's ctime, so the old record's proof no
  longer matches and later reuse falls back to a fresh hash.
* "none": fetch everything.

Finalize (`finalize`): every file must be proven (by the fetch's record of
the SHA-256 it checked, with a proof taken right after that check, or by a
fresh hash), empty files, directories and symlinks are created, no entry
beyond the manifest may exist, metadata is applied deepest-first, the new
record is written, and only then is the staging directory renamed to
releases/<tag>. Nothing is opened by a path that could cross a symlink:
every open walks from a directory descriptor with O_NOFOLLOW.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.core.bitfield import Bitfield
from roost.core.metainfo import Info
from roost.core.tree import Entry, TreeManifest, link_stays_inside
from roost.engine.dirfds import DirFds
from roost.errors import DiskFullError, ReleaseError
from roost.target import REUSE_MODES as REUSE_MODES  # re-exported: importers name it here
from roost.target.fsutil import atomic_write

TREES = "trees"
CHUNK = 1 << 20
FICLONE = 0x40049409
_NOFOLLOW = os.O_NOFOLLOW
DIRS_KEPT = 256  # directory descriptors kept while finalizing one tree
STAGING_DIR_MODE = 0o700  # until finalize applies the manifest's modes


@dataclass(frozen=True)
class Source:
    """A file of a kept release that holds the bytes a new entry needs."""

    release: Path
    path: tuple[str, ...]
    proof: list[Any]  # [sha256, ino, size, mtime_ns, ctime_ns]
    # (ino, size, mtime_ns, ctime_ns) when reuse proved it: placing copies only a
    # file still in that state (a file rewritten since would be copied unproven)
    seen: tuple[int, int, int, int] | None = None


@dataclass
class Reuse:
    placed: dict[str, str]  # new path -> "tag/old path"
    bytes: int
    files: int
    hashed: int  # candidates whose proof was stale and were hashed afresh
    refused: int  # candidates that no longer held their recorded bytes


def record_path(meta: Path, tag: str) -> Path:
    return meta / TREES / f"{tag}.json"


def load_record(path: Path) -> dict[str, list[Any]]:
    """A release's file proofs; {} when absent or unreadable (nothing reused then)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items()
            if isinstance(k, str) and isinstance(v, list) and len(v) == 5}


def _sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    pos = 0
    while chunk := os.pread(fd, CHUNK, pos):
        digest.update(chunk)
        pos += len(chunk)
    return digest.hexdigest()


def proof_matches(st: os.stat_result, proof: list[Any]) -> bool:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns] == proof[1:]


# --- reuse ------------------------------------------------------------------------------


def index_kept(releases: Path, meta: Path, tags: list[str]) -> dict[str, list[Source]]:
    """SHA-256 -> files of kept releases recorded with those bytes."""
    found: dict[str, list[Source]] = {}
    for tag in tags:
        base = releases / tag
        for rel, proof in load_record(record_path(meta, tag)).items():
            parts = tuple(rel.split("/"))
            if "" in parts or ".." in parts or "." in parts:
                continue
            found.setdefault(str(proof[0]), []).append(Source(base, parts, proof))
    return found


def find_reusable(releases: Path, meta: Path, tags: list[str], manifest: TreeManifest,
                  *, fresh_hash: bool = True) -> tuple[dict[tuple[str, ...], Source], int, int]:
    """For each non-empty manifest file, a proven source; plus (hashed, refused) counts."""
    index = index_kept(releases, meta, tags)
    chosen: dict[tuple[str, ...], Source] = {}
    verdict: dict[tuple[Path, tuple[str, ...]], tuple[int, int, int, int] | None] = {}
    hashed = refused = 0
    with _SourceDirs() as sources:
        for entry in manifest.files:
            if entry.size == 0:
                continue
            for src in index.get(entry.sha256, []):
                key = (src.release, src.path)
                if key not in verdict:
                    seen, was_hashed = _still_holds(src, entry.size, fresh_hash, sources)
                    verdict[key] = seen
                    hashed += was_hashed
                    refused += seen is None
                if verdict[key] is not None:
                    chosen[entry.path] = dataclasses.replace(src, seen=verdict[key])
                    break
    return chosen, hashed, refused


class _SourceDirs:
    """Directory descriptors of the kept releases reuse reads from (one DirFds each, a
    few dozen descriptors apiece), so a file costs one openat, not one per component."""

    MAX_OPEN = 32

    def __init__(self) -> None:
        self._dirs: dict[Path, DirFds] = {}

    def __enter__(self) -> _SourceDirs:
        return self

    def __exit__(self, *exc: object) -> None:
        for dirs in self._dirs.values():
            dirs.close()
        self._dirs.clear()

    def open_file(self, release: Path, parts: tuple[str, ...]) -> int:
        return os.open(parts[-1], os.O_RDONLY | _NOFOLLOW, dir_fd=self.parent(release, parts))

    def parent(self, release: Path, parts: tuple[str, ...]) -> int:
        dirs = self._dirs.get(release)
        if dirs is None:
            dirs = self._dirs[release] = DirFds(release, max_open=self.MAX_OPEN,
                                                mode=STAGING_DIR_MODE)
        return dirs.parent(parts)


def _still_holds(src: Source, size: int, fresh_hash: bool, sources: _SourceDirs
                 ) -> tuple[tuple[int, int, int, int] | None, bool]:
    """(the file's stamp if it holds the recorded bytes, else None; had to be hashed)."""
    try:
        fd = sources.open_file(src.release, src.path)
    except OSError:
        return None, False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return None, False
        if proof_matches(st, src.proof):
            return _stamp(st), False
        if not fresh_hash:
            return None, False
        same = _sha256_fd(fd) == src.proof[0]
        # written to while it was hashed: the digest may be of a mix
        return (_stamp(st) if same and _stamp(os.fstat(fd)) == _stamp(st) else None), True
    finally:
        os.close(fd)


def place(staging: Path, manifest: TreeManifest, chosen: dict[tuple[str, ...], Source],
          mode: str = "copy", *, on_placed: Callable[[tuple[str, ...]], None] | None = None,
          cancelled: Callable[[], bool] | None = None) -> dict[str, str]:
    """Put every chosen source at its new path in `staging`; new path -> source.
    `on_placed` is told each path once it is there; `cancelled` is asked between
    files (a fetch that stopped while its reused files were still being placed)."""
    if mode not in REUSE_MODES:
        raise ReleaseError(f"reuse mode {mode!r} is not one of {', '.join(REUSE_MODES)}")
    entries = {e.path: e for e in manifest.files}
    placed: dict[str, str] = {}
    target = DirFds(staging, max_open=_SourceDirs.MAX_OPEN, mode=STAGING_DIR_MODE)
    try:
        with _SourceDirs() as sources:
            for path, src in chosen.items():
                if cancelled is not None and cancelled():
                    break
                try:
                    _place_one(target, sources, path, src, entries[path], mode)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise DiskFullError(
                            f"disk full: reusing {'/'.join(path)} in {staging}") from None
                    raise ReleaseError(f"cannot reuse {'/'.join(path)}: {exc.strerror}"
                                       ) from None
                placed["/".join(path)] = f"{src.release.name}/{'/'.join(src.path)}"
                if on_placed is not None:
                    on_placed(path)
    finally:
        target.close()
    return placed


def make_parents(staging: Path, paths: list[tuple[str, ...]]) -> None:
    """Create the parent directories of `paths` in `staging` (as place would), so
    that placing them later races no one's mkdir."""
    target = DirFds(staging, max_open=_SourceDirs.MAX_OPEN, mode=STAGING_DIR_MODE)
    try:
        for path in paths:
            target.parent(path, create=True)
    finally:
        target.close()


def _place_one(target: DirFds, sources: _SourceDirs, path: tuple[str, ...], src: Source,
               entry: Entry, mode: str) -> None:
    source = sources.open_file(src.release, src.path)
    try:
        st = os.fstat(source)
        if src.seen is not None and _changed(st, src.seen, mode):
            raise ReleaseError(f"{'/'.join(src.path)} of {src.release.name} changed "
                               "after it was proven")
        dirfd = target.parent(path, create=True)
        if mode == "hardlink" and _same_meta(st, entry):
            os.link(src.path[-1], path[-1], src_dir_fd=sources.parent(src.release, src.path),
                    dst_dir_fd=dirfd, follow_symlinks=False)
            return
        out = os.open(path[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600,
                      dir_fd=dirfd)
        try:
            copy_bytes(source, out, st.st_size)
        finally:
            os.close(out)
        if _stamp(os.fstat(source)) != _stamp(st):
            # written to while it was copied (the copy may hold a mix): never reused
            raise ReleaseError(f"{'/'.join(src.path)} of {src.release.name} changed "
                               "while it was being reused")
    finally:
        os.close(source)


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _changed(st: os.stat_result, seen: tuple[int, int, int, int], mode: str) -> bool:
    """Whether a proven source is no longer as it was proven. A hardlink made from it
    (hardlink mode: one source may serve two paths) moves its ctime, so there only
    inode, size and mtime count."""
    now = _stamp(st)
    return now[:3] != seen[:3] if mode == "hardlink" else now != seen


def _same_meta(st: os.stat_result, entry: Entry) -> bool:
    return (stat.S_IMODE(st.st_mode) == entry.mode and st.st_uid == entry.uid
            and st.st_gid == entry.gid and st.st_mtime_ns == entry.mtime_ns)


def copy_bytes(src: int, dst: int, size: int) -> None:
    """Reflink when the filesystem can, else copy_file_range, else read/write."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(dst, FICLONE, src)
        return
    pos = 0
    try:
        while pos < size:
            n = os.copy_file_range(src, dst, size - pos, pos, pos)
            if n == 0:
                break
            pos += n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while pos < size:
        chunk = os.pread(src, min(CHUNK, size - pos), pos)
        if not chunk:
            break
        pos += os.pwrite(dst, chunk, pos)
    if pos != size:
        raise ReleaseError(f"a reused file ended after {pos} of {size} bytes")


def held_pieces(info: Info, done: set[tuple[str, ...]]) -> Bitfield:
    """Pieces whose every byte is in a placed file or a pad: held before fetching."""
    needed = bytearray(info.num_pieces)
    plen = info.piece_length
    for f in info.files:
        if f.pad or not f.length or f.path in done:
            continue
        for index in range(f.offset // plen, (f.offset + f.length - 1) // plen + 1):
            needed[index] = 1
    have = Bitfield(info.num_pieces)
    for index, need in enumerate(needed):
        if not need:
            have.set(index)
    return have


def local_blocks(info: Info, done: set[tuple[str, ...]], block_size: int
                 ) -> dict[int, list[int]]:
    """For each piece not held: its blocks whose every byte is in a placed file or
    a pad. Only the other blocks cross the network; the piece's hash still
    covers all of it. (A changed small file packed between unchanged ones costs
    its own blocks, not whole pieces.)"""
    needed: set[int] = set()
    for f in info.files:
        if f.pad or not f.length or f.path in done:
            continue
        needed.update(range(f.offset // block_size, (f.offset + f.length - 1) // block_size + 1))
    per_piece = info.piece_length // block_size
    out: dict[int, list[int]] = {}
    for piece in sorted({g // per_piece for g in needed}):
        count = -(-info.piece_size(piece) // block_size)
        first = piece * per_piece
        local = [j for j in range(count) if first + j not in needed]
        if local:
            out[piece] = local
    return out


def bytes_to_fetch(info: Info, have: Bitfield,
                   local: dict[int, list[int]] | None = None, block_size: int = 16384) -> int:
    """Bytes the swarm must bring: pieces not held, less their local blocks."""
    total = sum(info.piece_size(i) for i in range(info.num_pieces) if not have[i])
    for piece, blocks in (local or {}).items():
        size = info.piece_size(piece)
        total -= sum(min(block_size, size - j * block_size) for j in blocks)
    return total


# --- finalize ---------------------------------------------------------------------------


def finalize(staging: Path, final: Path, record: Path, manifest: TreeManifest,
             checked: dict[str, list[Any]], *, owners: bool) -> int:
    """Prove every file, make the rest, apply metadata, record, rename. Returns files."""
    by_path = {e.path: e for e in manifest.entries}
    dirs = DirFds(staging, max_open=DIRS_KEPT, mode=STAGING_DIR_MODE)
    try:
        for entry in sorted(manifest.entries, key=lambda e: (len(e.path), e.path)):
            _make(dirs.parent(entry.path), entry, checked)
        _refuse_extras(staging, by_path)
        proofs: dict[str, list[Any]] = {}
        for entry in sorted(manifest.entries, key=lambda e: (-len(e.path), e.path)):
            st = _apply(dirs.parent(entry.path), entry, owners)
            if entry.type == "file":
                proofs[entry.relpath] = [entry.sha256, st.st_ino, st.st_size, st.st_mtime_ns,
                                         st.st_ctime_ns]
    finally:
        dirs.close()
    os.chmod(staging, 0o755)
    record.parent.mkdir(exist_ok=True)
    atomic_write(record, json.dumps({"version": 1, "files": proofs}).encode())
    os.rename(staging, final)
    return sum(1 for e in manifest.entries if e.type == "file")


def _make(dirfd: int, entry: Entry, checked: dict[str, list[Any]]) -> None:
    name = entry.path[-1]
    try:
        st: os.stat_result | None = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if entry.type == "dir":
        if st is None:
            os.mkdir(name, STAGING_DIR_MODE, dir_fd=dirfd)
        elif not stat.S_ISDIR(st.st_mode):
            raise ReleaseError(f"{entry.relpath!r} should be a directory")
    elif entry.type == "symlink":
        if st is not None or not link_stays_inside(entry.path, entry.target):
            raise ReleaseError(f"symlink {entry.relpath!r} cannot be made safely")
        os.symlink(entry.target, name, dir_fd=dirfd)
    elif entry.size == 0:
        if st is not None:
            raise ReleaseError(f"{entry.relpath!r} exists before it was made")
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600,
                         dir_fd=dirfd))
    else:
        _prove(dirfd, entry, st, checked.get(entry.relpath))


def _prove(dirfd: int, entry: Entry, st: os.stat_result | None, proof: list[Any] | None
           ) -> None:
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
        raise ReleaseError(f"{entry.relpath!r} is missing or has the wrong size")
    if proof is not None and proof[0] == entry.sha256 and proof_matches(st, proof):
        return
    fd = os.open(entry.path[-1], os.O_RDONLY | _NOFOLLOW, dir_fd=dirfd)
    try:
        if _sha256_fd(fd) != entry.sha256:
            raise ReleaseError(f"{entry.relpath!r} does not match its SHA-256 in the manifest")
    finally:
        os.close(fd)


def _refuse_extras(staging: Path, by_path: dict[tuple[str, ...], Entry]) -> None:
    for dirpath, dirnames, filenames in os.walk(staging):
        rel = Path(dirpath).relative_to(staging).parts
        for name in dirnames + filenames:
            if (*rel, name) not in by_path:
                raise ReleaseError(f"{'/'.join((*rel, name))!r} is not in the manifest")


def _apply(dirfd: int, entry: Entry, owners: bool) -> os.stat_result:
    """Owner, mode and mtime of one entry, each only when it differs (keeps ctime)."""
    name = entry.path[-1]
    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    link = entry.type == "symlink"
    if owners and (st.st_uid, st.st_gid) != (entry.uid, entry.gid):
        os.chown(name, entry.uid, entry.gid, dir_fd=dirfd, follow_symlinks=False)
    if not link:
        mode = entry.mode if owners else entry.mode & 0o1777
        if entry.type == "dir" and not owners:
            mode |= 0o700
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(name, mode, dir_fd=dirfd)
    if st.st_mtime_ns != entry.mtime_ns:
        os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=dirfd,
                 follow_symlinks=False)
    return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
