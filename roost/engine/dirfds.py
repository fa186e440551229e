"""Directory descriptors of one tree, each opened from its parent's, never through a link.

Theory of operation. A path under the root is never handed to the kernel whole:
each directory is opened with openat(parent, name, O_DIRECTORY | O_NOFOLLOW), so
a symlink in the way fails the open (ELOOP) instead of being followed, and a
directory swapped for a symlink after its descriptor was taken changes nothing
that is opened from that descriptor. Callers open files from the parent's
descriptor with O_NOFOLLOW as well. There is no check-then-open window to race.

Descriptors are kept, least recently used closed first, at most `max_open`; a
directory and its ancestors are never closed by the call that opens it. A tree
of 100,000 files then costs about one openat per file, not one per component.
Shared by the payload storages (roost.engine.storage, roost.engine.treestorage)
and tree staging (roost.target.treestage).
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class DirFds:
    """Descriptors of the directories under `root`, keyed by their components.

    Threads that share one DirFds hold `lock` from get() until they are done with
    the descriptor it returned: another get() may close it."""

    def __init__(self, root: str | Path, *, max_open: int, mode: int) -> None:
        self.lock = threading.Lock()
        self.max_open = max(max_open, 1)
        self.mode = mode  # of the directories get(create=True) makes
        self._fds: OrderedDict[tuple[str, ...], int] = OrderedDict()
        # the root itself may be reached through a link (a host's `current`): the
        # caller names it, so it is trusted; everything under it is not
        self._fds[()] = os.open(root, os.O_RDONLY | os.O_DIRECTORY)

    @property
    def root_fd(self) -> int:
        return self._fds[()]

    def get(self, parts: tuple[str, ...], create: bool = False) -> int:
        """The descriptor of root/parts; with `create`, missing directories are made."""
        fd = self._fds.get(parts)
        if fd is not None:
            self._fds.move_to_end(parts)
            return fd
        if not parts:  # closed: the root's descriptor is gone, and nothing opens from it
            raise OSError(errno.EBADF, "the directory tree was closed")
        parent = self.get(parts[:-1], create)
        try:
            fd = os.open(parts[-1], DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(parts[-1], self.mode, dir_fd=parent)
            fd = os.open(parts[-1], DIR_FLAGS, dir_fd=parent)
        self._fds[parts] = fd
        while len(self._fds) > self.max_open:
            # never parts or an ancestor of it (the root is everyone's ancestor)
            victim = next((p for p in self._fds if p != parts[: len(p)]), None)
            if victim is None:
                break
            os.close(self._fds.pop(victim))
        return fd

    def parent(self, parts: tuple[str, ...], create: bool = False) -> int:
        """The descriptor of the directory that holds root/parts."""
        return self.get(parts[:-1], create)

    def close(self) -> None:
        """Close every descriptor, the root's too. Safe to call twice."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
