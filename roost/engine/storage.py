"""Piece storage on disk: a torrent payload as a set of real files. Adapter layer.

Theory of operation. The payload is the concatenation of the torrent's files
in metainfo order; a (piece, begin, length) range maps onto one or more
(file, offset, length) spans (`hashing.PieceReader.spans`), and every read or
write is a positioned syscall (os.pread / os.pwrite) on those spans, so there
is no shared file position and no seek race between threads.

Paths: every component comes from the metainfo, where `safe_relpath` already
refused "..", separators and absolute paths. A path is never opened whole: the
walk goes directory by directory from a descriptor of `root` (DirFds, shared
with TreeStorage and tree staging), each opened O_NOFOLLOW from its parent's.
A symlink under root is still allowed where it stays inside root (or root/top),
but it is read and resolved by this code (`_Walk`), never followed by the
kernel; so swapping a directory for a symlink between the walk and the open
fails the open instead of leading elsewhere. Nothing is ever created, written
or read outside `root`.

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

import contextlib
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
from roost.engine.dirfds import DirFds
from roost.engine.hashing import PieceReader, hash_pieces
from roost.errors import DiskFullError, RoostError, UnsafePathError

DEFAULT_MAX_OPEN = 256
FILE_MODE = 0o644
DIR_MODE = 0o755
MAX_DIRS = 64  # directory descriptors kept; with the 256 file fds, inside a 1024 limit

Span = tuple[int, int, int]
#: a path's symlink-free components under root, and their lstat if the walk took it
Found = tuple[tuple[str, ...], "os.stat_result | None"]


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
        self._walk: _Walk | None = None  # directory descriptors from root, from open()
        self._real: dict[int, tuple[str, ...]] = {}  # file index -> its symlink-free path
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
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            elif not self.root.is_dir():
                raise StorageError(f"payload directory {self.root} does not exist")
            self._walk = self._walker()
            for index, entry in enumerate(self.info.files):
                if create:
                    self._prepare_file(index, entry.length)
                else:
                    self._check_file(index, entry.length)
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
            walk, self._walk = self._walk, None
        for fd in fds:
            os.close(fd)
        if walk is not None:
            walk.close()

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

    def _walker(self) -> _Walk:
        """Directory descriptors from root, and the resolution of its symlinks."""
        dirs = DirFds(self.root, max_open=MAX_DIRS, mode=DIR_MODE)
        within = () if self._top is None else (self._top,)
        return _Walk(dirs, os.path.realpath(self.root), within)

    def _resolve(self, walk: _Walk, index: int, create: bool) -> Found:
        """File `index`'s components under root, free of symlinks (see _Walk), and
        their lstat when the walk took it."""
        return walk.file(self._rel[index], create)

    def _shown(self, parts: tuple[str, ...]) -> str:
        return os.path.join(self.root, *parts)

    # -- opening files -----------------------------------------------------

    def _prepare_file(self, index: int, length: int) -> None:
        """Create file `index` if needed and give it its final size."""
        assert self._walk is not None
        parts = self._real[index] = self._resolve(self._walk, index, True)[0]
        fd = self._open_at(index, parts, os.O_RDWR | os.O_CREAT)
        try:
            size = os.fstat(fd).st_size
            if size > length:
                os.ftruncate(fd, length)  # leftover from an older payload
            elif size < length:
                _allocate(fd, size, length, self.preallocate, self._shown(parts))
        except BaseException:
            os.close(fd)
            raise
        self._adopt(index, fd, length)

    def _check_file(self, index: int, length: int) -> None:
        assert self._walk is not None
        try:
            parts, st = self._resolve(self._walk, index, False)
            self._real[index] = parts
            st = st or self._walk.stat(parts)
        except (FileNotFoundError, NotADirectoryError):
            raise StorageError(f"payload file {self._shown(self._rel[index])} is missing"
                               ) from None
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(f"payload file {self._shown(self._rel[index])} is not a "
                               "regular file")
        if st.st_size != length:
            raise StorageError(f"payload file {self._shown(self._rel[index])} has "
                               f"{st.st_size} bytes, the torrent says {length}")
        if length and len(self._fds) < self.max_open:
            self._adopt(index, self._reopen(index), length)

    def _adopt(self, index: int, fd: int, length: int) -> None:
        """Keep fd in the cache if there is room, else close it (reopened on use)."""
        with self._lock:
            if length and len(self._fds) < self.max_open:
                self._fds[index] = fd
                return
        os.close(fd)

    def _open_at(self, index: int, parts: tuple[str, ...], flags: int) -> int:
        """Open root/parts from its directory's descriptor, never through a symlink."""
        if self._walk is None:
            raise RoostError("storage is not open")
        try:
            return self._walk.open(parts, flags, create_dirs=bool(flags & os.O_CREAT))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePathError(f"{self._shown(parts)} became a symlink; refusing it"
                                      ) from None
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise (StorageFullError if full else StorageError)(
                f"cannot open payload file {'/'.join(self._rel[index])}: {exc.strerror}"
            ) from None

    def _writing(self, index: int) -> bool:
        """Whether a reopened file `index` is opened for writing."""
        return self._writable

    def _reopen(self, index: int) -> int:
        parts = self._real.get(index)
        if parts is None:  # not resolved at open() (a file that was not there then)
            assert self._walk is not None
            try:
                parts = self._real[index] = self._resolve(self._walk, index, False)[0]
            except OSError as exc:
                raise StorageError(f"cannot open payload file {'/'.join(self._rel[index])}: "
                                   f"{exc.strerror}") from None
        return self._open_at(index, parts, os.O_RDWR if self._writing(index) else os.O_RDONLY)

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

    def fill_local(self, index: int, data: bytearray) -> None:
        """On the checker's thread, before piece `index` is hashed: copy in the bytes
        this storage holds itself for it, if any (roost.engine.treestorage: the
        blocks of reused files, never requested). Nothing here."""

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
        are read; they are hashed on `workers` threads (default: every core), each
        file opened from its directory's descriptor as open() does."""
        info = self.info
        have = Bitfield(info.num_pieces)
        try:
            walk = self._walker()
        except (FileNotFoundError, NotADirectoryError):
            return have  # no payload directory: nothing is there yet
        try:
            found = self._usable(walk)
            def whole(i: int) -> bool:  # every file of piece i is worth reading
                return all(found[f] is not None for f, _, _ in
                           self._file_spans(i, 0, info.piece_size(i)))

            candidates = [i for i in range(info.num_pieces) if whole(i)]
            sources = [(self._shown(r), f.length)
                       for r, f in zip(self._rel, info.files, strict=True)]
            reader = PieceReader(sources, opener=lambda i: self._open_to_hash(walk, found, i))
            digests = hash_pieces(
                reader, info.piece_length, progress=progress, workers=workers, pieces=candidates
            )
        finally:
            walk.close()
        for index, digest in zip(candidates, digests, strict=True):
            if digest is not None and digest == info.piece_hash(index):
                have.set(index)
        return have

    def _usable(self, walk: _Walk) -> list[tuple[str, ...] | None]:
        """Per file, its symlink-free path when it is a regular file of the right size
        (worth hashing), else None; refuses symlinks that leave root."""
        found: list[tuple[str, ...] | None] = []
        for index, entry in enumerate(self.info.files):
            try:
                parts, st = self._resolve(walk, index, False)
                st = st or walk.stat(parts)
            except (FileNotFoundError, NotADirectoryError):
                found.append(None)
                continue
            found.append(parts if stat.S_ISREG(st.st_mode) and st.st_size == entry.length
                         else None)
        return found

    def _open_to_hash(self, walk: _Walk, found: list[tuple[str, ...] | None], index: int) -> int:
        parts = found[index]
        if parts is None:
            raise FileNotFoundError(errno.ENOENT, "not a usable payload file",
                                    self._shown(self._rel[index]))
        return walk.open(parts, os.O_RDONLY)

    def flush(self) -> None:
        """fsync every file written since the last flush, then their directories."""
        self._sync(set())

    def _sync(self, dirs: set[tuple[str, ...]]) -> None:
        """fsync the files written since the last flush, then `dirs` and every
        directory of those files, deepest first (a new entry is durable before its
        parent is synced), each through its descriptor."""
        with self._lock:
            dirty = sorted(self._dirty)
            self._dirty.clear()
        for index in dirty:
            with self._pinned([index]) as fds:
                os.fsync(fds[index])
            parts = self._real.get(index, self._rel[index])
            dirs.update(parts[:depth] for depth in range(len(parts)))  # every parent, root = ()
        walk = self._walk
        if walk is None:
            return
        for parts in sorted(dirs, key=len, reverse=True):
            with walk.dirs.lock, contextlib.suppress(OSError):
                os.fsync(walk.dirs.get(parts))


class _Walk:
    """A payload root walked through DirFds, its symlinks resolved by hand.

    A symlink under root is read (readlinkat), never followed by the kernel, and
    its target is walked in its place, component by component; where it ends must
    stay under root/within. The resulting path holds no symlink, and it is opened
    O_NOFOLLOW from its directory's descriptor: a directory swapped for a symlink
    after the walk makes the open fail (ELOOP) instead of leading out of root."""

    MAX_LINKS = 40  # the kernel's own limit

    def __init__(self, dirs: DirFds, real_root: str, within: tuple[str, ...]) -> None:
        self.dirs = dirs
        self._real_root = real_root
        self._root_parts = [c for c in real_root.split("/") if c]
        self._within = within
        self._dirs_done: dict[tuple[str, ...], tuple[str, ...]] = {}  # rel dir -> resolved

    def file(self, rel: tuple[str, ...], create: bool) -> Found:
        """The symlink-free components of root/rel, and the lstat of what they name
        (None if it is to be created); with `create`, missing directories are made;
        FileNotFoundError when something is missing without."""
        return self._follow(self._dir(rel[:-1], rel, create), rel[-1:], rel, create, False)

    def _dir(self, parts: tuple[str, ...], rel: tuple[str, ...], create: bool
             ) -> tuple[str, ...]:
        if not parts:
            return ()
        found = self._dirs_done.get(parts)
        if found is None:
            head = self._dir(parts[:-1], rel, create)
            found = self._dirs_done[parts] = self._follow(head, parts[-1:], rel, create, True)[0]
        return found

    def _follow(self, base: tuple[str, ...], rest: tuple[str, ...], rel: tuple[str, ...],
                create: bool, want_dir: bool) -> Found:
        done, todo = list(base), list(rest)
        links, link = 0, ""
        st: os.stat_result | None = None
        while todo:
            name = todo.pop(0)
            if name in ("", "."):
                continue
            if name == "..":  # only from a link's target: rel itself has none
                if not done:
                    raise self._outside(link, rel)
                done.pop()
                st = None
                continue
            with self.dirs.lock:
                parent = self._dir_fd(tuple(done))
                try:
                    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                except FileNotFoundError:
                    st = None
                target = (os.readlink(name, dir_fd=parent)
                          if st is not None and stat.S_ISLNK(st.st_mode) else None)
            if target is not None:
                links, link = links + 1, self._path(done, name)
                if links > self.MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), link)
                comps = target.split("/")
                if target.startswith("/"):  # absolute: only as a path under root
                    comps = [c for c in comps if c]
                    if comps[: len(self._root_parts)] != self._root_parts:
                        raise self._outside(link, rel)
                    done, comps = [], comps[len(self._root_parts):]
                todo, st = comps + todo, None
                continue
            inner = bool(todo) or want_dir
            if st is None:
                if not create:
                    missing = self._path(done, name)
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), missing)
                if inner:
                    with self.dirs.lock:
                        self._dir_fd((*done, name), create=True)
            elif inner and not stat.S_ISDIR(st.st_mode):
                raise StorageError(f"{self._path(done, name)} is in the way: it is not a "
                                   "directory")
            done.append(name)
        if tuple(done[: len(self._within)]) != self._within:
            raise self._outside(link, rel)
        if not want_dir and not done:  # a file that is a link to the root itself
            raise StorageError(f"payload file {'/'.join(rel)} is not a regular file")
        return tuple(done), st

    def _path(self, done: list[str], name: str) -> str:
        """For messages only (a join per component would cost every walk)."""
        return os.path.join(self._real_root, *done, name)

    def _outside(self, link: str, rel: tuple[str, ...]) -> UnsafePathError:
        confine = os.path.join(self._real_root, *self._within)
        return UnsafePathError(f"{link} is a symlink leading outside {confine}; refusing to "
                               f"use it for {'/'.join(rel)}")

    def _dir_fd(self, parts: tuple[str, ...], create: bool = False) -> int:
        """The descriptor of the directory root/parts; the caller holds dirs.lock."""
        try:
            return self.dirs.get(parts, create)
        except OSError as exc:  # O_NOFOLLOW | O_DIRECTORY on a symlink: ENOTDIR
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            where = os.path.join(self._real_root, *parts)
            raise UnsafePathError(f"{where}, or a directory above it, is no longer a directory "
                                  "(a symlink or a file took its place); refusing it") from None

    def open(self, parts: tuple[str, ...], flags: int, create_dirs: bool = False) -> int:
        """Open root/parts from its directory's descriptor, O_NOFOLLOW."""
        with self.dirs.lock:
            parent = self._dir_fd(parts[:-1], create_dirs)
            return os.open(parts[-1], flags | os.O_NOFOLLOW, FILE_MODE, dir_fd=parent)

    def stat(self, parts: tuple[str, ...]) -> os.stat_result:
        with self.dirs.lock:
            return os.stat(parts[-1], dir_fd=self._dir_fd(parts[:-1]), follow_symlinks=False)

    def close(self) -> None:
        with self.dirs.lock:
            self.dirs.close()


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


def _plain_name(name: str) -> str:
    """One path component: no separator, no `.` or `..`, no NUL."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnsafePathError(f"{name!r} is not a plain file or directory name")
    return name
