"""Storage for a tree torrent: pieces land in the release's staging directory.

Theory of operation. The torrent's files are the tree's files, laid out by
roost.core.tree, so the storage root is the staging directory itself (no
`info.name` level). Three differences from Storage:

* Pad files (BEP 47) are zeros: never created, never written; a read or a
  sendfile of a pad range is served from one zero-filled memfd.
* Files already placed from an earlier release (`done`) are never written:
  a piece that straddles one only writes the spans of the other files.
* Files still being placed when the session starts (`pending`, a subset of
  `done`) are not looked at by open(): their pieces are reserved, held and
  read only once the placer has put them there (roost.target.fetch_tree).
* Each file's SHA-256 is checked as soon as the last piece that touches it
  has been written (in the verifier's worker thread, so verification
  overlaps the transfer); a mismatch is a StorageError, which stops the
  session. The file's proof (inode, size, mtime_ns, ctime_ns) is recorded
  right after its hash, and `flush` writes every proof to `record` before
  the session reports "complete": staging then checks the proofs instead of
  hashing the release again.

The staging directory is renamed to releases/<tag> while this process still
seeds from it, so files are re-opened relative to a directory descriptor of
the root taken at open(), component by component with O_NOFOLLOW, never by
path, as Storage does; unlike Storage, no symlink is resolved: a tree's files
and directories are never links. Directory descriptors are kept (DirFds), so a
tree of 100,000 small files costs about one openat per file, not one per path
component; a small file wholly inside the piece just written is hashed from
that piece's bytes, and its read-write descriptor is dropped rather than
swapped for a read-only one when the tree has more files than fit the
descriptor cache (a later read reopens it read-only).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from roost.core.metainfo import Info
from roost.core.tree import TreeManifest
from roost.engine.storage import (
    DEFAULT_MAX_OPEN,
    Found,
    Storage,
    StorageError,
    StorageFullError,
    _Walk,
)

HASH_CHUNK = 1 << 20
#: per file: [sha256, inode, size, mtime_ns, ctime_ns]
Proof = list[object]


def proof_of(st: os.stat_result, sha256: str) -> Proof:
    return [sha256, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class TreeStorage(Storage):
    def __init__(
        self,
        info: Info,
        root: Path,
        manifest: TreeManifest | None,
        *,
        done: set[tuple[str, ...]] | None = None,
        pending: set[tuple[str, ...]] | None = None,
        record: Path | None = None,
        proofs: dict[str, Proof] | None = None,
        preallocate: bool = True,
        max_open: int = DEFAULT_MAX_OPEN,
    ) -> None:
        super().__init__(info, root, preallocate=preallocate, max_open=max_open)
        self._rel = [f.path for f in info.files]
        self._pads = {i for i, f in enumerate(info.files) if f.pad}
        sha = {e.path: e.sha256 for e in manifest.files} if manifest else {}
        self._sha = [sha.get(f.path, "") for f in info.files]
        done = done or set()
        self._done = [f.path in done for f in info.files]
        pending = pending or set()
        if not pending <= done:
            raise ValueError("files still being placed must be among the placed ones")
        self._pending = [f.path in pending for f in info.files]
        self._record = record
        self.proofs: dict[str, Proof] = dict(proofs or {})
        self._remaining = [0] * len(info.files)
        plen = info.piece_length
        for i, f in enumerate(info.files):
            if i not in self._pads and not self._done[i] and f.length:
                self._remaining[i] = (f.offset + f.length - 1) // plen - f.offset // plen + 1
        self._retired: dict[int, list[int]] = {}  # index -> replaced fds, closed when idle
        self._zero_fd = -1
        self._unsynced_dirs: set[tuple[str, ...]] = set()  # parents of files fsynced early
        # more files than cached fds: a verified file's fd is dropped, not reopened
        self._drop_verified = len(info.files) > self.max_open
        self.on_file_verified: Callable[[str, int], None] | None = None
        #: piece -> blocks wholly inside `done` files or pads (roost.target.treestage.local_blocks)
        self.local_blocks: dict[int, list[int]] = {}
        #: piece -> (its local blocks, block size) still to be read in by fill_local
        self._fill: dict[int, tuple[list[int], int]] = {}

    # -- lifecycle ---------------------------------------------------------

    def open(self, create: bool = True) -> None:
        if create and not self.root.is_dir():
            raise StorageError(f"staging directory {self.root} does not exist")
        try:
            self._zero_fd = _zero_file(max(self.info.piece_length, 1))
        except OSError as exc:
            self.close()
            raise StorageError(f"cannot open {self.root}: {exc.strerror}") from None
        super().open(create)

    def close(self) -> None:
        super().close()
        with self._lock:
            retired = [fd for fds in self._retired.values() for fd in fds]
            self._retired.clear()
        for fd in (self._zero_fd, *retired):
            if fd >= 0:
                os.close(fd)
        self._zero_fd = -1

    def payload_path(self) -> Path:
        return self.root

    def fill_at_check(self, index: int, blocks: list[int], block_size: int) -> None:
        """Piece `index`'s `blocks` (preloaded in the picker: never requested) are read
        from the placed files only when the piece is checked (fill_local), not before
        the session starts: a next release's few hundred partly held pieces cost
        thousands of reads, on 16 hosts sharing 2 cores 2-4 s before any request."""
        with self._lock:
            self._fill[index] = (sorted(blocks), block_size)

    def fill_local(self, index: int, data: bytearray) -> None:
        """Copy the piece's local blocks into `data`, once: a piece that fails its
        check is fetched again whole (the picker forgets the preload), so a second
        check must not overwrite those fetched bytes with local ones."""
        with self._lock:
            entry = self._fill.pop(index, None)
        if entry is None:
            return
        blocks, size = entry
        view = memoryview(data)
        run = 0  # each run of contiguous blocks in one read
        for i, j in enumerate(blocks):
            if i + 1 < len(blocks) and blocks[i + 1] == j + 1:
                continue
            begin, end = blocks[run] * size, min((j + 1) * size, len(data))
            view[begin:end] = self.read_block(index, begin, end - begin)
            run = i + 1

    # -- files -------------------------------------------------------------

    def _resolve(self, walk: _Walk, index: int, create: bool) -> Found:
        return self._rel[index], None  # no link to resolve: O_NOFOLLOW refuses any

    def _prepare_file(self, index: int, length: int) -> None:
        if index in self._pads:
            return
        if self._done[index]:  # placed from a kept release: never written, only read
            if not self._pending[index]:  # (a pending one is checked by its placer)
                self._check_file(index, length)
            return
        try:
            super()._prepare_file(index, length)
        except StorageFullError as exc:
            raise StorageFullError(f"disk full: {exc}") from None

    def _check_file(self, index: int, length: int) -> None:
        if index not in self._pads:
            super()._check_file(index, length)

    def _writing(self, index: int) -> bool:
        return self._writable and not self._done[index] and self._remaining[index] > 0

    def _evict_locked(self) -> list[int]:
        if len(self._fds) <= self.max_open:  # the common case: no list copy per call
            return []
        return super()._evict_locked()

    def _acquire(self, index: int) -> int:
        if index in self._pads:
            return self._zero_fd
        return super()._acquire(index)

    def _release(self, indexes: list[int]) -> None:
        super()._release(indexes)
        with self._lock:
            idle = [i for i in indexes if i in self._retired and not self._pins.get(i)]
            old = [fd for i in idle for fd in self._retired.pop(i)]
        for fd in old:
            os.close(fd)

    def _read_only(self, index: int) -> None:
        """Swap a verified file's cached read-write fd for a read-only one: a
        process holding a file open for writing makes exec() of it fail with
        ETXTBSY, and the release's executables must run while we still seed.
        The old fd is closed once no read pins it (see _release). With more files
        than cached fds it is only dropped: a later read reopens it, read-only."""
        if self._drop_verified:
            with self._lock:
                old = self._fds.pop(index, None) if self._opened else None
                if old is not None and self._pins.get(index):
                    self._retired.setdefault(index, []).append(old)
                    old = None
            if old is not None:
                os.close(old)
            return
        fd = self._reopen(index)  # O_RDONLY now: _remaining is 0
        with self._lock:
            old = self._fds.get(index)
            if old is None or not self._opened:
                stale = fd  # not cached (evicted): later opens are read-only anyway
            else:
                self._fds[index] = fd
                if self._pins.get(index):
                    self._retired.setdefault(index, []).append(old)  # in use: later
                    stale = -1
                else:
                    stale = old
        if stale >= 0:
            os.close(stale)

    # -- pieces ------------------------------------------------------------

    def write_piece(self, index: int, data: bytes | bytearray | memoryview) -> None:
        if not self._writable:
            raise StorageError("storage is open read-only (a seeder); cannot write a piece")
        view = memoryview(data).cast("B")
        size = self.info.piece_size(index)
        if len(view) != size:
            raise ValueError(f"piece {index} has {size} bytes, got {len(view)}")
        spans = self._file_spans(index, 0, size)
        pos = 0
        wanted = [s for s in spans if s[0] not in self._pads and not self._done[s[0]]]
        with self._pinned([s[0] for s in wanted]) as fds:
            for f, off, n in spans:
                if f not in self._pads and not self._done[f]:
                    _pwrite(fds[f], view[pos : pos + n], off, self._rel[f])
                pos += n
        finished = []
        with self._lock:
            for f, _, _ in wanted:
                self._dirty.add(f)
                self._remaining[f] -= 1
                if self._remaining[f] == 0:
                    finished.append(f)
        whole: dict[int, memoryview] = {}  # files wholly inside this piece: their bytes
        pos = 0
        for f, off, n in spans:
            if off == 0 and n == self.info.files[f].length:
                whole[f] = view[pos : pos + n]
            pos += n
        for f in finished:
            self._verify_file(f, whole.get(f))

    def _verify_file(self, index: int, data: memoryview | None = None) -> None:
        """SHA-256 of a file whose last piece was just written, against the manifest:
        from `data` (its whole bytes, as just written from a piece that passed its
        SHA-1) or else read back from the file."""
        rel = "/".join(self._rel[index])
        digest = hashlib.sha256()
        size = length = self.info.files[index].length
        if data is not None:
            digest.update(data)
            length = 0  # nothing to read back
        buf = bytearray(min(HASH_CHUNK, length))
        view = memoryview(buf)
        with self._pinned([index]) as fds:
            fd = fds[index]
            pos = 0
            while pos < length:
                got = os.preadv(fd, [view[: min(len(buf), length - pos)]], pos)
                if got <= 0:
                    raise StorageError(f"{rel} is shorter than the manifest says")
                digest.update(view[:got])
                pos += got
            st = os.fstat(fd)
            os.fsync(fd)  # now, overlapping the transfer, rather than all at the end
        with self._lock:
            self._dirty.discard(index)
            rel_parts = self._rel[index]
            self._unsynced_dirs.update(rel_parts[:depth] for depth in range(len(rel_parts)))
        if st.st_size != size:
            raise StorageError(f"{rel} has {st.st_size} bytes, the manifest says {size}")
        if digest.hexdigest() != self._sha[index]:
            raise StorageError(f"{rel} does not match its SHA-256 in the manifest")
        with self._lock:
            self.proofs[rel] = proof_of(st, self._sha[index])
        self._read_only(index)
        if self.on_file_verified is not None:
            self.on_file_verified(rel, size)

    def unverified(self) -> list[str]:
        with self._lock:
            return ["/".join(self._rel[i]) for i, n in enumerate(self._remaining) if n]

    def _usable(self, walk: _Walk) -> list[tuple[str, ...] | None]:
        """Hash every piece (a seeder's check): a missing file fails its pieces' hash."""
        return list(self._rel)

    def _open_to_hash(self, walk: _Walk, found: list[tuple[str, ...] | None], index: int) -> int:
        if index in self._pads:
            return os.open("/dev/zero", os.O_RDONLY)
        return walk.open(self._rel[index], os.O_RDONLY)

    def flush(self) -> None:
        """fsync, then record the proof of every file (before "complete" is reported).

        Files verified during the transfer were fsynced then (`_verify_file`, in
        the verifier's thread, overlapping the network): only the rest and the
        directories are left, each directory synced through its descriptor."""
        with self._lock:
            dirs, self._unsynced_dirs = self._unsynced_dirs, set()
        self._sync(dirs)
        if self._record is None:
            return
        with self._lock:
            data = json.dumps({"version": 1, "files": self.proofs}).encode()
        tmp = self._record.with_name(self._record.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._record)


def _zero_file(size: int) -> int:
    """A descriptor reading as `size` zero bytes, that sendfile accepts."""
    fd = os.memfd_create("roost-pad", os.MFD_CLOEXEC)  # Linux >= 3.17
    os.ftruncate(fd, size)
    return fd


def _pwrite(fd: int, view: memoryview, offset: int, rel: tuple[str, ...]) -> None:
    pos = 0
    while pos < len(view):
        try:
            pos += os.pwrite(fd, view[pos:], offset + pos)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(f"disk full: cannot write {'/'.join(rel)}") from None
            raise StorageError(f"cannot write {'/'.join(rel)}: {exc.strerror}") from None
