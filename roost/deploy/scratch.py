"""The operator's local scratch directory of one deploy or publish, and the sweep of
those that killed runs left behind.

A run removes its scratch directory when it ends, even on Ctrl-C; only SIGKILL (or a
power cut) leaves one, with the payload's tarball and the swarm's TLS keys in it. So
each scratch directory names its owner (pid and the process's start time, which a
reused pid does not share), and every new run removes this user's directories whose
owner is gone. A directory without an owner file, or whose owner lives, is left alone.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

OWNER_FILE = ".roost-owner"


def make_scratch(prefix: str) -> Path:
    """A new scratch directory (mode 0700), after sweeping the stale ones of `prefix`."""
    sweep_stale(prefix)
    path = Path(tempfile.mkdtemp(prefix=prefix))
    pid = os.getpid()
    (path / OWNER_FILE).write_text(f"{pid} {_started(pid)}\n")
    return path


def sweep_stale(prefix: str, where: Path | None = None) -> list[Path]:
    """Remove this user's `prefix*` directories whose recorded owner has exited."""
    removed = []
    for path in (where or Path(tempfile.gettempdir())).glob(f"{prefix}*"):
        try:
            st = path.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            pid_text, started = (path / OWNER_FILE).read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue  # no owner file (yet, or an older roost's): not ours to judge
        if pid > 0 and _started(pid) == started:
            continue  # its owner is still running
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _started(pid: int) -> str:
    """The process's start time in clock ticks since boot ("-" if it does not exist).
    On a system without /proc, whether it exists at all."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]  # field 22 of proc(5): starttime
    except FileNotFoundError:
        return "-"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "-"
        except OSError:
            pass
        return "alive"
