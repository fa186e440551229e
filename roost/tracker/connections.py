"""The tracker's HTTP connections under floods: a file-descriptor budget and a cap.

Theory of operation. A tracker serves many short requests; a flood of idle
connections (a scanner, a broken client, an attacker) must neither exhaust
its file descriptors (accept() then fails with EMFILE, asyncio logs a
traceback per attempt and announces time out) nor lock out real clients.

* At start the soft RLIMIT_NOFILE is raised to the hard limit.
* Concurrent connections are capped below that limit, leaving room for the
  state file, the listening sockets and a burst of accepts (an event loop
  accepts up to 100 connections per pass before any close completes).
* When the cap is reached, a new connection closes the OLDEST one (gracefully:
  aiohttp finishes a request in progress first). An announce takes a round
  trip, so the oldest connection is the one least likely to still be useful;
  refusing newcomers instead would let idle sockets, which aiohttp keeps until
  they send a request, lock the tracker for good. Past a hard margin above
  the cap, newcomers are refused outright so descriptors stay bounded.
* Dropped and refused connections are logged once per interval, with counts.
* An HTTP request aiohttp cannot parse (a request line over MAX_LINE, bytes
  that are not HTTP) gets a bencoded `failure reason`, like every other
  tracker error, instead of aiohttp's plain-text body; the status stays 400.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from roost.core.tracker_server_codec import failure

log = logging.getLogger("roost.tracker")

FD_RESERVE = 160  # descriptors kept out of the connection cap (see above)
HARD_MARGIN = 64  # connections still closing, on top of the cap
MAX_CONNECTIONS = 50_000
LOG_SECONDS = 10.0


def raise_nofile_limit() -> int:
    """Raise the soft file-descriptor limit to the hard one; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(soft_limit: int, configured: int = MAX_CONNECTIONS) -> int:
    return max(16, min(configured, soft_limit - FD_RESERVE - HARD_MARGIN))


class _Refuse(asyncio.Protocol):
    """Past the hard margin: close at once, no request is read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _TrackerRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        # not HTTP the parser accepts: a BitTorrent client still reads a failure reason
        if isinstance(exc, LineTooLong):
            reason = "request line too long"
        else:
            reason = "malformed HTTP request"
        # still a 400: it is not a request at all, and HTTP tools should see an error
        resp = web.Response(status=400, body=failure(reason), content_type="text/plain")
        resp.force_close()
        return resp


class CappedServer(web.Server):
    """aiohttp's low-level Server with a connection cap (drop the oldest)."""

    def __init__(self, handler: Any, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self._closing: set[RequestHandler] = set()
        self.dropped = 0  # oldest closed for a newcomer
        self.refused = 0  # newcomers refused past the hard margin
        self._logged = (0, 0)
        self._log_at = 0.0

    def __call__(self) -> Any:
        live = len(self._connections)
        if self._closing:  # those gone for good
            self._closing.intersection_update(self._connections)
        if live >= self.max_connections + HARD_MARGIN:
            self.refused += 1
            self._log()
            return _Refuse()
        if live - len(self._closing) >= self.max_connections:
            for old in self._connections:  # oldest first (insertion order)
                if old not in self._closing:
                    self._closing.add(old)
                    _close(old)
                    self.dropped += 1
                    break
            self._log()
        return _TrackerRequestHandler(self, loop=self._loop, **self._kwargs)

    def _log(self) -> None:
        now = time.monotonic()
        if now < self._log_at:
            return
        self._log_at = now + LOG_SECONDS
        dropped, refused = self.dropped - self._logged[0], self.refused - self._logged[1]
        self._logged = (self.dropped, self.refused)
        log.warning(
            "connection cap %d reached: closed %d oldest and refused %d new connections "
            "(logged at most every %g s)",
            self.max_connections, dropped, refused, LOG_SECONDS,
        )  # fmt: skip


def _close(handler: RequestHandler) -> None:
    """Close an idle connection now; one with a request in progress after it.

    Idle is aiohttp's own test (its keep-alive timer's): waiting for a request."""
    waiter = getattr(handler, "_waiter", None)
    if waiter is not None and not waiter.done():
        handler.force_close()
    else:
        handler.close()
