"""Whole-machine CPU utilisation sampled from /proc/stat in a thread."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path


def _read() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


class CpuSampler:
    """Use as a context manager; then read `.avg` and `.peak` (fractions, 0..1)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.samples: list[float] = []
        self.avg = 0.0
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._start = (0, 0)

    def _loop(self) -> None:
        prev = _read()
        while not self._stop.wait(self.interval_s):
            cur = _read()
            dt = cur[1] - prev[1]
            if dt > 0:
                self.samples.append((cur[0] - prev[0]) / dt)
            prev = cur

    def __enter__(self) -> CpuSampler:
        self._start = _read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        end = _read()
        dt = end[1] - self._start[1]
        self.avg = (end[0] - self._start[0]) / dt if dt > 0 else 0.0
        self.peak = max(self.samples, default=self.avg)


def _proc_jiffies(pid: int) -> int | None:
    """utime+stime+cutime+cstime of `pid` (own and reaped children's CPU)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # after ")": state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return sum(int(x) for x in fields[11:15])


class ProcessCpuSampler(CpuSampler):
    """Like CpuSampler, and also the CPU used by processes of `pids_fn()`.

    `.procs_avg` is that CPU as a fraction of the whole machine (all cores)
    over the run; it leaves out other users of the machine (and the kernel's
    softirq work for shaping, which no process is charged for).
    """

    def __init__(self, pids_fn: Callable[[], list[int]], interval_s: float = 0.5) -> None:
        super().__init__(interval_s)
        self.pids_fn = pids_fn
        self.procs_avg = 0.0
        self._first: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._t_start = 0.0

    def _sample_procs(self) -> None:
        for pid in self.pids_fn():
            j = _proc_jiffies(pid)
            if j is not None:
                self._first.setdefault(pid, j)
                self._last[pid] = j

    def _loop(self) -> None:
        prev = _read()
        while not self._stop.wait(self.interval_s):
            cur = _read()
            dt = cur[1] - prev[1]
            if dt > 0:
                self.samples.append((cur[0] - prev[0]) / dt)
            prev = cur
            self._sample_procs()

    def __enter__(self) -> ProcessCpuSampler:
        self._t_start = time.monotonic()
        self._sample_procs()
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample_procs()
        super().__exit__(*exc)
        used = sum(self._last[p] - self._first[p] for p in self._last) / os.sysconf("SC_CLK_TCK")
        wall = time.monotonic() - self._t_start
        ncpu = os.cpu_count() or 1
        self.procs_avg = used / (wall * ncpu) if wall > 0 else 0.0
