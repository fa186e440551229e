"""When the reader of our output goes away (`roost ... | head -1`, a killed wrapper).

A one-shot command then ends quietly with the status a shell reports for a
Unix tool killed by SIGPIPE; a running seeder or fetch carries on without
output (its job is the swarm, not the pipe). Either way the stream is pointed
at /dev/null first, so that later writes and Python's flush at exit do not
raise again. Standard library only: it runs on target hosts.
"""

from __future__ import annotations

import contextlib
import os
from typing import TextIO

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports `yes | head -1`'s `yes`


def reader_gone(stream: TextIO) -> None:
    """Point `stream`'s file descriptor at /dev/null (best effort)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(fd, stream.fileno())
        finally:
            os.close(fd)
