"""CPU of every process of one tool run, from a cgroup v2 group of its own.

Sampling /proc/<pid> misses what exits between two samples (hooks, helpers
behind wrappers) and what runs outside the lab's namespaces. A cgroup
counts all of it: every process a run starts is moved into the run's group
before it execs, its children inherit the group, and the kernel keeps the
CPU of exited members in the group's ``cpu.stat`` (``usage_usec``).

The group lives under the unified hierarchy (``/sys/fs/cgroup`` on a pure
v2 system, ``/sys/fs/cgroup/unified`` on a hybrid one) and is named with the
lab's prefix, so a leftover is recognisably ours. No controller is enabled:
the group only counts, it limits nothing.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))


def unified_root() -> Path | None:
    """The cgroup v2 mount point, or None where there is none (or it is read-only)."""
    for root in ROOTS:
        if (root / "cgroup.controllers").is_file() and (root / "cgroup.procs").is_file() \
                and os.access(root, os.W_OK):
            return root
    return None


def read_cpu_stat(group: Path) -> dict[str, int]:
    """`group`'s cpu.stat: usage_usec (user + system), user_usec, system_usec..."""
    stat = {}
    for line in (group / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            stat[key] = int(value)
    return stat


def read_usage_usec(group: Path) -> int:
    """CPU microseconds (user + system) used by every process ever in `group`."""
    usage = read_cpu_stat(group).get("usage_usec")
    if usage is None:
        raise OSError(f"{group}/cpu.stat has no usage_usec")
    return usage


class CpuGroup:
    """One cgroup that counts the CPU of a tool run's processes.

    `enter_argv(argv)` wraps a command so that its process joins the group
    before it execs (its pid, and so its process group, stay the same).
    `close()` kills whatever is left in the group and removes it.
    """

    def __init__(self, name: str) -> None:
        root = unified_root()
        if root is None:
            raise OSError("no writable cgroup v2 hierarchy")
        self.path = root / name
        self.path.mkdir()

    def enter_argv(self, argv: list[str]) -> list[str]:
        # sh writes its own pid ($$) and then becomes `argv` with exec.
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.path),
                *map(str, argv)]

    def usage_s(self) -> float:
        return read_usage_usec(self.path) / 1e6

    def user_system_s(self) -> tuple[float, float]:
        """User and system CPU seconds. The system share includes the softirq
        work (the lab's htb shaping, the veths) the kernel charged to whichever
        of the group's processes was running, which moves with the machine's
        load: the user share is the steadier measure of a change in the tool."""
        stat = read_cpu_stat(self.path)
        return stat.get("user_usec", 0) / 1e6, stat.get("system_usec", 0) / 1e6

    def pids(self) -> list[int]:
        with contextlib.suppress(OSError):
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        return []

    def close(self, timeout_s: float = 5.0) -> None:
        """Kill what is still in the group (only this run's processes) and remove it."""
        if not self.path.exists():
            return
        kill = self.path / "cgroup.kill"
        if self.pids() and kill.exists():
            with contextlib.suppress(OSError):
                kill.write_text("1")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.05)
