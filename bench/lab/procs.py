"""Process helpers for the lab: namespace membership, group kill, bounded waits.

Only processes that a lab started are ever signalled: those it spawned itself
(by PID / process group) and those found running inside the lab's own network
namespaces (which only the lab's processes can have entered).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

NETNS_DIR = Path("/run/netns")


def _ns_inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_netns(names: list[str]) -> list[int]:
    """PIDs of processes whose network namespace is one of `names`."""
    inodes = {ino for n in names if (ino := _ns_inode(NETNS_DIR / n)) is not None}
    if not inodes:
        return []
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino in inodes:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def kill_pids(pids: list[int], grace_s: float = 2.0) -> None:
    """SIGTERM the given PIDs (and their groups when they lead one), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = [p for p in pids if pid_alive(p)]
        if not live:
            return
        for pid in live:
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(pid_alive(p) for p in live):
            time.sleep(0.05)


def stop_popen(proc: subprocess.Popen[bytes], grace_s: float = 2.0) -> None:
    """Stop a process started with start_new_session=True, and its whole group."""
    if proc.poll() is None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace_s)
                break
            except subprocess.TimeoutExpired:
                continue
    else:
        # The leader exited; its group may live on.
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
