"""The event-loop stall detector: a loop blocked for real is reported, with its lag."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import time
from pathlib import Path
from typing import Any

from roost.core.bitfield import Bitfield
from roost.core.metainfo import build_info, build_torrent, parse
from roost.engine.config import SessionConfig
from roost.engine.loopwatch import LoopWatch
from roost.engine.reporter import Reporter
from roost.engine.session import Session
from roost.engine.storage import Storage
from tests.engine.test_storage import PIECE, write_all


def make_raw_info(total: int) -> tuple[dict[str, Any], bytes]:
    payload = random.Random(7).randbytes(total)
    hashes = b"".join(hashlib.sha1(payload[i : i + PIECE]).digest() for i in range(0, total, PIECE))
    return build_info("payload", total, PIECE, hashes), payload


def _watch(block: Any, threshold: float) -> tuple[list[tuple[str, dict[str, Any]]], LoopWatch]:
    """Run a loop for about 1 s with `block` called at 0.2 s; the reports made."""
    seen: list[tuple[str, dict[str, Any]]] = []

    async def main() -> LoopWatch:
        loop = asyncio.get_running_loop()
        watch = LoopWatch(loop, lambda name, **f: seen.append((name, f)), threshold, period=0.05)
        watch.start()
        if block is not None:
            loop.call_later(0.2, block)
        await asyncio.sleep(1.0)
        watch.stop()
        return watch

    return seen, asyncio.run(main())


def _spin(cpu_seconds: float) -> None:
    """Compute for this much of the thread's own CPU time (however busy the host)."""
    end = time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        pass


def test_a_sleeping_callback_is_reported_with_its_lag() -> None:
    seen, watch = _watch(lambda: time.sleep(0.5), threshold=0.3)
    stalls = [f for name, f in seen if name == "loop_stall"]
    assert len(stalls) == 1, seen
    assert 0.4 <= stalls[0]["lag_s"] < 0.9
    assert stalls[0]["loop_cpu_s"] < 0.2  # asleep, not computing
    assert seen[-1] == ("loop_lag", {"max_s": stalls[0]["lag_s"], "stalls": 1})
    assert watch.max_lag >= 0.4


def test_a_computing_callback_shows_its_cpu() -> None:
    seen, _ = _watch(lambda: _spin(0.4), threshold=0.3)
    stalls = [f for name, f in seen if name == "loop_stall"]
    assert len(stalls) == 1, seen
    assert stalls[0]["loop_cpu_s"] >= 0.4  # the loop's own thread was busy


def test_a_free_loop_reports_no_stall() -> None:
    seen, watch = _watch(None, threshold=0.3)
    assert [name for name, _ in seen] == ["loop_lag"]
    assert watch.stalls == 0 and watch.max_lag < 0.3


def test_a_session_reports_a_blocked_loop(tmp_path: Path) -> None:
    """A seeding Session (its default threshold, 1 s) whose loop a callback blocks for 1.5 s."""
    raw_info, payload = make_raw_info(4 * 16 * 1024)
    meta = parse(build_torrent(raw_info))
    info = meta.info
    with Storage(info, tmp_path) as storage:
        write_all(storage, info, payload)
    out = io.StringIO()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        storage = Storage(info, tmp_path)
        storage.open(create=False)
        have = Bitfield.full(info.num_pieces)
        config = SessionConfig(ports=(0, 0), listen_host="127.0.0.1", linger=None)
        session = Session(meta, storage, have, config, Reporter(as_json=True, stream=out),
                          trackers=[])
        loop.call_later(0.3, time.sleep, 1.5)  # a probe is due within 0.25 s of its start
        loop.call_later(2.2, session.stop)
        try:
            await session.run()
        finally:
            storage.close()

    asyncio.run(main())
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    stalls = [e for e in events if e["event"] == "loop_stall"]
    assert len(stalls) == 1, events
    assert stalls[0]["lag_s"] >= 1.2
    summary = [e for e in events if e["event"] == "loop_lag"]
    assert summary and summary[0]["max_s"] >= 1.2 and summary[0]["stalls"] == 1
