"""Whole-machine CPU utilisation sampled from /proc/stat in a thread."""

from __future__ import annotations

import threading
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
