"""Rollout planning (pure): batch sizes, canary first, every host exactly once."""

from __future__ import annotations

import pytest

from roost.deploy.batches import batch_size, plan_batches
from roost.errors import UsageError


def test_everything_at_once_by_default() -> None:
    assert plan_batches(5) == [[0, 1, 2, 3, 4]]
    assert plan_batches(0) == []


def test_canary_then_fixed_batches() -> None:
    assert plan_batches(8, "3", canary=1) == [[0], [1, 2, 3], [4, 5, 6], [7]]
    assert plan_batches(4, None, canary=1) == [[0], [1, 2, 3]]
    assert plan_batches(2, None, canary=5) == [[0, 1]]


def test_percent_of_the_hosts_after_the_canary_rounds_up() -> None:
    assert batch_size("25%", 10) == 3
    assert plan_batches(9, "50%", canary=1) == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    assert batch_size("1%", 3) == 1


@pytest.mark.parametrize("total,batch,canary", [(1, "1", 0), (7, "2", 2), (100, "13%", 3),
                                                (10, "100%", 0), (3, "9", 1)])
def test_every_host_once_in_order(total: int, batch: str, canary: int) -> None:
    plan = plan_batches(total, batch, canary)
    assert [i for b in plan for i in b] == list(range(total))
    assert all(b for b in plan)
    if canary:
        assert len(plan[0]) == min(canary, total)


@pytest.mark.parametrize("text", ["0", "-2", "x", "0%", "150%", "2.5"])
def test_bad_batch_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--batch"):
        batch_size(text, 10)
    with pytest.raises(UsageError, match="--canary"):
        plan_batches(3, None, canary=-1)
