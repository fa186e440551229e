"""TokenBucket: the tests drive the clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.core.ratelimit import TokenBucket

BLOCK = 16 * 1024


def simulate(bucket: TokenBucket, sizes: list[int], start: float = 0.0) -> list[tuple[float, int]]:
    """One sender that always waits as told: (send time, bytes) for each request."""
    now = start
    sent = []
    for n in sizes:
        now += bucket.consume(n, now)
        sent.append((now, n))
    return sent


@settings(max_examples=40, deadline=None)
@given(
    rate=st.floats(min_value=1_000, max_value=1e9),
    block_fraction=st.floats(min_value=0.05, max_value=2.0),
    jitter_seed=st.integers(0, 2**16),
)
def test_long_run_average_equals_rate_within_one_percent(
    rate: float, block_fraction: float, jitter_seed: int
) -> None:
    bucket = TokenBucket(rate)
    block = max(1, int(rate * block_fraction))
    # block sizes vary a little, as real messages do
    sizes = [block + (i * jitter_seed) % 97 for i in range(int(500 / block_fraction))]
    sent = simulate(bucket, sizes)
    duration = sent[-1][0]
    total = sum(n for _, n in sent)
    # everything but the initial burst and the last request was paid for at `rate`
    assert total <= rate * duration + bucket.burst + sizes[-1] + 1e-6 * total
    assert abs(total / duration - rate) / rate < 0.01


@settings(max_examples=60, deadline=None)
@given(
    requests=st.lists(
        st.tuples(st.floats(min_value=0, max_value=5), st.integers(1, 50_000)),
        min_size=1,
        max_size=200,
    ),
    burst=st.floats(min_value=1_000, max_value=100_000),
)
def test_no_window_exceeds_rate_plus_burst(requests: list[tuple[float, int]], burst: float) -> None:
    """Many callers arriving at random times, each waiting as told."""
    rate = 10_000.0
    bucket = TokenBucket(rate, burst)
    now = 0.0
    sends: list[tuple[float, int]] = []
    for gap, n in requests:
        now += gap
        sends.append((now + bucket.consume(n, now), n))
    sends.sort()
    biggest = max(n for _, n in requests)
    for i, (t0, _) in enumerate(sends):
        window = 0
        for t1, n in sends[i:]:
            window += n
            assert window <= rate * (t1 - t0) + burst + biggest + 1e-6


@given(st.lists(st.tuples(st.floats(-1e9, 1e9), st.integers(0, 2**40)), max_size=50))
def test_unlimited_never_waits(calls: list[tuple[float, int]]) -> None:
    bucket = TokenBucket(None)
    for now, n in calls:
        assert bucket.consume(n, now) == 0.0
    assert bucket.unlimited and bucket.available(0) == math.inf
    assert TokenBucket(math.inf).unlimited


def test_burst_is_honoured_after_idle_and_does_not_accumulate() -> None:
    bucket = TokenBucket(rate=1000.0, burst=10_000.0)
    # idle for a long time: still only `burst` goes out at once
    instant = 0
    now = 1_000.0
    while bucket.consume(1000, now) == 0.0:
        instant += 1000
    assert 10_000 <= instant <= 11_000  # the burst, plus the request that went into debt
    # the next request waits for the debt, not for a full burst
    assert bucket.consume(1000, now) == pytest.approx(2.0)


def test_large_request_is_admitted_and_paid_back() -> None:
    bucket = TokenBucket(rate=1000.0, burst=500.0)
    assert bucket.consume(100_000, 0.0) == 0.0  # no starvation for n > burst
    assert bucket.consume(1, 0.0) == pytest.approx(99.5)  # the next caller pays it back
    assert bucket.consume(1, 99.5) == pytest.approx(0.001)
    assert bucket.wait_time(99.5) == pytest.approx(0.002)


def test_callers_queue_in_order() -> None:
    bucket = TokenBucket(rate=1000.0, burst=1000.0)
    waits = [bucket.consume(1000, 5.0) for _ in range(5)]
    # the burst, then one request into debt, then each waits for those before it
    assert waits == pytest.approx([0.0, 0.0, 1.0, 2.0, 3.0])


def test_clock_stepping_back_is_not_credited() -> None:
    bucket = TokenBucket(rate=100.0, burst=100.0)
    bucket.consume(300, 10.0)
    assert bucket.available(5.0) == pytest.approx(-200.0)
    assert bucket.available(10.0) == pytest.approx(-200.0)
    assert bucket.available(11.0) == pytest.approx(-100.0)


def test_set_rate() -> None:
    bucket = TokenBucket(rate=1000.0)
    assert bucket.burst == 1000.0
    bucket.consume(3000, 0.0)  # 2000 in debt
    bucket.set_rate(2000.0, now=1.0)  # the first second repaid 1000 at the old rate
    assert bucket.available(1.0) == pytest.approx(-1000.0)
    assert bucket.consume(10, 1.0) == pytest.approx(0.5)
    assert bucket.burst == 2000.0  # a default burst follows the rate
    bucket.set_rate(None)
    assert bucket.consume(10**9, 2.0) == 0.0
    bucket.set_rate(100.0)
    assert bucket.consume(100, 3.0) == 0.0  # back from unlimited: starts with a full burst
    assert bucket.consume(1, 3.0) == pytest.approx(0.0)
    assert bucket.consume(1, 3.0) == pytest.approx(0.01)
    fixed = TokenBucket(rate=1000.0, burst=50.0)
    fixed.set_rate(5000.0)
    assert fixed.burst == 50.0  # an explicit burst stays
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError):
            TokenBucket(bad)
    with pytest.raises(ValueError):
        TokenBucket(10.0, burst=0.0)
    with pytest.raises(ValueError):
        bucket.consume(-1, 0.0)


def test_refund_returns_unused_reservations_up_to_burst() -> None:
    bucket = TokenBucket(rate=1000.0, burst=1000.0)
    bucket.consume(1000, 0.0)
    assert bucket.consume(BLOCK, 0.0) == 0.0
    bucket.refund(BLOCK)
    assert bucket.available(0.0) == pytest.approx(0.0)
    bucket.refund(10**9)
    assert bucket.available(0.0) == 1000.0
