"""Rollout planning, pure: which hosts activate together, in which order.

`--canary N` hosts go first, alone; the rest go `--batch` at a time, where a
batch is a count ("5") or a share of the hosts to activate ("25%", rounded up,
at least one). No batch and no canary means one batch: every host at once.
"""

from __future__ import annotations

from roost.errors import UsageError


def batch_size(text: str | None, total: int) -> int:
    """'5' or '25%' of `total` -> hosts per batch (>= 1); None -> all of them."""
    if text is None or text == "":
        return max(total, 1)
    value = text.strip()
    try:
        if value.endswith("%"):
            share = float(value[:-1])
            if not 0 < share <= 100:
                raise ValueError
            size = -(-total * share // 100)
        else:
            size = int(value)
            if size < 1:
                raise ValueError
    except ValueError:
        raise UsageError(f"--batch {text!r} is not a host count >= 1 or a percent in (0, 100]"
                         ) from None
    return max(int(size), 1)


def plan_batches(total: int, batch: str | None = None, canary: int = 0) -> list[list[int]]:
    """Indexes 0..total-1 split into batches: the canary first, then `batch` at a time."""
    if canary < 0:
        raise UsageError(f"--canary {canary} must be 0 or more hosts")
    order = list(range(total))
    batches: list[list[int]] = []
    if canary:
        batches.append(order[:canary])
        order = order[canary:]
    size = batch_size(batch, len(order)) if batch else max(len(order), 1)
    batches += [order[i:i + size] for i in range(0, len(order), size)]
    return batches
