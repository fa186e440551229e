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
import ipaddress
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_from_bytes, urljoin, urlsplit

from roost import bencode
from roost.errors import DecodeError, RoostError

if TYPE_CHECKING:
    import ssl

MAX_BODY = 2 * 1024 * 1024
MAX_HEADER = 64 * 1024
MAX_REDIRECTS = 3
DEFAULT_INTERVAL = 1800  # when a reply has none (BEP 3 makes it mandatory)
MIN_INTERVAL = 1.0  # never announce more often than this, whatever a tracker says
MAX_INTERVAL = 3600.0 * 6
USER_AGENT = "roost/0.1"
EVENTS = frozenset({"started", "completed", "stopped", "paused"})
_KNOWN_KEYS = frozenset(
    {
        b"interval",
        b"min interval",
        b"peers",
        b"peers6",
        b"complete",
        b"incomplete",
        b"tracker id",
        b"warning message",
        b"failure reason",
    }
)


class TrackerError(RoostError):
    """A tracker could not be reached or refused the request.

    `failure_reason` is set when the tracker itself answered with a bencoded
    `failure reason` (it is up, it said no); otherwise it is None."""

    def __init__(self, message: str, *, failure_reason: str | None = None) -> None:
        super().__init__(message)
        self.failure_reason = failure_reason


@dataclass(frozen=True)
class AnnounceResponse:
    """A validated announce reply; keys we do not know are kept in `extra`."""

    interval: int
    min_interval: int | None
    peers: list[tuple[str, int]]
    complete: int | None
    incomplete: int | None
    tracker_id: bytes | None
    warning: str | None
    extra: dict[bytes, object] = field(default_factory=dict)

    @property
    def expected_peers(self) -> int | None:
        """How many peers the deploy expects (roost trackers only)."""
        return _opt_int(self.extra.get(b"roost.expected"))

    @property
    def complete_peers(self) -> int | None:
        """How many of them are complete (roost trackers only)."""
        return _opt_int(self.extra.get(b"roost.complete_peers"))


@dataclass(frozen=True)
class ScrapeStats:
    """One torrent's counts in a scrape reply."""

    complete: int
    downloaded: int
    incomplete: int


# -- URLs ------------------------------------------------------------------


def redact(url: str) -> str:
    """The URL without its query (which may hold a passkey), for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0]
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


@dataclass(frozen=True)
class AnnounceRequest:
    """What one announce says (BEP 3, BEP 23 compact, roost's `location`)."""

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: str | None = None
    numwant: int = 200
    compact: bool = True
    key: str | None = None
    tracker_id: bytes | None = None
    location: str | None = None
    ip: str | None = None


def announce_url(url: str, req: AnnounceRequest) -> str:
    """The full announce URL; the tracker URL's own query (a passkey) is kept."""
    if len(req.info_hash) != 20 or len(req.peer_id) != 20:
        raise ValueError("info_hash and peer_id must be 20 bytes each")
    if not 0 <= req.port <= 65535:
        raise ValueError(f"port {req.port} is out of range")
    if req.event and req.event not in EVENTS:
        raise ValueError(f"unknown announce event {req.event!r}")
    params = [
        ("info_hash", quote_from_bytes(req.info_hash, safe="")),
        ("peer_id", quote_from_bytes(req.peer_id, safe="")),
        ("port", str(req.port)),
        ("uploaded", str(max(0, req.uploaded))),
        ("downloaded", str(max(0, req.downloaded))),
        ("left", str(max(0, req.left))),
        ("compact", "1" if req.compact else "0"),
        ("numwant", str(max(0, req.numwant))),
    ]
    if req.compact:
        params.append(("no_peer_id", "1"))
    if req.event:
        params.append(("event", req.event))
    if req.key:
        params.append(("key", quote(req.key, safe="")))
    if req.tracker_id:
        params.append(("trackerid", quote_from_bytes(req.tracker_id, safe="")))
    if req.location:
        params.append(("location", quote(req.location, safe="")))
    if req.ip:
        params.append(("ip", quote(req.ip, safe="")))
    return _with_query(url, "&".join(f"{k}={v}" for k, v in params))


def scrape_url(announce: str) -> str | None:
    """BEP 48: replace the last path component 'announce...' by 'scrape...'."""
    parts = urlsplit(announce)
    head, _, last = parts.path.rpartition("/")
    if not last.startswith("announce"):
        return None
    path = f"{head}/scrape{last[len('announce') :]}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{path}{query}"


def _with_query(url: str, query: str) -> str:
    base = url.split("#", 1)[0]
    sep = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        sep = ""
    return f"{base}{sep}{query}"


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
        reason = _text(raw) if isinstance(raw, bytes) else None
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


# -- replies -----------------------------------------------------------------


def parse_announce_response(body: bytes, url: str = "tracker") -> AnnounceResponse:
    """Validate a bencoded announce reply. Raises TrackerError."""
    where = f"tracker {redact(url)}" if "://" in url else url
    top = _decode_dict(body, where)
    failure = top.get(b"failure reason")
    if failure is not None:
        reason = _text(failure) if isinstance(failure, bytes) else repr(failure)
        raise TrackerError(f"{where} refused the announce: {reason}", failure_reason=reason)
    interval = top.get(b"interval", DEFAULT_INTERVAL)
    if not isinstance(interval, int) or interval < 0:
        raise TrackerError(f"{where} sent a bad interval")
    peers = _parse_peers(top.get(b"peers", b""), 6, where)
    peers += _parse_peers(top.get(b"peers6", b""), 18, where)
    tracker_id = top.get(b"tracker id")
    warning = top.get(b"warning message")
    return AnnounceResponse(
        interval=interval,
        min_interval=_opt_int(top.get(b"min interval")),
        peers=list(dict.fromkeys(peers)),  # drop duplicates, keep order
        complete=_opt_int(top.get(b"complete")),
        incomplete=_opt_int(top.get(b"incomplete")),
        tracker_id=tracker_id if isinstance(tracker_id, bytes) and tracker_id else None,
        warning=_text(warning) if isinstance(warning, bytes) else None,
        extra={k: v for k, v in top.items() if k not in _KNOWN_KEYS},
    )


def parse_scrape_response(body: bytes, url: str = "tracker") -> dict[bytes, ScrapeStats]:
    where = f"tracker {redact(url)}" if "://" in url else url
    top = _decode_dict(body, where)
    failure = top.get(b"failure reason")
    if isinstance(failure, bytes):
        reason = _text(failure)
        raise TrackerError(f"{where} refused the scrape: {reason}", failure_reason=reason)
    files = top.get(b"files")
    if not isinstance(files, dict):
        raise TrackerError(f"{where} sent a scrape reply without 'files'")
    out: dict[bytes, ScrapeStats] = {}
    for info_hash, stats in files.items():
        if len(info_hash) == 20 and isinstance(stats, dict):
            out[info_hash] = ScrapeStats(
                _opt_int(stats.get(b"complete")) or 0,
                _opt_int(stats.get(b"downloaded")) or 0,
                _opt_int(stats.get(b"incomplete")) or 0,
            )
    return out


def _decode_dict(body: bytes, where: str) -> dict[bytes, bencode.Value]:
    try:
        # some trackers end the body with a newline; nothing else may follow
        value = bencode.decode(body.rstrip(b"\r\n\t "), max_string=MAX_BODY)
    except DecodeError as exc:
        raise TrackerError(f"{where} sent a reply that is not valid bencoding ({exc})") from None
    if not isinstance(value, dict):
        raise TrackerError(f"{where} sent a reply that is not a dictionary")
    return value


def _parse_peers(raw: object, size: int, where: str) -> list[tuple[str, int]]:
    if isinstance(raw, bytes):
        if len(raw) % size:
            raise TrackerError(f"{where} sent a compact peer list of {len(raw)} bytes")
        fmt = "!4sH" if size == 6 else "!16sH"
        peers = []
        for addr, port in struct.iter_unpack(fmt, raw):
            if port:
                peers.append((str(ipaddress.ip_address(addr)), port))
        return peers
    if isinstance(raw, list):
        return [p for p in map(_dict_peer, raw) if p is not None]
    raise TrackerError(f"{where} sent a peer list that is neither a string nor a list")


def _dict_peer(entry: object) -> tuple[str, int] | None:
    """One BEP 3 dictionary-model peer; entries that make no sense are skipped."""
    if not isinstance(entry, dict):
        return None
    ip, port = entry.get(b"ip"), entry.get(b"port")
    if not isinstance(ip, bytes) or not isinstance(port, int) or not 0 < port < 65536:
        return None
    text = ip.decode("ascii", "replace")
    try:
        return str(ipaddress.ip_address(text)), port
    except ValueError:
        pass
    # BEP 3 allows a DNS name here
    ok = 0 < len(text) <= 253 and all(c.isascii() and (c.isalnum() or c in "-.") for c in text)
    return (text, port) if ok else None


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")[:500]


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
    body = await http_get(_with_query(target, query), timeout=timeout)
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
