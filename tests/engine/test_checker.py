"""roost.engine.checker: pieces checked off the loop, results handed back in batches."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from roost.engine.checker import PieceChecker
from roost.errors import RoostError


def test_every_result_arrives_in_order_and_a_batch_costs_one_wake_up() -> None:
    async def main() -> tuple[list[tuple[int, bool, str | None]], int]:
        loop = asyncio.get_running_loop()
        wakes = 0
        real = loop.call_soon_threadsafe

        def counting(*args: Any) -> Any:
            nonlocal wakes
            wakes += 1
            return real(*args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        all_done = threading.Event()
        got: list[tuple[int, bool, str | None]] = []

        def work(index: int, data: bytearray) -> bool:
            if index == 9:
                all_done.set()
            return data[0] % 2 == 0

        checker = PieceChecker(loop, work, lambda i, ok, err: got.append((i, ok, err)))
        for i in range(10):
            checker.submit(i, bytearray([i]))
        # the loop does not run until the worker is through: one wake-up for all ten
        assert all_done.wait(10)
        for _ in range(100):
            if len(got) == 10:
                break
            await asyncio.sleep(0.01)
        checker.close()
        return got, wakes

    got, wakes = asyncio.run(main())
    assert got == [(i, i % 2 == 0, None) for i in range(10)]
    assert wakes == 1


def test_a_failing_write_and_a_bug_become_results_not_hangs() -> None:
    async def main() -> list[tuple[int, bool, str | None]]:
        loop = asyncio.get_running_loop()
        got: list[tuple[int, bool, str | None]] = []
        done = asyncio.Event()

        def work(index: int, data: bytearray) -> bool:
            if index == 0:
                raise OSError(28, "No space left on device")
            if index == 1:
                raise RoostError("the payload's file vanished")
            raise KeyError(index)

        def deliver(index: int, ok: bool, error: str | None) -> None:
            got.append((index, ok, error))
            if len(got) == 3:
                done.set()

        checker = PieceChecker(loop, work, deliver)
        for i in range(3):
            checker.submit(i, bytearray(1))
        await asyncio.wait_for(done.wait(), 10)
        checker.close()
        return got

    got = asyncio.run(main())
    assert [(i, ok) for i, ok, _ in got] == [(0, False), (1, False), (2, False)]
    assert "No space left" in str(got[0][2])
    assert got[1][2] == "the payload's file vanished"
    assert got[2][2] == "internal error: KeyError: 2"


def test_nothing_is_delivered_after_close_and_a_seed_starts_no_thread() -> None:
    async def main() -> tuple[list[int], bool]:
        loop = asyncio.get_running_loop()
        got: list[int] = []
        release = threading.Event()

        def work(index: int, data: bytearray) -> bool:
            release.wait(10)
            return True

        idle = PieceChecker(loop, work, lambda i, ok, err: got.append(i))
        idle.close()  # never used: nothing to join
        started = idle._thread is not None
        checker = PieceChecker(loop, work, lambda i, ok, err: got.append(i))
        checker.submit(0, bytearray(1))
        release.set()
        checker.close()  # waits for the worker; its result is dropped
        await asyncio.sleep(0.05)
        checker.submit(1, bytearray(1))  # ignored once closed
        await asyncio.sleep(0.05)
        return got, started

    got, started = asyncio.run(main())
    assert got == []
    assert not started
