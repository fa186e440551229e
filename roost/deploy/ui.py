"""Human output helpers for the operator CLI (rich)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from roost.core.inert import inert


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


def inert_text(text: Any, *, keep_newlines: bool = False) -> Any:
    """A rich Text (or plain str, made a Text) with outside characters escaped.

    Text is never read as markup; this also escapes control and bidi
    characters (roost.core.inert). A cell whose text needed escaping keeps its base
    style but loses inner spans (their offsets would no longer match)."""
    from rich.text import Text

    if not isinstance(text, Text):
        return Text(inert(text, keep_newlines=keep_newlines))
    plain = text.plain.replace("\n", "") if keep_newlines else text.plain
    if plain.isprintable():
        return text
    return Text(inert(text.plain, keep_newlines=keep_newlines), style=text.style)


def print_reasons(console: Any, reasons: Iterable[tuple[str, str, str | None]]) -> None:
    """Under a per-host table: each host's reason on a line of its own, in full.

    A reason squeezed into a table column is cut or folded into a narrow strip
    at 80 columns; here it wraps across the whole width. `reasons` holds
    (host, reason, kind); kind is the machine-readable error kind or None.
    Text objects, never markup: a reason is often text from the host.
    """
    from rich.text import Text

    for host, reason, kind in reasons:
        if reason:
            console.print(Text.assemble((f"{inert(host)}: ", "bold"),
                                        (inert(reason), "red" if kind else ""),
                                        (f" [{kind}]" if kind else "", "dim")))
