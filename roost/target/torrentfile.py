"""Read a .torrent file from disk, with a size cap, into a Metainfo.

Shared by the target-side agent (`roost fetch`/`roost seed`) and the
operator's `roost show`. roost.core.metainfo is pure and never opens a file; this
is the one place that does it for a user-given path. Standard library only
(it ships in the zipapp).
"""

from __future__ import annotations

from pathlib import Path

from roost.core.metainfo import Metainfo, parse
from roost.errors import UsageError

#: far above any real .torrent; checked before the file is read into memory
MAX_TORRENT_BYTES = 256 * 1024 * 1024


def read_torrent(path: Path, *, max_bytes: int = MAX_TORRENT_BYTES) -> Metainfo:
    """Parse the .torrent at `path`. A missing, unreadable or oversized file is
    a UsageError with one clear sentence; bad contents raise MetainfoError."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise UsageError(f"{path} is {size} bytes, too large for a torrent file")
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    return parse(data)
