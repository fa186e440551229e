"""Event-loop stall detector: how late the loop wakes, and when it was blocked.

A timer every PERIOD seconds compares when it was due with when it ran; the
difference is the loop's lag, time in which no callback (no socket read, no
progress line, no keep-alive) could run. A lag over the threshold is
reported as a `loop_stall` event with the lag and how much of it the loop's
own thread spent on the CPU: near all of it means a callback computed for
that long (a slow path in roost); near none means the thread was not running
(a blocking call, or the host's cores were busy with other processes). The
largest lag seen is reported once at the end (`loop_lag`), so a benchmark
can show "no stall over 1 s" per host. Standard library only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

PERIOD = 0.25  # seconds between probes: 4 wake-ups a second, lag measured to the probe


class LoopWatch:
    """Probe `loop` every `period` s; call `report(name, **fields)` on a stall."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        report: Callable[..., Any],
        threshold: float = 1.0,
        period: float = PERIOD,
    ) -> None:
        self.loop = loop
        self.report = report
        self.threshold = threshold
        self.period = period
        self.max_lag = 0.0
        self.stalls = 0
        self._due = 0.0
        self._cpu = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._arm(self.loop.time())

    def _arm(self, now: float) -> None:
        self._due = now + self.period
        self._cpu = time.thread_time()  # the loop thread's CPU clock
        self._handle = self.loop.call_at(self._due, self._probe)

    def _probe(self) -> None:
        now = self.loop.time()
        lag = max(0.0, now - self._due)
        self.max_lag = max(self.max_lag, lag)
        if lag > self.threshold:
            self.stalls += 1
            cpu = time.thread_time() - self._cpu
            self.report("loop_stall", lag_s=round(lag, 3), loop_cpu_s=round(cpu, 3))
        self._arm(now)

    def stop(self) -> None:
        """Stop probing and report the largest lag seen."""
        if self._handle is None:
            return
        self._handle.cancel()
        self._handle = None
        self._probe_last()
        self.report("loop_lag", max_s=round(self.max_lag, 3), stalls=self.stalls)

    def _probe_last(self) -> None:
        # a stall that ended just before stop, with its probe still pending
        lag = max(0.0, self.loop.time() - self._due)
        self.max_lag = max(self.max_lag, lag)
