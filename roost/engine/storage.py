"""Piece storage on disk: a torrent payload as a set of real files. Adapter layer.

Theory of operation. The payload is the concatenation of the torrent's files
in metainfo order; a (piece, begin, length) range maps onto one or more
(file, offset, length) spans (`hashing.PieceReader.spans`), and every read or
write is a positioned syscall (os.pread / os.pwrite) on those spans, so there
is no shared file position and no seek race between threads.

Paths: every component comes from the metainfo, where `safe_relpath` already
refused "..", separators and absolute paths. On top of that, before a file or
directory is opened or created, each existing component under `root` is
lstat'ed and a symlink is refused unless it resolves inside `root`; the file
is then opened by its resolved path with O_NOFOLLOW. Nothing is ever created
or written outside `root`.

File descriptors live in a cache keyed by file index. With at most `max_open`
non-empty files every fd is opened once and kept for the Storage's life. With
more, fds are opened lazily and the least recently used one is closed; a
reference count ("pin") keeps an fd open while a read, a write or a
`pinned_spans` block uses it, so an eviction can never close (and the kernel
re-use) an fd another thread is writing through. The cache is guarded by one
lock; the syscalls themselves run outside it.

Memory is bounded whatever the payload size: nothing reads a whole file.
`read_block` allocates one block, `write_piece` writes from the caller's
buffer, and `recheck` delegates to `hashing.hash_pieces`, whose memory is
bounded by 2 x workers x 4 MiB.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from roost.core.bitfield import Bitfield
from roost.core.metainfo import Info
from roost.engine.hashing import PieceReader, hash_pieces
from roost.errors import DiskFullError, RoostError, UnsafePathError

DEFAULT_MAX_OPEN = 256
FILE_MODE = 0o644
DIR_MODE = 0o755
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)

Span = tuple[int, int, int]


class StorageError(RoostError):
    """A payload file is missing, has the wrong size, or cannot be read or written."""


class StorageFullError(StorageError):
    """No space left for the payload: exits as roost.errors.DiskFullError does, which
    is how the operator tells a full disk (roost.target.protocol), not by the message."""

    exit_code = DiskFullError.exit_code


class Storage:
    """The files of one torrent under `root`, read and written piece by piece."""

    def __init__(
        self,
        info: Info,
        root: Path,
        *,
        preallocate: bool = True,
        max_open: int = DEFAULT_MAX_OPEN,
        top: str | None = None,
    ) -> None:
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self.info = info
        self.root = Path(root)
        self.preallocate = preallocate
        self.max_open = max_open
        # Components of each file relative to root (already validated by metainfo).
        # `top`: the payload's own name under root when it is not the torrent's (an
        # origin host that holds the artifact under another name); one plain name only.
        # Its symlinks are then confined to root/top, not root: root is merely the
        # parent of what the origin was told to serve.
        name = info.name if top is None else _plain_name(top)
        self._top = top
        self._rel: list[tuple[str, ...]] = [
            (name,) if info.single_file else (name, *f.path) for f in info.files
        ]
        self._reader = PieceReader(
            [(self.root.joinpath(*r), f.length) for r, f in zip(self._rel, info.files, strict=True)]
        )
        self._lock = threading.Lock()
        self._fds: OrderedDict[int, int] = OrderedDict()  # file index -> fd, LRU order
        self._pins: dict[int, int] = {}  # file index -> users currently in a syscall
        self._dirty: set[int] = set()
        self._real_root = ""  # realpath(root), fixed at open()
        self._writable = False
        self._opened = False

    # -- lifecycle ---------------------------------------------------------

    def open(self, create: bool = True) -> None:
        """Open the payload. create=True: read-write, creating and sizing files
        (a downloader). create=False: read-only, every file must already exist
        with its exact size (a seeder); a StorageError says which one does not."""
        if self._opened:
            raise RoostError("storage is already open")
        self._writable = create
        self._opened = True
        seen: set[tuple[str, ...]] = set()
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            elif not self.root.is_dir():
                raise StorageError(f"payload directory {self.root} does not exist")
            self._real_root = os.path.realpath(self.root)
            for index, entry in enumerate(self.info.files):
                if create:
                    self._prepare_file(index, entry.length, seen)
                else:
                    self._check_file(index, entry.length, seen)
        except OSError as exc:  # permissions, a full disk, a read-only filesystem...
            self.close()
            detail = exc.strerror or str(exc)
            where = exc.filename or self.root
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise (StorageFullError if full else StorageError)(
                f"cannot prepare the payload at {where}: {detail}") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close every fd. Safe to call twice."""
        with self._lock:
            fds = list(self._fds.values())
            self._fds.clear()
            self._pins.clear()
            self._opened = False
        for fd in fds:
            os.close(fd)

    def __enter__(self) -> Storage:
        if not self._opened:
            self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- paths -------------------------------------------------------------

    def complete_paths(self) -> list[Path]:
        """Every payload file's path, in metainfo order."""
        return [self.root.joinpath(*r) for r in self._rel]

    def payload_path(self) -> Path:
        """The payload itself: the single file, or the top directory."""
        return self.root / self._rel[0][0] if self._rel else self.root / self.info.name

    def _safe_path(
        self,
        rel: tuple[str, ...],
        real_root: str,
        *,
        create_dirs: bool,
        seen: set[tuple[str, ...]] | None = None,
    ) -> str:
        """Resolve root/rel, refusing symlinks that leave root; optionally mkdir parents.

        Returns the resolved path of the file, which may not exist yet. `seen`
        caches directories already checked during one pass (open)."""
        current = real_root
        for depth, name in enumerate(rel):
            current = os.path.join(current, name)
            is_last = depth == len(rel) - 1
            if not is_last and seen is not None and rel[: depth + 1] in seen:
                continue
            try:
                st = os.lstat(current)
                if stat.S_ISLNK(st.st_mode):
                    current = self._follow(current, self._confine(real_root), rel)
                    st = os.stat(current)
            except FileNotFoundError:
                if is_last:
                    return current
                if not create_dirs:
                    return os.path.join(current, *rel[depth + 1 :])
                os.mkdir(current, DIR_MODE)
                st = os.lstat(current)
            if not is_last:
                if not stat.S_ISDIR(st.st_mode):
                    raise StorageError(f"{current} is in the way: it is not a directory")
                if seen is not None:
                    seen.add(rel[: depth + 1])
        return current

    def _confine(self, real_root: str) -> str:
        """Where a symlink may lead: root, or only root/top when `top` was given."""
        return real_root if self._top is None else os.path.join(real_root, self._top)

    @staticmethod
    def _follow(link: str, real_root: str, rel: tuple[str, ...]) -> str:
        target = os.path.realpath(link)
        if os.path.commonpath([real_root, target]) != real_root:
            raise UnsafePathError(
                f"{link} is a symlink leading outside {real_root}; refusing to use "
                f"it for {'/'.join(rel)}"
            )
        return target

    # -- opening files -----------------------------------------------------

    def _prepare_file(self, index: int, length: int, seen: set[tuple[str, ...]]) -> None:
        """Create file `index` if needed and give it its final size."""
        path = self._safe_path(self._rel[index], self._real_root, create_dirs=True, seen=seen)
        fd = self._os_open(path, os.O_RDWR | os.O_CREAT, index)
        try:
            size = os.fstat(fd).st_size
            if size > length:
                os.ftruncate(fd, length)  # leftover from an older payload
            elif size < length:
                _allocate(fd, size, length, self.preallocate, path)
        except BaseException:
            os.close(fd)
            raise
        self._adopt(index, fd, length)

    def _check_file(self, index: int, length: int, seen: set[tuple[str, ...]]) -> None:
        path = self._safe_path(self._rel[index], self._real_root, create_dirs=False, seen=seen)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise StorageError(f"payload file {path} is missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(f"payload file {path} is not a regular file")
        if st.st_size != length:
            raise StorageError(
                f"payload file {path} has {st.st_size} bytes, the torrent says {length}"
            )
        if length and len(self._fds) < self.max_open:
            self._adopt(index, self._os_open(path, os.O_RDONLY, index), length)

    def _adopt(self, index: int, fd: int, length: int) -> None:
        """Keep fd in the cache if there is room, else close it (reopened on use)."""
        with self._lock:
            if length and len(self._fds) < self.max_open:
                self._fds[index] = fd
                return
        os.close(fd)

    def _os_open(self, path: str, flags: int, index: int) -> int:
        try:
            return os.open(path, flags | _O_NOFOLLOW, FILE_MODE)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePathError(f"{path} became a symlink; refusing it") from None
            what = "/".join(self._rel[index])
            raise StorageError(f"cannot open payload file {what}: {exc.strerror}") from None

    def _reopen(self, index: int) -> int:
        path = self._safe_path(self._rel[index], self._real_root, create_dirs=False)
        flags = os.O_RDWR if self._writable else os.O_RDONLY
        return self._os_open(path, flags, index)

    @contextmanager
    def _pinned(self, indexes: list[int]) -> Iterator[dict[int, int]]:
        """fds for the given file indexes, guaranteed open until the block exits."""
        fds: dict[int, int] = {}
        try:
            for index in indexes:
                if index not in fds:
                    fds[index] = self._acquire(index)
            yield fds
        finally:
            self._release(list(fds))

    def _acquire(self, index: int) -> int:
        with self._lock:
            if not self._opened:
                raise RoostError("storage is not open")
            fd = self._fds.get(index)
            if fd is not None:
                self._fds.move_to_end(index)
                self._pins[index] = self._pins.get(index, 0) + 1
                return fd
        fd = self._reopen(index)  # slow path, outside the lock
        with self._lock:
            if not self._opened:  # closed meanwhile: do not leak the new fd
                os.close(fd)
                raise RoostError("storage is not open")
            existing = self._fds.get(index)
            if existing is not None:  # another thread opened it meanwhile
                os.close(fd)
                fd = existing
                self._fds.move_to_end(index)
            else:
                self._fds[index] = fd
            self._pins[index] = self._pins.get(index, 0) + 1
            victims = self._evict_locked()
        for victim in victims:
            os.close(victim)
        return fd

    def _evict_locked(self) -> list[int]:
        victims: list[int] = []
        for index in list(self._fds):
            if len(self._fds) <= self.max_open:
                break
            if self._pins.get(index, 0) == 0:
                victims.append(self._fds.pop(index))
        return victims

    def _release(self, indexes: list[int]) -> None:
        with self._lock:
            for index in indexes:
                left = self._pins.get(index, 0) - 1
                if left > 0:
                    self._pins[index] = left
                else:
                    self._pins.pop(index, None)
            victims = self._evict_locked()
        for victim in victims:
            os.close(victim)

    # -- blocks and pieces -------------------------------------------------

    def _file_spans(self, index: int, begin: int, length: int) -> list[Span]:
        """(file index, file offset, length) for a range inside piece `index`."""
        size = self.info.piece_size(index)
        if begin < 0 or length <= 0 or begin + length > size:
            raise ValueError(f"range {begin}+{length} is outside piece {index} of {size} bytes")
        start = index * self.info.piece_length + begin
        return list(self._reader.spans(start, length))

    def block_spans(self, index: int, begin: int, length: int) -> list[Span]:
        """(fd, file offset, length) covering a block, for os.sendfile.

        The fds stay valid until close() when the payload has at most
        `max_open` non-empty files (then every fd is cached for good). With
        more files an fd may be evicted by later calls: use `pinned_spans`."""
        spans = self._file_spans(index, begin, length)
        with self._pinned([s[0] for s in spans]) as fds:
            return [(fds[f], off, n) for f, off, n in spans]

    @contextmanager
    def pinned_spans(self, index: int, begin: int, length: int) -> Iterator[list[Span]]:
        """Like block_spans, but the fds cannot be closed until the block exits."""
        spans = self._file_spans(index, begin, length)
        with self._pinned([s[0] for s in spans]) as fds:
            yield [(fds[f], off, n) for f, off, n in spans]

    def read_block(self, index: int, begin: int, length: int) -> bytes:
        """Read `length` bytes at `begin` inside piece `index`."""
        spans = self._file_spans(index, begin, length)
        if len(spans) == 1:
            # os.pread reads straight into the bytes it returns: no second
            # buffer, no copy (this is the upload path when sendfile cannot be)
            f, off, n = spans[0]
            with self._pinned([f]) as fds:
                try:
                    data = os.pread(fds[f], n, off)
                except OSError as exc:
                    raise StorageError(f"cannot read {'/'.join(self._rel[f])}: {exc.strerror}") \
                        from None
            if len(data) == n:
                return data
            # a short read (a signal, or a file shorter than the torrent): the loop below
        buf = bytearray(length)
        view = memoryview(buf)
        pos = 0
        with self._pinned([s[0] for s in spans]) as fds:
            for f, off, n in spans:
                _pread_exact(fds[f], view[pos : pos + n], off, self._rel[f])
                pos += n
        return bytes(buf)

    def write_piece(self, index: int, data: bytes | bytearray | memoryview) -> None:
        """Write a whole, already verified piece. Thread-safe."""
        if not self._writable:
            raise RoostError("storage is open read-only (a seeder); cannot write a piece")
        view = memoryview(data).cast("B")
        size = self.info.piece_size(index)
        if len(view) != size:
            raise ValueError(f"piece {index} has {size} bytes, got {len(view)}")
        if size == 0:
            return
        spans = self._file_spans(index, 0, size)
        pos = 0
        with self._pinned([s[0] for s in spans]) as fds:
            for f, off, n in spans:
                _pwrite_all(fds[f], view[pos : pos + n], off, self._rel[f])
                pos += n
        with self._lock:
            self._dirty.update(s[0] for s in spans)

    def verify_piece_buffer(self, index: int, data: bytes | bytearray | memoryview) -> bool:
        """True when `data` is exactly piece `index` (size and SHA-1). Releases the GIL."""
        if len(data) != self.info.piece_size(index):
            return False
        return hashlib.sha1(data).digest() == self.info.piece_hash(index)

    # -- resume and completion ---------------------------------------------

    def recheck(
        self, progress: Callable[[int], None] | None = None, workers: int | None = None
    ) -> Bitfield:
        """Which pieces are already valid on disk (resume).

        Only pieces whose every file exists as a regular file of the right size
        are read; they are hashed on `workers` threads (default: every core)."""
        info = self.info
        real_root = os.path.realpath(self.root)
        good_files: list[bool] = []
        sources: list[tuple[Path, int]] = []
        for rel, entry in zip(self._rel, info.files, strict=True):
            ok, path = self._existing_file(rel, entry.length, real_root)
            good_files.append(ok)
            sources.append((Path(path), entry.length))
        reader = PieceReader(sources)
        candidates = [
            i
            for i in range(info.num_pieces)
            if all(good_files[f] for f, _, _ in self._file_spans(i, 0, info.piece_size(i)))
        ]
        digests = hash_pieces(
            reader, info.piece_length, progress=progress, workers=workers, pieces=candidates
        )
        have = Bitfield(info.num_pieces)
        for index, digest in zip(candidates, digests, strict=True):
            if digest is not None and digest == info.piece_hash(index):
                have.set(index)
        return have

    def _existing_file(self, rel: tuple[str, ...], length: int, real_root: str) -> tuple[bool, str]:
        """(usable for recheck, resolved path); refuses escaping symlinks."""
        path = self._safe_path(rel, real_root, create_dirs=False)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False, path
        return stat.S_ISREG(st.st_mode) and st.st_size == length, path

    def flush(self) -> None:
        """fsync every file written since the last flush, then their directories."""
        with self._lock:
            dirty = sorted(self._dirty)
            self._dirty.clear()
        dirs: set[tuple[str, ...]] = set()
        for index in dirty:
            with self._pinned([index]) as fds:
                os.fsync(fds[index])
            rel = self._rel[index]
            dirs.update(rel[:depth] for depth in range(len(rel)))  # every parent, root = ()
        # deepest first, so a new entry is durable before its parent is synced
        for parts in sorted(dirs, key=len, reverse=True):
            _fsync_dir(str(self.root.joinpath(*parts)))


# -- syscall helpers -------------------------------------------------------


def _allocate(fd: int, size: int, length: int, preallocate: bool, path: str) -> None:
    """Grow a file to `length`: reserve the blocks when asked, else leave it sparse."""
    if preallocate and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, size, length - size)
            return
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise StorageFullError(
                    f"not enough disk space for {path} ({length} bytes)") from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise StorageError(f"cannot allocate {path}: {exc.strerror}") from None
            # the filesystem cannot reserve blocks: fall through to a sparse file
    os.ftruncate(fd, length)


def _pread_exact(fd: int, view: memoryview, offset: int, rel: tuple[str, ...]) -> None:
    pos = 0
    while pos < len(view):
        try:
            got = os.preadv(fd, [view[pos:]], offset + pos)
        except OSError as exc:
            raise StorageError(f"cannot read {'/'.join(rel)}: {exc.strerror}") from None
        if got == 0:
            raise StorageError(f"payload file {'/'.join(rel)} is shorter than the torrent says")
        pos += got


def _pwrite_all(fd: int, view: memoryview, offset: int, rel: tuple[str, ...]) -> None:
    pos = 0
    while pos < len(view):
        try:
            pos += os.pwrite(fd, view[pos:], offset + pos)
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise (StorageFullError if full else StorageError)(
                f"cannot write {'/'.join(rel)}: {exc.strerror}") from None


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | _O_DIRECTORY)
    except OSError:
        return  # some platforms cannot open directories; the file fsyncs still count
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _plain_name(name: str) -> str:
    """One path component: no separator, no `.` or `..`, no NUL."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnsafePathError(f"{name!r} is not a plain file or directory name")
    return name
