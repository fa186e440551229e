"""Hash-and-write of received pieces on one worker thread, answered in batches.

Adapter layer (a thread and the event loop). A piece's SHA-1 and its write
must not run on the event loop (a slow disk would stall every connection),
but the hand-off per piece was dearer than it needs to be: an executor
future, a wrapped asyncio future, two callbacks and a loop wake-up for every
piece. Here a piece is one item on a queue; the worker appends its result to
a deque and wakes the loop only when no wake-up is already pending, so the
loop collects every result finished meanwhile in one call.

One worker is enough: SHA-1 runs at more than 1 GB/s, far above any link, and
pieces then pass in the order they arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable

from roost.errors import RoostError

#: (piece index, passed, error text or None)
Result = tuple[int, bool, str | None]


class PieceChecker:
    """`submit(index, data)` runs `work(index, data)` (True: the piece passed
    and is written) on the worker; `deliver(index, ok, error)` is called on
    the loop for each result, in the order the work finished."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        work: Callable[[int, bytearray], bool],
        deliver: Callable[[int, bool, str | None], None],
    ) -> None:
        self._loop = loop
        self._work = work
        self._deliver = deliver
        self._queue: queue.SimpleQueue[tuple[int, bytearray] | None] = queue.SimpleQueue()
        self._results: deque[Result] = deque()
        self._wake_pending = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, index: int, data: bytearray) -> None:
        if self._closed:
            return
        if self._thread is None:  # started on first use: a seed never needs it
            self._thread = threading.Thread(
                target=self._run, name="roost-verify", daemon=True
            )
            self._thread.start()
        self._queue.put((index, data))

    def close(self) -> None:
        """Stop taking work, let the worker finish what it holds, and wait for it.
        Results that arrive after this are not delivered."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            index, data = item
            try:
                result: Result = (index, self._work(index, data), None)
            except (OSError, RoostError) as exc:
                result = (index, False, str(exc))
            except Exception as exc:  # a bug must stop the fetch with a message, not hang it
                result = (index, False, f"internal error: {type(exc).__name__}: {exc}")
            self._results.append(result)
            if not self._wake_pending:
                self._wake_pending = True
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        # cleared before reading: a result appended from now on schedules its own wake-up
        self._wake_pending = False
        results = self._results
        while results:
            index, ok, error = results.popleft()
            if not self._closed:
                self._deliver(index, ok, error)
