"""The release errors and the atomic file write that staging shares.

release.py (tarballs, switching, pruning) and treestage.py (tree releases)
both need them; keeping them here lets release.py import treestage without
an import circle.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from roost.errors import RoostError


class ReleaseError(RoostError):
    """A release operation failed on this host (message says why)."""


class DiskFullError(ReleaseError):
    exit_code = 4


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` whole or not at all (fsync, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
