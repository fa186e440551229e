"""Fixtures: a real TrackerServer on 127.0.0.1 port 0, run on a loop in a thread."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from roost.tracker.server import TrackerConfig, TrackerServer

T = TypeVar("T")


class RunningTracker:
    """A TrackerServer on its own event-loop thread, driven synchronously."""

    def __init__(self, config: TrackerConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = TrackerServer(config)
        self.stopped = False
        try:
            self.run(self.server.start())
        except BaseException:
            self._close_loop()
            raise

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async def wrapper() -> Any:
            return fn(*args, **kwargs)

        return self.run(wrapper())

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            try:
                self.run(self.server.stop())
            finally:
                self._close_loop()

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def port(self) -> int:
        return self.server.port

    def get(self, target: str, timeout: float = 10) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", target)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def admin(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Authorization": f"Bearer {token or self.server.admin_token}"}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()


@pytest.fixture
def start_tracker() -> Iterator[Any]:
    """Factory: start_tracker(**TrackerConfig fields) -> RunningTracker; all stopped after."""
    started: list[RunningTracker] = []

    def start(**kwargs: Any) -> RunningTracker:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        running = RunningTracker(TrackerConfig(**kwargs))
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in reversed(started):
            running.stop()
