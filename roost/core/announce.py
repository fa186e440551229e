"""When a swarm member announces to its tracker. Pure.

Theory of operation. `started` goes out at once, then a regular announce at
the tracker's interval, and `completed` as soon as the payload completes (the
tracker is the deploy's source of truth for progress), even mid-interval. One
announce is in flight at a time; a failed one is retried after a growing
pause (RETRY_STEP per failure, at most RETRY_MAX). `stopped` is the adapter's
business at shutdown (best effort).

In a large swarm `started` and `completed` wait a random delay the member
draws (`started_delay`, `completed_delay`: uniform over the window of
roost.core.tracker_scale.burst_spread), so thousands of hosts launched or
finishing together do not reach the tracker in the same second. A
`completed` never waits past the next regular announce: it takes its place.
"""

from __future__ import annotations

import random

from roost.core.tracker_scale import burst_spread

RETRY_STEP = 2.0
RETRY_MAX = 30.0

#: `due` returns this for a regular announce (no event parameter)
REGULAR = ""


class AnnounceSchedule:
    def __init__(
        self,
        *,
        enabled: bool,
        complete: bool,
        started_delay: float = 0.0,
        completed_delay: float = 0.0,
    ) -> None:
        self.enabled = enabled
        self.in_flight = False
        self.at: float | None = None  # when the next announce is due (None: not started)
        self.started_delay = started_delay
        self.completed_delay = completed_delay
        self.event = "started"  # what the next one says ("" for none)
        self.completed_sent = complete  # a seed never sends `completed`
        self.failures = 0

    def due(self, now: float, complete: bool) -> str | None:
        """The event of an announce to send now (REGULAR for none), or None."""
        if not self.enabled or self.in_flight:
            return None
        if self.at is None:  # the first call: the member has started
            self.at = now + self.started_delay
        if self.event == REGULAR and complete and not self.completed_sent:
            # now (or after the spread), not at the interval
            self.event, self.at = "completed", min(self.at, now + self.completed_delay)
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


def schedule_for(
    *, enabled: bool, complete: bool, expected_peers: int | None, rng: random.Random
) -> AnnounceSchedule:
    """A member's schedule: past a few thousand expected peers, `started` and
    `completed` are spread (roost.core.tracker_scale.burst_spread). A member that
    starts complete (the origin) announces at once: the others need it in their
    first lists."""
    spread = burst_spread(expected_peers)
    if not enabled or not spread:  # no draw: small swarms keep their rng sequence
        return AnnounceSchedule(enabled=enabled, complete=complete)
    started = 0.0 if complete else rng.random() * spread
    completed = rng.random() * spread
    return AnnounceSchedule(
        enabled=True, complete=complete, started_delay=started, completed_delay=completed
    )
