"""Stream a payload from disk and SHA-1 its pieces on every core.

Adapter layer (reads files). Standard library only: the target-side agent
uses it to re-check a partial download.

Theory of operation: the payload is the concatenation of its files in
torrent order. Work is cut into batches of whole pieces; each batch runs on
a worker thread that positioned-reads (os.preadv into a buffer it owns) and
hashes. Both calls release the GIL, so N threads use N cores. At most
2 x workers batches are in flight, so memory stays bounded by
2 x workers x batch size whatever the payload size.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from roost.core.metainfo import safe_relpath
from roost.errors import UsageError

BATCH_BYTES = 4 * 1024 * 1024
Progress = Callable[[int], None]


@dataclass(frozen=True)
class PayloadFile:
    """One file of a Payload, and where its bytes are on disk."""

    path: tuple[str, ...]  # components relative to the payload root
    length: int
    source: Path  # where the bytes are on disk


@dataclass(frozen=True)
class Payload:
    """A file or directory on disk, laid out as a torrent payload."""

    name: str
    files: tuple[PayloadFile, ...]
    single_file: bool

    @property
    def total_length(self) -> int:
        return sum(f.length for f in self.files)


def scan_payload(root: Path) -> Payload:
    """Describe `root` (a file or a directory) as a payload.

    Files are ordered by their '/'-joined path, byte-wise (what mktorrent
    does), so the same tree gives the same info-hash in both tools.
    Symlinks to regular files are followed, as mktorrent does; empty
    directories cannot be expressed in a v1 torrent and are left out.
    """
    if not root.exists():
        raise UsageError(f"{root} does not exist")
    name = root.resolve().name
    if root.is_file():
        return Payload(name, (PayloadFile((name,), root.stat().st_size, root),), True)
    if not root.is_dir():
        raise UsageError(f"{root} is neither a regular file nor a directory")
    found: list[PayloadFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for fname in filenames:
            full = Path(dirpath) / fname
            if not full.is_file():
                continue  # sockets, fifos, dangling links
            rel = full.relative_to(root).parts
            found.append(PayloadFile(safe_relpath(rel), full.stat().st_size, full))
    if not found:
        raise UsageError(f"{root} contains no files")
    found.sort(key=lambda f: "/".join(f.path).encode("utf-8"))
    return Payload(name, tuple(found), False)


class PieceReader:
    """Maps payload byte ranges onto (file, offset) and reads them."""

    def __init__(self, sources: Sequence[tuple[Path | str, int]], *,
                 opener: Callable[[int], int] | None = None) -> None:
        self.sources = list(sources)
        # how file i is opened for reading; by default its path (a Storage opens
        # from directory descriptors instead, never through a symlink)
        self.opener = opener or self._open_path
        self.offsets: list[int] = []
        total = 0
        for _, length in self.sources:
            self.offsets.append(total)
            total += length
        self.total_length = total

    def _open_path(self, index: int) -> int:
        return os.open(self.sources[index][0], os.O_RDONLY)

    def spans(self, start: int, length: int) -> Iterator[tuple[int, int, int]]:
        """Yield (file index, offset in file, length) covering [start, start+length)."""
        index = bisect.bisect_right(self.offsets, start) - 1
        end = start + length
        while start < end and index < len(self.sources):
            file_start = self.offsets[index]
            file_len = self.sources[index][1]
            take = min(end, file_start + file_len) - start
            if take > 0:
                yield index, start - file_start, take
                start += take
            index += 1

    def close_before(self, fds: dict[int, int], end: int) -> None:
        """Close the fds of files that end by `end`: a batch of 4 MiB of tiny files
        would otherwise hold thousands open at once (and hit the fd limit)."""
        for index in [i for i in fds if self.offsets[i] + self.sources[i][1] <= end]:
            os.close(fds.pop(index))

    def read_into(self, buf: memoryview, start: int, fds: dict[int, int]) -> int:
        """Fill buf with payload bytes from `start`; return bytes read.

        Short files (truncated on disk) leave the rest of buf unread, which
        makes the piece fail its hash rather than raise."""
        pos = 0
        for index, offset, take in self.spans(start, len(buf)):
            fd = fds.get(index)
            if fd is None:
                try:
                    fd = self.opener(index)
                except FileNotFoundError:
                    return pos
                fds[index] = fd
            got = os.preadv(fd, [buf[pos : pos + take]], offset)
            pos += got
            if got < take:
                return pos
        return pos


def hash_pieces(
    reader: PieceReader,
    piece_length: int,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
    pieces: Sequence[int] | None = None,
) -> list[bytes | None]:
    """SHA-1 of each piece (all pieces, or the given indexes), in order.

    A piece that could not be read in full hashes to None."""
    total = reader.total_length
    count = -(-total // piece_length) if total else 0
    wanted = list(range(count)) if pieces is None else list(pieces)
    workers = workers or os.cpu_count() or 1
    per_batch = max(1, BATCH_BYTES // piece_length)
    batches = [wanted[i : i + per_batch] for i in range(0, len(wanted), per_batch)]

    def run(batch: list[int]) -> list[tuple[bytes | None, int]]:
        buf = bytearray(piece_length)
        view = memoryview(buf)
        fds: dict[int, int] = {}
        out: list[tuple[bytes | None, int]] = []
        try:
            for index in batch:
                start = index * piece_length
                size = min(piece_length, total - start)
                got = reader.read_into(view[:size], start, fds)
                digest = hashlib.sha1(view[:size]).digest() if got == size else None
                out.append((digest, size))
                reader.close_before(fds, start + size)
        finally:
            for fd in fds.values():
                os.close(fd)
        return out

    results: list[bytes | None] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="roost-hash") as pool:
        inflight: deque[Future[list[tuple[bytes | None, int]]]] = deque()
        queue = iter(batches)
        for batch in queue:
            inflight.append(pool.submit(run, batch))
            if len(inflight) >= 2 * workers:
                _collect(inflight.popleft(), results, progress)
        while inflight:
            _collect(inflight.popleft(), results, progress)
    return results


def _collect(
    future: Future[list[tuple[bytes | None, int]]],
    results: list[bytes | None],
    progress: Progress | None,
) -> None:
    done = 0
    for digest, size in future.result():
        results.append(digest)
        done += size
    if progress:
        progress(done)


def hash_payload(
    payload: Payload,
    piece_length: int,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
) -> bytes:
    """The concatenated piece hashes (the `pieces` string) of a payload."""
    reader = PieceReader([(f.source, f.length) for f in payload.files])
    digests = hash_pieces(reader, piece_length, progress=progress, workers=workers)
    if any(d is None for d in digests):
        raise UsageError("a payload file changed size while it was being hashed")
    return b"".join(d for d in digests if d is not None)
