"""What the deploy host remembers of a tree it hashed: no re-hashing of files proven unchanged.

Theory of operation. Packing a tree reads every byte of it twice over (the
SHA-256 of each file for the manifest, the SHA-1 of each piece for the
torrent): at 256 MiB, most of a second of CPU before anything moves, on
every deploy, although a typical next release changed a few percent of it.
So after hashing a source directory, the deploy keeps, per file, the SHA-256
with a proof that the bytes are still the ones hashed, and per piece, its
SHA-1 keyed by exactly what the piece holds: (file SHA-256, offset, length)
for each file slice and the length of each pad. A later pack of the same
directory takes a file's SHA-256 from here only when the proof holds, and a
piece's SHA-1 only when every file in it was proven, so a changed, renamed
or new file is read and hashed as before.

The proof is the one the hosts use for their kept releases
(roost.target.treestage): device, inode, size, mtime_ns and ctime_ns, all
equal to what they were when the bytes were read. Size and mtime alone
prove nothing (a build that writes the same size and restores the mtime, a
`touch -r`); ctime is set by the kernel on every write, chmod, rename into
place or utime, and no user can set it back. Two more rules close the gaps:

* the stat is taken before the read and must be unchanged after it (a file
  written while it was hashed is not remembered);
* a file whose ctime is less than RACY_NS old when it is read is not
  remembered ("racy", as git calls it): timestamps have a granularity, and
  a second write within the same tick would leave every number unchanged.

Not remembered is never wrong, only slower. The cache lives under
$XDG_CACHE_HOME/roost/trees (default ~/.cache), one 0600 file per source
directory, the newest MAX_TREES kept; a file that cannot be read or parsed
is ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1
RACY_NS = 3_000_000_000  # above the 2 s timestamp granularity of the coarsest filesystems
MAX_TREES = 32
MAX_BYTES = 256 << 20  # a cache file larger than this is ignored (and replaced)

Segment = tuple[str, int, int]  # (file SHA-256, offset in the file, length); ("", 0, n) a pad


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "roost" / "trees"


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def piece_key(segments: list[Segment]) -> str:
    """What a piece holds, in a key: equal keys, equal bytes."""
    return hashlib.sha256(json.dumps(segments, separators=(",", ":")).encode()).hexdigest()


@dataclass
class HashCache:
    """One source directory's remembered hashes (`load`, then `save`)."""

    path: Path | None  # None: remember nothing (no cache)
    files: dict[str, list[Any]] = field(default_factory=dict)  # relpath -> [sha256, *stamp]
    pieces: dict[str, str] = field(default_factory=dict)  # piece_key -> SHA-1 hex
    new_files: dict[str, list[Any]] = field(default_factory=dict)
    new_pieces: dict[str, str] = field(default_factory=dict)
    hits: int = 0  # files whose SHA-256 came from here

    @classmethod
    def load(cls, directory: Path | None, root: Path) -> HashCache:
        if directory is None:
            return cls(None)
        name = hashlib.sha256(os.fsencode(root.resolve())).hexdigest()[:32] + ".json"
        cache = cls(directory / name)
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            assert cache.path is not None
            if cache.path.stat().st_size > MAX_BYTES:
                return cache
            data = json.loads(cache.path.read_bytes())
            if data.get("version") == VERSION:
                files, pieces = data.get("files"), data.get("pieces")
                if isinstance(files, dict) and isinstance(pieces, dict):
                    cache.files, cache.pieces = files, pieces
        return cache

    def sha256(self, relpath: str, st: os.stat_result) -> str | None:
        """The file's SHA-256, when its proof still holds (st: its lstat now)."""
        known = self.files.get(relpath)
        if (isinstance(known, list) and len(known) == 6 and isinstance(known[0], str)
                and known[1:] == _stamp(st)):
            self.hits += 1
            self.new_files[relpath] = known  # still proven: still remembered
            return known[0]
        return None

    @staticmethod
    def same(a: os.stat_result, b: os.stat_result) -> bool:
        """The same file, unchanged (the proof's numbers)."""
        return _stamp(a) == _stamp(b)

    def remember(self, relpath: str, sha256: str, before: os.stat_result,
                 after: os.stat_result, read_at_ns: int) -> None:
        """A file hashed now: kept only if nothing moved while it was read and it
        was not changed within RACY_NS of the read (see the module's rules)."""
        stamp = _stamp(before)
        if stamp != _stamp(after) or read_at_ns - before.st_ctime_ns < RACY_NS:
            return
        self.new_files[relpath] = [sha256, *stamp]

    def piece(self, key: str) -> bytes | None:
        digest = self.pieces.get(key)
        if isinstance(digest, str) and len(digest) == 40:
            with contextlib.suppress(ValueError):
                return bytes.fromhex(digest)
        return None

    def remember_piece(self, key: str, digest: bytes) -> None:
        self.new_pieces[key] = digest.hex()

    def save(self) -> None:
        """Replace the file with what this pack proved (files gone are forgotten)."""
        if self.path is None:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            data = json.dumps({"version": VERSION, "files": self.new_files,
                               "pieces": self.new_pieces}, separators=(",", ":")).encode()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            _prune(self.path.parent)


def _prune(directory: Path) -> None:
    """Keep the MAX_TREES most recently written caches."""
    with contextlib.suppress(OSError):
        caches = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        for old in caches[:-MAX_TREES]:
            with contextlib.suppress(OSError):
                old.unlink()


def now_ns() -> int:
    """The wall clock, which file timestamps follow (for the racy rule)."""
    return time.time_ns()
