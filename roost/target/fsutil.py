"""Small file-system helpers shared by the target side (release, tree staging)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old or the new file, whole."""
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


def write_pid_file(path: str | os.PathLike[str], pid: int) -> None:
    """Make `path` hold `pid`, whole from the moment it exists: the pid is written to a
    temporary name beside it (O_EXCL | O_NOFOLLOW: never a file or link someone put
    there) and renamed into place. A reader (host-clean) never sees an empty pid file;
    if the directory has vanished (host-clean moved it aside), this raises and the
    caller must not start what the file was to name."""
    final = os.fspath(path)
    folder, name = os.path.split(final)
    tmp = os.path.join(folder, f".{name}.{pid}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileExistsError:  # left by a dead process that had our pid: its name, not a file
        os.unlink(tmp)
        fd = os.open(tmp, flags, 0o644)
    try:
        try:
            os.write(fd, f"{pid}\n".encode())
        finally:
            os.close(fd)
        os.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
