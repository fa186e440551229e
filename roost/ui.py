"""Human output helpers for the operator CLI (rich)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(label: str, total: int, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(nbytes)` callback; draws a bar on stderr when enabled."""
    if not enabled:
        yield lambda _n: None
        return
    # rich is imported only when a bar is drawn: it costs ~80 ms of startup
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)
