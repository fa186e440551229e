"""What a running peer tells the world: JSON event lines or a progress line.

`--json` prints one JSON object per line on stdout (the orchestrator reads
them over SSH); otherwise a single self-rewriting progress line goes to
stderr when it is a terminal. Standard library only.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from roost.core.inert import inert
from roost.engine.pipes import reader_gone

#: with progress_every, a seeder's lines are this many times further apart: once complete,
#: a line says nothing a deploy reads (its bytes are the total, its download rate 0)
SEEDING_SLOWER = 15


class Reporter:
    """`progress_every`: at least this many seconds between two JSON progress lines (0:
    every tick), SEEDING_SLOWER times that once seeding. A deploy of N hosts reads N
    such streams over SSH, so it asks for fewer lines as N grows (roost.deploy.pace);
    state changes always go out, and so does the first line whose bytes grew past the
    first line's (one line more per run): a deploy's `first_bytes` mark is then when
    the first bytes came, not up to `progress_every` later."""

    def __init__(self, *, as_json: bool, stream: TextIO | None = None, quiet: bool = False,
                 progress_every: float = 0.0) -> None:
        self.as_json = as_json
        self.out = stream or (sys.stdout if as_json else sys.stderr)
        self.tty = (not as_json) and not quiet and self.out.isatty()
        self.quiet = quiet
        self.started = time.monotonic()
        self.progress_every = progress_every
        self._progress_at: float | None = None  # when the last JSON progress line went
        self._first_done: int | None = None  # bytes of the first progress line, until grown
        self._line_open = False
        self.gone = False  # the reader of `out` went away

    def event(self, name: str, **fields: Any) -> None:
        """A state change: always reported (as JSON, or as a line for people)."""
        if self.as_json:
            record = {"event": name, "t": round(time.monotonic() - self.started, 3), **fields}
            self._write(json.dumps(record, separators=(",", ":")) + "\n")
            return
        if self.quiet:
            return
        self._end_line()
        # peers' and trackers' strings among them: escaped, never raw to a terminal
        detail = " ".join(f"{k}={inert(v)}" for k, v in fields.items())
        self._write(f"roost: {name} {detail}\n".rstrip() + "\n")

    def _write(self, text: str) -> None:
        """Write and flush; if the reader went away, carry on without output
        (a seeder keeps seeding when `| head` or a killed wrapper closes the pipe)."""
        if self.gone:
            return
        try:
            self.out.write(text)
            self.out.flush()
        except BrokenPipeError:
            self.gone = True
            self.tty = False
            reader_gone(self.out)

    def progress(
        self, *, done: int, total: int, down_rate: float, up_rate: float, peers: int, state: str
    ) -> None:
        """Periodic progress: a JSON line, or a redrawn line on a terminal."""
        if self.as_json:
            now = time.monotonic()
            every = self.progress_every * (SEEDING_SLOWER if state == "seeding" else 1)
            grew = (self._first_done is not None and done > self._first_done
                    and state != "seeding")
            if self._progress_at is not None and now - self._progress_at < every \
                    and not grew:
                return
            if self._progress_at is None:
                self._first_done = done
            elif grew:
                self._first_done = None  # told once; paced from now on
            self._progress_at = now
            self.event(
                "progress",
                state=state,
                bytes_done=done,
                bytes_total=total,
                down_Bps=int(down_rate),
                up_Bps=int(up_rate),
                peers=peers,
            )
            return
        if not self.tty:
            return
        pct = 100.0 * done / total if total else 100.0
        width = 30
        filled = int(width * pct / 100)
        bar = "#" * filled + "-" * (width - filled)
        self._write(
            f"\r{state:<11} [{bar}] {pct:5.1f}%  down {_rate(down_rate)}  up {_rate(up_rate)}"
            f"  peers {peers}   "
        )
        self._line_open = True

    def _end_line(self) -> None:
        if self._line_open:
            self._line_open = False
            self._write("\n")

    def close(self) -> None:
        self._end_line()


def _rate(bps: float) -> str:
    for unit in ("B/s", "KB/s", "MB/s", "GB/s"):
        if bps < 1000 or unit == "GB/s":
            return f"{bps:6.1f} {unit}"
        bps /= 1000
    return f"{bps:.1f}"
