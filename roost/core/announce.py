"""When a swarm member announces to its tracker. Pure.

Theory of operation. `started` goes out at once, then a regular announce at
the tracker's interval, and `completed` as soon as the payload completes (the
tracker is the deploy's source of truth for progress), even mid-interval. One
announce is in flight at a time; a failed one is retried after a growing
pause (RETRY_STEP per failure, at most RETRY_MAX). `stopped` is the adapter's
business at shutdown (best effort).
"""

from __future__ import annotations

RETRY_STEP = 2.0
RETRY_MAX = 30.0

#: `due` returns this for a regular announce (no event parameter)
REGULAR = ""


class AnnounceSchedule:
    def __init__(self, *, enabled: bool, complete: bool) -> None:
        self.enabled = enabled
        self.in_flight = False
        self.at = 0.0  # when the next announce is due
        self.event = "started"  # what the next one says ("" for none)
        self.completed_sent = complete  # a seed never sends `completed`
        self.failures = 0

    def due(self, now: float, complete: bool) -> str | None:
        """The event of an announce to send now (REGULAR for none), or None."""
        if not self.enabled or self.in_flight:
            return None
        if self.event == REGULAR and complete and not self.completed_sent:
            self.event, self.at = "completed", now  # at once, not at the interval
            self.completed_sent = True
        if now < self.at:
            return None
        self.in_flight = True
        return self.event

    def answered(self, now: float, interval: float) -> None:
        self.in_flight = False
        self.failures = 0
        self.event = REGULAR
        self.at = now + interval

    def failed(self, now: float) -> None:
        """The same event is sent again after the pause."""
        self.in_flight = False
        self.failures += 1
        self.at = now + min(RETRY_MAX, RETRY_STEP * self.failures)

    def deadline(self) -> float | None:
        return self.at if self.enabled and not self.in_flight else None
