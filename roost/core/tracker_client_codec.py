"""The client half of the HTTP tracker protocol (BEP 3, 7, 23, 48), pure.

Builds announce and scrape URLs and validates replies: a tracker is a remote
party, so every reply is checked and every failure becomes a TrackerError
carrying one readable sentence. The server half is tracker_server_codec; the
I/O (one HTTP GET per request) lives in roost.engine.tracker_client.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from urllib.parse import quote, quote_from_bytes, urlsplit

from roost.core import bencode
from roost.errors import DecodeError, RoostError

MAX_BODY = 2 * 1024 * 1024  # the largest reply read, and so the longest string in it
DEFAULT_INTERVAL = 1800  # when a reply has none (BEP 3 makes it mandatory)
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
    return with_query(url, "&".join(f"{k}={v}" for k, v in params))


def scrape_url(announce: str) -> str | None:
    """BEP 48: replace the last path component 'announce...' by 'scrape...'."""
    parts = urlsplit(announce)
    head, _, last = parts.path.rpartition("/")
    if not last.startswith("announce"):
        return None
    path = f"{head}/scrape{last[len('announce') :]}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{path}{query}"


def with_query(url: str, query: str) -> str:
    base = url.split("#", 1)[0]
    sep = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        sep = ""
    return f"{base}{sep}{query}"


# -- replies -----------------------------------------------------------------


def parse_announce_response(body: bytes, url: str = "tracker") -> AnnounceResponse:
    """Validate a bencoded announce reply. Raises TrackerError."""
    where = f"tracker {redact(url)}" if "://" in url else url
    top = _decode_dict(body, where)
    failure = top.get(b"failure reason")
    if failure is not None:
        reason = text(failure) if isinstance(failure, bytes) else repr(failure)
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
        warning=text(warning) if isinstance(warning, bytes) else None,
        extra={k: v for k, v in top.items() if k not in _KNOWN_KEYS},
    )


def parse_scrape_response(body: bytes, url: str = "tracker") -> dict[bytes, ScrapeStats]:
    where = f"tracker {redact(url)}" if "://" in url else url
    top = _decode_dict(body, where)
    failure = top.get(b"failure reason")
    if isinstance(failure, bytes):
        reason = text(failure)
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


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")[:500]
