"""HTTP tracker client: announce (BEP 3, 7, 23), scrape (BEP 48), tiers (BEP 12). Adapter.

Theory of operation. A tracker request is one HTTP/1.1 GET with
`Connection: close`, written by hand over asyncio.open_connection (standard
library only: this runs on target hosts from a zipapp). `info_hash` and
`peer_id` are raw bytes, percent-encoded byte by byte. The reply is read
defensively, since a tracker is a remote party: headers are capped at 64 KiB,
the body at 2 MiB (checked against Content-Length before reading, and while
reading chunked or close-delimited bodies), at most 3 redirects are
followed, and the whole exchange runs under one timeout. Every failure,
whether the network, HTTP, bad bencoding or a bencoded `failure reason`,
becomes a TrackerError carrying one readable sentence.

`TrackerClient` adds BEP 12 failover on top of `announce`: tiers are tried in
order, the URLs inside a tier in a random order fixed once; the URL that
answers moves to the front of its tier. It remembers the tracker id and the
interval the tracker asked for, and backs off exponentially while every
tracker is failing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import quote_from_bytes, urljoin, urlsplit

from roost.core import bencode
from roost.core.tracker_client_codec import (
    MAX_BODY,
    AnnounceRequest,
    AnnounceResponse,
    ScrapeStats,
    TrackerError,
    announce_url,
    parse_announce_response,
    parse_scrape_response,
    redact,
    scrape_url,
    text,
    with_query,
)
from roost.errors import DecodeError

if TYPE_CHECKING:
    import ssl

__all__ = ["TrackerClient", "TrackerError", "announce", "http_get", "scrape"]

MAX_HEADER = 64 * 1024
MAX_REDIRECTS = 3
MIN_INTERVAL = 1.0  # never announce more often than this, whatever a tracker says
MAX_INTERVAL = 3600.0 * 6
USER_AGENT = "roost/0.1"


# -- HTTP --------------------------------------------------------------------


async def http_get(url: str, *, timeout: float, max_body: int = MAX_BODY) -> bytes:
    """GET `url` and return the body of a 200 reply; follow a few redirects."""
    try:
        return await asyncio.wait_for(_get_following(url, max_body), timeout)
    except asyncio.TimeoutError:
        raise TrackerError(f"tracker {redact(url)} timed out after {timeout:g} s") from None


async def _get_following(url: str, max_body: int) -> bytes:
    for _ in range(MAX_REDIRECTS + 1):
        status, headers, body = await _get_once(url, max_body)
        if status in (301, 302, 303, 307, 308) and "location" in headers:
            url = urljoin(url, headers["location"])
            continue
        if status != 200:
            raise TrackerError(_http_failure(url, status, body))
        return body
    raise TrackerError(f"tracker {redact(url)} redirected more than {MAX_REDIRECTS} times")


def _http_failure(url: str, status: int, body: bytes) -> str:
    """A non-200 reply, with the tracker's own failure reason when it sent one."""
    reason = None
    try:
        decoded = bencode.decode(body.rstrip(), max_string=4096)
        raw = decoded.get(b"failure reason") if isinstance(decoded, dict) else None
        reason = text(raw) if isinstance(raw, bytes) else None
    except DecodeError:
        pass
    detail = f": {reason}" if reason else ""
    return f"tracker {redact(url)} answered HTTP {status}{detail}"


async def _get_once(url: str, max_body: int) -> tuple[int, dict[str, str], bytes]:
    try:
        parts = urlsplit(url)
    except ValueError:
        raise TrackerError(f"tracker URL {redact(url)} is malformed") from None
    if parts.scheme not in ("http", "https"):
        raise TrackerError(f"tracker {redact(url)}: only http and https trackers are supported")
    host = parts.hostname
    if not host:
        raise TrackerError(f"tracker URL {redact(url)} has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TrackerError(f"tracker URL {redact(url)} has a bad port") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    ssl_ctx = _ssl_context() if parts.scheme == "https" else None
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl_ctx, limit=MAX_HEADER)
    except OSError as exc:
        raise TrackerError(f"tracker {redact(url)} unreachable: {_oserror(exc)}") from None
    except (UnicodeError, ValueError):  # e.g. a host name IDNA cannot encode
        raise TrackerError(f"tracker URL {redact(url)} has an invalid host") from None
    try:
        host_header = f"[{host}]" if ":" in host else host
        if parts.port:
            host_header += f":{port}"
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Accept-Encoding: identity\r\nConnection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        status, headers = await _read_head(reader, url)
        body = await _read_body(reader, headers, url, max_body)
        return status, headers, body
    except OSError as exc:
        raise TrackerError(f"tracker {redact(url)} connection failed: {_oserror(exc)}") from None
    finally:
        writer.close()


def _ssl_context() -> ssl.SSLContext:
    import ssl  # lazily: a bare host's Python may lack it, and plain http needs none

    return ssl.create_default_context()


def _oserror(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


async def _read_head(reader: asyncio.StreamReader, url: str) -> tuple[int, dict[str, str]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise TrackerError(f"tracker {redact(url)} sent oversized HTTP headers") from None
    except asyncio.IncompleteReadError:
        raise TrackerError(f"tracker {redact(url)} closed the connection early") from None
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
        raise TrackerError(f"tracker {redact(url)} did not answer HTTP")
    if not (status_line[1].isdigit() and len(status_line[1]) == 3):
        raise TrackerError(f"tracker {redact(url)} sent a bad HTTP status line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(status_line[1]), headers


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], url: str, max_body: int
) -> bytes:
    too_big = TrackerError(f"tracker {redact(url)} sent a reply larger than {max_body} bytes")
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await _read_chunked(reader, url, max_body, too_big)
        if "content-length" in headers:
            text = headers["content-length"]
            if not text.isdigit() or len(text) > 18:
                raise TrackerError(f"tracker {redact(url)} sent a bad Content-Length")
            if int(text) > max_body:
                raise too_big
            return await reader.readexactly(int(text))
        body = await reader.read(max_body + 1)
        while body and len(body) <= max_body:
            more = await reader.read(max_body + 1 - len(body))
            if not more:
                break
            body += more
        if len(body) > max_body:
            raise too_big
        return body
    except asyncio.IncompleteReadError:
        raise TrackerError(f"tracker {redact(url)} closed the connection mid-reply") from None


async def _read_chunked(
    reader: asyncio.StreamReader, url: str, max_body: int, too_big: TrackerError
) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        line = await _read_line(reader, url)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise TrackerError(f"tracker {redact(url)} sent a bad chunk size") from None
        if size < 0:
            raise TrackerError(f"tracker {redact(url)} sent a bad chunk size")
        if size == 0:
            while await _read_line(reader, url):  # trailers, up to the empty line
                pass
            return b"".join(chunks)
        total += size
        if total > max_body:
            raise too_big
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise TrackerError(f"tracker {redact(url)} sent a malformed chunk")


async def _read_line(reader: asyncio.StreamReader, url: str) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise TrackerError(f"tracker {redact(url)} sent an oversized chunk line") from None
    return line.rstrip(b"\r\n")


# -- one request -------------------------------------------------------------


async def announce(url: str, req: AnnounceRequest, *, timeout: float = 10.0) -> AnnounceResponse:
    """Announce to one tracker. Raises TrackerError on any failure."""
    body = await http_get(announce_url(url, req), timeout=timeout)
    return parse_announce_response(body, url)


async def scrape(
    url: str, info_hashes: Sequence[bytes], *, timeout: float = 10.0
) -> dict[bytes, ScrapeStats]:
    """BEP 48 scrape; `url` is the announce URL (converted) or a scrape URL."""
    target = url if "/scrape" in urlsplit(url).path else scrape_url(url)
    if target is None:
        raise TrackerError(f"tracker {redact(url)} does not support scrape")
    query = "&".join("info_hash=" + quote_from_bytes(h, safe="") for h in info_hashes)
    body = await http_get(with_query(target, query), timeout=timeout)
    return parse_scrape_response(body, url)


# -- tiers -------------------------------------------------------------------


class TrackerClient:
    """BEP 12 multi-tracker announces for one torrent."""

    def __init__(
        self,
        tiers: list[list[str]],
        *,
        info_hash: bytes,
        peer_id: bytes,
        port: int,
        location: str | None = None,
        ip: str | None = None,
        rng: random.Random | None = None,
        timeout: float = 10.0,
        retry_base: float = 2.0,
        retry_max: float = 60.0,
    ) -> None:
        rng = rng or random.Random()
        self.tiers = [list(tier) for tier in tiers if tier]
        if not self.tiers:
            raise ValueError("no tracker URLs")
        for tier in self.tiers:
            rng.shuffle(tier)  # once, per BEP 12
        self.info_hash = info_hash
        self.peer_id = peer_id
        self.port = port
        self.location = location
        self.ip = ip  # the address to advertise, when the route's source is not it
        self.timeout = timeout
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.key = f"{rng.getrandbits(32):08x}"  # lets a tracker see us across IP changes
        self.tracker_id: bytes | None = None
        self.interval: float | None = None
        self.min_interval: float | None = None
        self.failures = 0  # consecutive announces where every tracker failed
        self.last_url: str | None = None

    async def announce(
        self,
        event: str | None = None,
        uploaded: int = 0,
        downloaded: int = 0,
        left: int = 0,
        numwant: int = 200,
    ) -> AnnounceResponse:
        """Announce to the first tracker that answers, in BEP 12 order."""
        req = AnnounceRequest(
            self.info_hash,
            self.peer_id,
            self.port,
            uploaded,
            downloaded,
            left,
            event=event,
            numwant=numwant,
            key=self.key,
            location=self.location,
            ip=self.ip,
        )
        errors: list[str] = []
        for tier in self.tiers:
            for url in list(tier):
                try:
                    response = await announce(
                        url, replace(req, tracker_id=self.tracker_id), timeout=self.timeout
                    )
                except TrackerError as exc:
                    errors.append(str(exc))
                    continue
                tier.remove(url)
                tier.insert(0, url)
                self._remember(url, response)
                return response
        self.failures += 1
        raise TrackerError("every tracker failed: " + "; ".join(errors))

    def _remember(self, url: str, response: AnnounceResponse) -> None:
        self.failures = 0
        self.last_url = url
        if response.tracker_id:
            self.tracker_id = response.tracker_id
        self.interval = float(response.interval)
        self.min_interval = (
            float(response.min_interval) if response.min_interval is not None else None
        )

    def next_announce_in(self) -> float:
        """Seconds until the next regular announce (or retry, after a failure).

        The tracker's interval, clamped to [1 s, 6 h]; after a failed round,
        an exponential back-off from `retry_base`, capped at `retry_max`."""
        if self.failures:
            return min(self.retry_max, self.retry_base * 2.0 ** min(self.failures - 1, 30))
        if self.interval is None:
            return 0.0
        return min(MAX_INTERVAL, max(MIN_INTERVAL, self.interval))

    def min_announce_in(self) -> float:
        """Earliest a manual (extra) announce is allowed, per `min interval`."""
        return max(MIN_INTERVAL, self.min_interval or 0.0)
