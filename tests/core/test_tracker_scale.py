"""The tracker's pace at fleet scale: interval, lists, expiry, spread bursts (fake clock)."""

from __future__ import annotations

import heapq
import random
from typing import Any

import pytest

from roost.core import bencode
from roost.core.actions import Announce, AnnounceAnswered
from roost.core.announce import REGULAR, AnnounceSchedule, schedule_for
from roost.core.member import MemberConfig
from roost.core.tracker_scale import (
    BURST_BUDGET,
    MEASURED_CAPACITY,
    MEMBER_TABLE,
    REGULAR_BUDGET,
    burst_spread,
    interval_for,
    list_size_for,
)
from roost.core.tracker_swarm import SwarmRecord, Tracker, TrackerPolicy

from ..tracker.helpers import TOKEN, announce_query, pid
from .member_kit import Kit

IH = b"\x22" * 20


@pytest.mark.parametrize(
    ("n", "interval", "per_second"),
    [(100, 5, 20), (1_000, 5, 200), (5_000, 5, 1_000), (10_000, 10, 1_000), (50_000, 50, 1_000)],
)
def test_interval_keeps_regular_announces_within_budget(
    n: int, interval: int, per_second: int
) -> None:
    assert interval_for(n, 5) == interval
    assert n / interval == per_second <= REGULAR_BUDGET
    assert REGULAR_BUDGET <= MEASURED_CAPACITY / 5  # room to spare: a fifth


def test_small_swarms_keep_the_configured_pace() -> None:
    for n in range(0, 5_001, 250):
        assert interval_for(n, 5) == 5
        assert interval_for(n, 2) == max(2, -(-n // REGULAR_BUDGET))
    assert burst_spread(None) == burst_spread(0) == burst_spread(BURST_BUDGET) == 0.0
    assert list_size_for(1_000, 100) == 100
    assert list_size_for(1_001, 100) == MEMBER_TABLE
    assert list_size_for(10_000, 30) == 30


def test_burst_spread_keeps_each_second_within_budget() -> None:
    for n in (1_501, 3_000, 10_000, 100_000):
        assert n / burst_spread(n) == pytest.approx(BURST_BUDGET)


def _tracker(expected: int, policy: TrackerPolicy | None = None) -> Tracker:
    tracker = Tracker(policy or TrackerPolicy(), random.Random(3))
    tracker.register(SwarmRecord(IH, TOKEN, "app", expected))
    return tracker


def _announce(tracker: Tracker, n: int, now: float) -> dict[bytes, Any]:
    outcome = tracker.announce(
        TOKEN, announce_query(IH, pid(n), numwant=200), f"10.1.{n >> 8}.{n & 255}", now
    )
    body = bencode.decode(outcome.body)
    assert isinstance(body, dict) and outcome.error is None, body
    return body


def test_the_tracker_answers_a_large_swarm_with_its_pace() -> None:
    small, large = _tracker(100), _tracker(10_001)
    for i in range(80):
        small_body = _announce(small, i, 0.0)
        large_body = _announce(large, i, 0.0)
    assert (small_body[b"interval"], small_body[b"min interval"]) == (5, 2)
    assert len(small_body[b"peers"]) == 6 * 79  # a small swarm: everyone
    # expected peers count before they arrive: the first replies already say 11 s
    assert (large_body[b"interval"], large_body[b"min interval"]) == (11, 5)
    assert len(large_body[b"peers"]) == 6 * MEMBER_TABLE


def test_expiry_grows_with_the_interval() -> None:
    tracker = _tracker(10_001, TrackerPolicy(interval=5, peer_timeout=20.0))
    _announce(tracker, 1, 0.0)
    assert tracker.expire(now=30.0) == 0, "a 10,001-peer swarm announces every 11 s: 44 s expiry"
    assert tracker.expire(now=44.5) == 1
    small = _tracker(10, TrackerPolicy(interval=5, peer_timeout=20.0))
    _announce(small, 1, 0.0)
    assert small.expire(now=20.5) == 1


def test_schedule_waits_its_started_delay_and_spreads_completed() -> None:
    sched = AnnounceSchedule(enabled=True, complete=False, started_delay=3.0, completed_delay=2.0)
    assert sched.due(10.0, False) is None, "the first call starts the clock"
    assert sched.deadline() == 13.0
    assert sched.due(12.9, False) is None
    assert sched.due(13.0, False) == "started"
    sched.answered(13.1, 10.0)
    assert sched.due(15.0, True) is None, "completed waits its delay"
    assert sched.due(16.9, True) is None
    assert sched.due(17.0, True) == "completed"
    sched.answered(17.1, 10.0)
    assert sched.due(27.0, True) is None and sched.due(27.1, True) == REGULAR


def test_completed_never_waits_past_the_next_regular_announce() -> None:
    sched = AnnounceSchedule(enabled=True, complete=False, completed_delay=8.0)
    assert sched.due(0.0, False) == "started"
    sched.answered(0.0, 5.0)
    assert sched.due(4.0, True) is None
    assert sched.due(5.0, True) == "completed", "it takes the regular announce's place"


def test_a_member_told_a_large_swarm_delays_started_but_the_origin_does_not() -> None:
    small = Kit(config=MemberConfig(expected_peers=100), trackers=True)
    assert [a.event for a in small.of(Announce)] == ["started"]
    large = Kit(config=MemberConfig(expected_peers=10_001), trackers=True)
    assert not large.of(Announce), "started waits its draw within 10,001 / 1,500 s"
    delay = large.member.schedule.started_delay
    assert 0.0 < delay < burst_spread(10_001)
    large.advance(delay + 0.5)
    assert [a.event for a in large.of(Announce)] == ["started"]
    large.run(large.member.event(AnnounceAnswered([], 11.0), large.now))
    origin = Kit(
        config=MemberConfig(expected_peers=10_001),
        trackers=True,
        complete=True,
    )
    assert [a.event for a in origin.of(Announce)] == ["started"]


def test_ten_thousand_hosts_launched_at_once_stay_within_budget() -> None:
    """10,000 members' schedules launched in the same instant, answered by the
    tracker's pace; all finish within 2 s of each other at 20-22 s."""
    n = 10_000
    interval = TrackerPolicy().pace(n + 1).interval
    rng = random.Random(5)
    schedules = [
        schedule_for(enabled=True, complete=False, expected_peers=n + 1, rng=rng) for _ in range(n)
    ]
    done_at = [20.0 + 2.0 * rng.random() for _ in range(n)]
    per_second: dict[int, int] = {}
    heap = [(0.0, i) for i in range(n)]  # every host starts at t = 0
    end = 120.0
    while heap:
        now, i = heapq.heappop(heap)
        if now >= end:
            break
        sched = schedules[i]
        event = sched.due(now, now >= done_at[i])
        if event is not None:
            per_second[int(now)] = per_second.get(int(now), 0) + 1
            sched.answered(now + 0.001, interval)
        wake = sched.deadline()
        if wake is not None and now < done_at[i] < wake and not sched.completed_sent:
            wake = done_at[i]  # the member wakes when its last piece passes
        heapq.heappush(heap, (max(wake or now, now + 1e-6), i))
    peak = max(per_second.values())
    average = sum(per_second.values()) / end
    assert per_second[0] <= BURST_BUDGET * 1.1, per_second[0]
    assert peak <= 2 * BURST_BUDGET, peak  # a regular round plus the completed spread
    assert peak <= 0.6 * MEASURED_CAPACITY
    assert average <= REGULAR_BUDGET * 1.1, average
