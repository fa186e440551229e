"""The tracker's aiohttp adapter: HTTP endpoints, admin API, persistence, timers.

Theory of operation. All protocol and swarm logic lives in the pure
`roost.core.tracker_swarm.Tracker`; this module only feeds it the raw query bytes,
the connection's address and `time.monotonic()`, and sends back the bytes it
returns. Tracker endpoints always answer HTTP 200 with bencoding: any
unexpected exception is caught and becomes a bencoded `failure reason`.

A housekeeping task runs once a second: it expires silent peers, writes the
state file when completion marks changed (debounced, so a thousand hosts
finishing at once cost one write, not a thousand fsyncs) and rescans the
.torrent directory every `rescan_interval`. Admin changes are written before
the API answers, so an acknowledged registration survives a crash.

Embedding: `TrackerServer(config)`, `await start()`, use `.url`,
`await register(...)`, `status(...)`, `await stop()` (or `async with`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from roost.core import metainfo
from roost.core.tracker_server_codec import failure
from roost.core.tracker_swarm import Swarm, SwarmRecord, Tracker, TrackerPolicy, valid_token
from roost.errors import MetainfoError, UsageError
from roost.tracker import state as state_file
from roost.tracker.connections import (
    MAX_CONNECTIONS,
    CappedServer,
    connection_cap,
    raise_nofile_limit,
)

log = logging.getLogger("roost.tracker")

MAX_LINE = 16 * 1024  # HTTP layer cap; protocol.MAX_QUERY (4 KiB) answers bencoded below it
MAX_ADMIN_BODY = 8 * 1024 * 1024  # a base64 .torrent of a very large release fits
MAX_TORRENT_FILES = 10_000
MAX_TORRENT_BYTES = 64 * 1024 * 1024
# the secret before `announce` (BEP 48: a client derives the scrape URL from the
# last component), or after it (the form of earlier releases, still accepted)
_ANNOUNCE_PATH = re.compile(
    r"/(?:([A-Za-z0-9_-]{16,128})/announce|announce/([A-Za-z0-9_-]{16,128}))/?\Z"
)
_HEX40 = re.compile(r"[0-9a-fA-F]{40}\Z")
_ADMIN_SWARM = re.compile(r"/admin/swarms/([^/]*)\Z")
TEXT = "text/plain"


@dataclass
class TrackerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    policy: TrackerPolicy = field(default_factory=TrackerPolicy)
    state_path: Path | None = None
    torrent_dir: Path | None = None
    admin_token: str | None = None  # None: from the state file, else generated
    public_url: str | None = None  # base of announce URLs; default http://host:port
    rescan_interval: float = 10.0
    housekeeping_interval: float = 1.0
    max_connections: int = MAX_CONNECTIONS  # lowered to fit the fd limit (connections.py)


class _Metrics:
    """Prometheus counters plus a collector reading live swarm gauges."""

    def __init__(self, tracker: Tracker) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.announces = Counter(
            "roost_tracker_announces", "Successful announces", ["event"], registry=self.registry
        )
        self.rejected = Counter(
            "roost_tracker_rejected",
            "Requests answered with a failure reason, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.scrapes = Counter("roost_tracker_scrapes", "Scrapes", registry=self.registry)
        self.admin_denied = Counter(
            "roost_tracker_admin_denied", "Admin calls with a bad token", registry=self.registry
        )
        self.registry.register(_SwarmCollector(tracker))
        self._announce_children: dict[str, Any] = {}

    def count(self, error: str | None, event: str) -> None:
        if error is not None:
            self.rejected.labels(error).inc()
        elif event == "scrape":
            self.scrapes.inc()
        else:
            child = self._announce_children.get(event)
            if child is None:
                child = self._announce_children[event] = self.announces.labels(event)
            child.inc()


class _SwarmCollector(Collector):
    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def collect(self) -> Iterable[GaugeMetricFamily]:
        labels = ["info_hash", "name"]
        gauges = {
            "peers": GaugeMetricFamily("roost_tracker_peers", "Live peers", labels=labels),
            "seeders": GaugeMetricFamily("roost_tracker_seeders", "Live seeders", labels=labels),
            "expected": GaugeMetricFamily(
                "roost_tracker_expected_peers", "Peers the deploy expects", labels=labels
            ),
            "done": GaugeMetricFamily(
                "roost_tracker_done_peers", "Peers finished or marked failed", labels=labels
            ),
        }
        for swarm in self.tracker.swarms.values():
            key = [swarm.record.info_hash.hex(), swarm.record.name]
            gauges["peers"].add_metric(key, len(swarm.peers))
            gauges["seeders"].add_metric(key, swarm.seeders)
            gauges["expected"].add_metric(key, swarm.record.expected_peers)
            gauges["done"].add_metric(key, swarm.done_count())
        total = GaugeMetricFamily("roost_tracker_swarms", "Registered swarms")
        total.add_metric([], len(self.tracker.swarms))
        yield total
        yield from gauges.values()


class _QuietBadRequests(logging.Filter):
    """Drop aiohttp's ERROR+traceback log of each malformed HTTP request.

    The client already got a 400; logging a traceback per bad request would let
    any scanner flood the operator's log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, HttpProcessingError)


_QUIET = _QuietBadRequests()


def _remote_ip(request: web.BaseRequest) -> str:
    remote = request.remote or "0.0.0.0"
    if remote.startswith("::ffff:"):  # v4-mapped on a dual-stack socket
        with contextlib.suppress(ValueError):
            mapped = ipaddress.IPv6Address(remote).ipv4_mapped
            return str(mapped) if mapped else remote
    return remote


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, indent=1, sort_keys=True) + "\n",
        status=status,
        content_type="application/json",
    )


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Match = re.Match[str]
Route = Callable[[web.BaseRequest, Match], Awaitable[web.StreamResponse]]


class TrackerServer:
    """The roost tracker as an embeddable asyncio service."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.tracker = Tracker(self.config.policy)
        self.metrics = _Metrics(self.tracker)
        self.admin_token = self.config.admin_token or ""
        self._runner: web.ServerRunner | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        self._save_lock = asyncio.Lock()
        self._last_rescan = float("-inf")
        self._port = 0
        self._routes = self._build_routes()
        self._max_connections = self.config.max_connections

    # --- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        logging.getLogger("aiohttp.server").addFilter(_QUIET)  # idempotent
        self._max_connections = connection_cap(raise_nofile_limit(), self.config.max_connections)
        self._load_state()
        if self.config.torrent_dir is not None:
            self._scan_torrent_dir()
            self._last_rescan = time.monotonic()
        await self._persist()
        runner = web.ServerRunner(self.make_handler())
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self.config.host}:{self.config.port}"
            raise UsageError(f"cannot listen on {where}: {exc.strerror}") from None
        self._runner = runner
        addresses = runner.addresses  # the bound (host, port, ...) of each socket
        self._port = int(addresses[0][1]) if addresses else self.config.port
        self._housekeeper = asyncio.create_task(self._housekeeping())
        log.info("tracker listening on %s", self.url)

    async def stop(self) -> None:
        """Stop serving, then write the state one last time."""
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
            self._housekeeper = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._persist()

    async def __aenter__(self) -> TrackerServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}"

    # --- in-process API (the deploy orchestrator uses these) ---------------

    def announce_url(self, info_hash: bytes) -> str:
        return f"{self.url}/{self.tracker.swarms[info_hash].record.token}/announce"

    async def register(
        self,
        info_hash: bytes,
        *,
        token: str | None = None,
        name: str = "",
        expected_peers: int = 0,
        source: str = "api",
    ) -> dict[str, Any]:
        """Register (or update) a swarm and persist it; returns its summary."""
        old = self.tracker.swarms.get(info_hash)
        token = token or (old.record.token if old else secrets.token_urlsafe(24))
        if expected_peers < 0:
            raise ValueError("expected_peers must be >= 0")
        record = SwarmRecord(info_hash, token, name, expected_peers, source)
        swarm = self.tracker.register(record)
        await self._persist()
        return self.summary(swarm)

    async def set_expected_peers(self, info_hash: bytes, expected_peers: int) -> None:
        """Change how many peers the deploy waits for (e.g. a host dropped out)."""
        if expected_peers < 0:
            raise ValueError("expected_peers must be >= 0")
        self.tracker.swarms[info_hash].record.expected_peers = expected_peers
        await self._persist()

    async def unregister(self, info_hash: bytes) -> bool:
        removed = self.tracker.unregister(info_hash)
        await self._persist()
        return removed

    def status(self, info_hash: bytes) -> dict[str, Any]:
        """The swarm's status JSON (see docs/tracker.md); `last_seen` is Unix time."""
        swarm = self.tracker.swarms[info_hash]
        status = swarm.status(time.monotonic())
        wall = time.time()
        for peer in status["peers"]:
            peer["last_seen"] = round(wall - peer["last_seen_ago"], 3)
        return {**status, **self.summary(swarm)}

    async def mark_failed(
        self, info_hash: bytes, *, peer_id: bytes | None = None, address: str | None = None
    ) -> int:
        added = self.tracker.swarms[info_hash].mark_failed(peer_id, address)
        await self._persist()
        return added

    def summary(self, swarm: Swarm) -> dict[str, Any]:
        rec = swarm.record
        return {
            "info_hash": rec.info_hash.hex(),
            "name": rec.name,
            "token": rec.token,
            "expected_peers": rec.expected_peers,
            "complete_peers": swarm.done_count(),
            "source": rec.source,
            "announce_url": f"{self.url}/{rec.token}/announce",
            "scrape_url": f"{self.url}/{rec.token}/scrape",
            "status_url": f"{self.url}/status/{rec.token}",
        }

    # --- persistence -------------------------------------------------------

    def _load_state(self) -> None:
        loaded = state_file.TrackerState()
        if self.config.state_path is not None:
            loaded = state_file.load(self.config.state_path)
        if self.config.admin_token is not None and len(self.config.admin_token) < 16:
            raise UsageError("the admin token must be at least 16 characters")
        self.admin_token = self.config.admin_token or loaded.admin_token or ""
        if not self.admin_token:
            self.admin_token = secrets.token_urlsafe(24)
        for record in loaded.swarms:
            try:
                self.tracker.register(record)
            except ValueError as exc:
                log.warning("skipping swarm %s from state: %s", record.info_hash.hex(), exc)

    async def _persist(self) -> None:
        path = self.config.state_path
        for swarm in self.tracker.swarms.values():
            swarm.dirty = False
        if path is None:
            return
        records = [swarm.record for swarm in self.tracker.swarms.values()]
        data = state_file.dumps(state_file.TrackerState(self.admin_token, records))
        async with self._save_lock:  # writes happen in order, one at a time
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, state_file.write_atomic, path, data)
            except OSError as exc:
                raise state_file.StateError(
                    f"cannot write tracker state {path}: {exc.strerror or exc}"
                ) from None

    # --- housekeeping ------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:  # ends by cancellation in stop()
            await asyncio.sleep(self.config.housekeeping_interval)
            try:
                await self._housekeep_once()
            except Exception:  # one bad pass must not stop expiry for good
                log.exception("tracker housekeeping failed")

    async def _housekeep_once(self) -> None:
        now = time.monotonic()
        self.tracker.expire(now)
        changed = False
        if (
            self.config.torrent_dir is not None
            and now - self._last_rescan >= self.config.rescan_interval
        ):
            self._last_rescan = now
            changed = self._scan_torrent_dir()
        if changed or any(s.dirty for s in self.tracker.swarms.values()):
            await self._persist()

    def _scan_torrent_dir(self) -> bool:
        """Register every .torrent in the directory; drop those whose file went away."""
        directory = self.config.torrent_dir
        assert directory is not None
        seen: set[str] = set()
        changed = False
        try:
            paths = sorted(directory.glob("*.torrent"))[:MAX_TORRENT_FILES]
        except OSError as exc:
            log.warning("cannot list %s: %s", directory, exc)
            return False
        for path in paths:
            source = f"dir:{path.name}"
            seen.add(source)
            try:
                changed |= self._register_torrent_file(path, source)
            except (OSError, MetainfoError, ValueError) as exc:
                log.warning("skipping %s: %s", path, exc)
        for ih, swarm in list(self.tracker.swarms.items()):
            if swarm.record.source.startswith("dir:") and swarm.record.source not in seen:
                self.tracker.unregister(ih)
                changed = True
        return changed

    def _register_torrent_file(self, path: Path, source: str) -> bool:
        if path.stat().st_size > MAX_TORRENT_BYTES:
            raise ValueError("file too large")
        meta = metainfo.parse(path.read_bytes())
        old = self.tracker.swarms.get(meta.info_hash)
        if old is not None and old.record.source in ("api", source):
            return False  # already known; the admin API's settings win
        match = _ANNOUNCE_PATH.search(meta.announce or "")
        token = (match.group(1) or match.group(2)) if match else secrets.token_urlsafe(24)
        self.tracker.register(SwarmRecord(meta.info_hash, token, meta.info.name, 0, source))
        log.info("registered %s from %s", meta.info_hash.hex(), path)
        return True

    # --- HTTP --------------------------------------------------------------
    #
    # aiohttp's low-level Server with our own dispatch: the announce hot path
    # skips the router, middlewares and Request wrapper of web.Application
    # (about a fifth of the per-request cost at tracker rates).

    def make_handler(self) -> web.Server:
        """The aiohttp low-level server; serve it with web.ServerRunner."""
        return CappedServer(
            self._dispatch,
            max_connections=self._max_connections,
            access_log=None,
            max_line_size=MAX_LINE,
            keepalive_timeout=30.0,  # idle keep-alive connections must not pile up
            tcp_keepalive=False,
        )

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], Route]]:
        return [
            ("GET", re.compile(r"/status/([^/]*)\Z"), self._public_status),
            ("GET", re.compile(r"/metrics\Z"), self._metrics),
            ("GET", re.compile(r"/admin/swarms\Z"), self._guarded(self._admin_list)),
            ("POST", re.compile(r"/admin/swarms\Z"), self._guarded(self._admin_register)),
            ("GET", _ADMIN_SWARM, self._guarded(self._admin_status)),
            ("PATCH", _ADMIN_SWARM, self._guarded(self._admin_update)),
            ("DELETE", _ADMIN_SWARM, self._guarded(self._admin_delete)),
            (
                "POST",
                re.compile(r"/admin/swarms/([^/]*)/failed\Z"),
                self._guarded(self._admin_failed),
            ),
        ]

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        path, _, query = request.raw_path.partition("?")
        if request.method in ("GET", "HEAD"):
            head, _, kind = path.rpartition("/")
            if kind in ("announce", "scrape") and head.count("/") <= 1:
                # /<secret>/announce, /<secret>/scrape (BEP 48); bare /announce has none
                raw = query.encode("utf-8", "surrogateescape")
                return self._tracker_reply(kind, head[1:] or None, raw, request)
            if path.startswith(("/announce/", "/scrape/")):  # the old /announce/<secret>
                kind, _, token = path[1:].partition("/")
                raw = query.encode("utf-8", "surrogateescape")
                return self._tracker_reply(kind, token, raw, request)
        allowed = False
        for method, pattern, handler in self._routes:
            match = pattern.match(path)
            if match is not None:
                if method == request.method:
                    return await handler(request, match)
                allowed = True
        if allowed:
            return web.Response(status=405, text="405: Method Not Allowed")
        return web.Response(status=404, text="404: Not Found")

    def _tracker_reply(
        self, kind: str, token: str | None, raw_query: bytes, request: web.BaseRequest
    ) -> web.Response:
        try:
            if kind == "announce":
                now = time.monotonic()
                outcome = self.tracker.announce(token, raw_query, _remote_ip(request), now)
            else:
                outcome = self.tracker.scrape(token, raw_query)
            self.metrics.count(outcome.error, outcome.event)
            body = outcome.body
        except Exception:  # never a 500 to a BitTorrent client
            log.exception("%s failed", kind)
            self.metrics.count("internal", "")
            body = failure("internal tracker error")
        return web.Response(body=body, content_type=TEXT)

    async def _public_status(self, request: web.BaseRequest, match: Match) -> web.Response:
        swarm = self.tracker.by_token.get(match.group(1))
        if swarm is None:
            self.metrics.count("secret", "")
            return _json({"error": "invalid secret"}, 404)
        return _json(self.status(swarm.record.info_hash))

    async def _metrics(self, request: web.BaseRequest, match: Match) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    # --- admin API -----------------------------------------------------------

    def _guarded(self, handler: Route) -> Route:
        async def guarded(request: web.BaseRequest, match: Match) -> web.StreamResponse:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            expected = self.admin_token.encode()
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected):
                self.metrics.admin_denied.inc()
                return _json({"error": "missing or wrong admin token"}, 401)
            try:
                return await handler(request, match)
            except AdminError as exc:
                return _json({"error": str(exc)}, exc.status)
            except state_file.StateError as exc:  # the change could not be made durable
                return _json({"error": str(exc)}, 503)
            except Exception:
                log.exception("admin call failed")
                return _json({"error": "internal error"}, 500)

        return guarded

    async def _body(self, request: web.BaseRequest) -> dict[str, Any]:
        chunks: list[bytes] = []
        size = 0
        while True:  # bounded by MAX_ADMIN_BODY
            chunk = await request.content.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_ADMIN_BODY:
                raise AdminError(413, f"body larger than {MAX_ADMIN_BODY} bytes")
            chunks.append(chunk)
        try:
            data = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
            raise AdminError(400, "body must be a JSON object") from None
        if not isinstance(data, dict):
            raise AdminError(400, "body must be a JSON object")
        return data

    def _swarm(self, match: Match) -> Swarm:
        ih = match.group(1)
        swarm = self.tracker.swarms.get(bytes.fromhex(ih)) if _HEX40.match(ih) else None
        if swarm is None:
            raise AdminError(404, "no such swarm (use the 40-hex-digit info_hash)")
        return swarm

    async def _admin_list(self, request: web.BaseRequest, match: Match) -> web.Response:
        return _json({"swarms": [self.summary(s) for s in self.tracker.swarms.values()]})

    async def _admin_register(self, request: web.BaseRequest, match: Match) -> web.Response:
        body = await self._body(request)
        info_hash, name = _info_hash_from(body)
        token = body.get("token")
        if token is not None and (not isinstance(token, str) or not valid_token(token)):
            raise AdminError(400, "token must be 16-128 characters of [A-Za-z0-9_-]")
        expected = _expected_from(body, 0)
        existed = info_hash in self.tracker.swarms
        try:
            summary = await self.register(
                info_hash,
                token=token,
                name=str(body.get("name", name))[:200],
                expected_peers=expected,
            )
        except ValueError as exc:
            raise AdminError(409, str(exc)) from None
        return _json(summary, 200 if existed else 201)

    async def _admin_status(self, request: web.BaseRequest, match: Match) -> web.Response:
        return _json(self.status(self._swarm(match).record.info_hash))

    async def _admin_update(self, request: web.BaseRequest, match: Match) -> web.Response:
        swarm = self._swarm(match)
        body = await self._body(request)
        rec = swarm.record
        rec.expected_peers = _expected_from(body, rec.expected_peers)
        rec.name = str(body.get("name", rec.name))[:200]
        await self._persist()
        return _json(self.summary(swarm))

    async def _admin_delete(self, request: web.BaseRequest, match: Match) -> web.Response:
        await self.unregister(self._swarm(match).record.info_hash)
        return _json({"deleted": match.group(1).lower()})

    async def _admin_failed(self, request: web.BaseRequest, match: Match) -> web.Response:
        swarm = self._swarm(match)
        body = await self._body(request)
        peer_id, address = body.get("peer_id"), body.get("address")
        if peer_id is None and address is None:
            raise AdminError(400, "give peer_id (40 hex digits) and/or address (ip[:port])")
        if peer_id is not None and not (isinstance(peer_id, str) and _HEX40.match(peer_id)):
            raise AdminError(400, "peer_id must be 40 hex digits")
        try:
            added = swarm.mark_failed(
                bytes.fromhex(peer_id) if peer_id else None,
                str(address) if address is not None else None,
            )
        except ValueError as exc:
            raise AdminError(400, str(exc)) from None
        await self._persist()
        return _json({"added": added, **self.summary(swarm)})


def _info_hash_from(body: dict[str, Any]) -> tuple[bytes, str]:
    """From "info_hash" (40 hex) or "torrent" (base64 .torrent); returns (hash, name)."""
    if "torrent" in body:
        try:
            meta = metainfo.parse(base64.b64decode(str(body["torrent"]), validate=True))
        except (ValueError, MetainfoError) as exc:
            raise AdminError(400, f"bad torrent: {exc}") from None
        return meta.info_hash, meta.info.name
    ih = body.get("info_hash")
    if not isinstance(ih, str) or not _HEX40.match(ih):
        raise AdminError(400, "give info_hash (40 hex digits) or torrent (base64)")
    return bytes.fromhex(ih), ""


def _expected_from(body: dict[str, Any], default: int) -> int:
    value = body.get("expected_peers", default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000_000:
        raise AdminError(400, "expected_peers must be an integer >= 0")
    return value
