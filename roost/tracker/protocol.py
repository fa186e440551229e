"""Tracker wire protocol: announce and scrape queries in, bencoded bytes out. Pure.

Theory of operation. `info_hash` and `peer_id` are 20 raw bytes sent
percent-encoded, so a query is parsed from the raw request-target bytes, never
from a str that a framework already decoded (which would mangle bytes that are
not UTF-8). Parsing is strict and capped: the query length, the number of
parameters and every value are bounded before anything is allocated from
them, and every problem becomes a `TrackerRequestError` whose message is the
`failure reason` the client gets (BEP 3). Nothing here raises anything else
on any input (a property test checks it).

Responses: compact peer strings (BEP 23) in `peers` for IPv4 and `peers6` for
IPv6 (BEP 7); the dictionary model when the client asks for compact=0; scrape
files per BEP 48. Extra keys (`roost.expected`, `roost.complete_peers`) ride
along; standard clients ignore keys they do not know.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from roost import bencode

MAX_QUERY = 4096  # longest legitimate announce is ~400 bytes; a generous cap
MAX_PARAMS = 64
MAX_SCRAPE_HASHES = 64
MAX_NUMWANT = 200  # hard ceiling; the tracker may clamp lower (config)
DEFAULT_NUMWANT = 50
MAX_COUNTER = 2**63 - 1  # uploaded/downloaded/left fit a signed 64-bit int
MAX_SHORT = 256  # key, trackerid, location, ip text

EVENTS = frozenset({"", "started", "completed", "stopped", "paused"})
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_HEX = {f"{i:02x}".encode(): bytes([i]) for i in range(256)}
_HEX.update({f"{i:02X}".encode(): bytes([i]) for i in range(256)})
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")


class TrackerRequestError(ValueError):
    """An invalid request; str(e) is the `failure reason` sent to the client.

    `kind` classifies it for metrics: malformed, secret, unregistered, ...
    """

    def __init__(self, reason: str, kind: str = "malformed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    """One validated announce. `ip` is the client's claim, honoured only by policy."""

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: str = ""
    compact: bool = True
    numwant: int = DEFAULT_NUMWANT
    no_peer_id: bool = False
    key: bytes = b""
    trackerid: bytes = b""
    ip: str | None = None
    location: str | None = None


def unquote(raw: bytes) -> bytes:
    """Strict percent-decoding to bytes; '+' is a space (form encoding)."""
    if b"%" not in raw:
        return raw.replace(b"+", b" ") if b"+" in raw else raw
    if _BAD_ESCAPE.search(raw):
        raise TrackerRequestError("malformed percent-encoding in query")
    parts = raw.replace(b"+", b" ").split(b"%")
    out = [parts[0]]
    for part in parts[1:]:
        out.append(_HEX[part[:2]])
        out.append(part[2:])
    return b"".join(out)


def parse_query(raw: bytes) -> dict[bytes, list[bytes]]:
    """Split a raw query string into decoded name -> values, within caps."""
    if len(raw) > MAX_QUERY:
        raise TrackerRequestError(f"query too long (over {MAX_QUERY} bytes)")
    params: dict[bytes, list[bytes]] = {}
    if not raw:
        return params
    pieces = raw.split(b"&")
    if len(pieces) > MAX_PARAMS:
        raise TrackerRequestError(f"too many query parameters (over {MAX_PARAMS})")
    for piece in pieces:
        if not piece:
            continue
        name, _, value = piece.partition(b"=")
        if b"%" in value or b"+" in value:
            value = unquote(value)
        if b"%" in name or b"+" in name:
            name = unquote(name)
        params.setdefault(name, []).append(value)
    return params


def _one(params: Mapping[bytes, list[bytes]], name: bytes) -> bytes | None:
    values = params.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise TrackerRequestError(f"parameter {name.decode()} given more than once")
    return values[0]


def _required(params: Mapping[bytes, list[bytes]], name: bytes) -> bytes:
    value = _one(params, name)
    if value is None:
        raise TrackerRequestError(f"missing {name.decode()}")
    return value


def _int(params: Mapping[bytes, list[bytes]], name: bytes, default: int | None = None) -> int:
    value = _one(params, name)
    if value is None:
        if default is None:
            raise TrackerRequestError(f"missing {name.decode()}")
        return default
    # isdigit on bytes is ASCII-only; the length cap stops huge-number DoS
    if not value.isdigit() or len(value) > 19:
        raise TrackerRequestError(f"invalid {name.decode()}: not a non-negative integer")
    number = int(value)
    if number > MAX_COUNTER:
        raise TrackerRequestError(f"invalid {name.decode()}: too large")
    return number


def _flag(params: Mapping[bytes, list[bytes]], name: bytes, default: bool) -> bool:
    value = _one(params, name)
    if value is None or value == b"":
        return default
    if value not in (b"0", b"1"):
        raise TrackerRequestError(f"invalid {name.decode()}: must be 0 or 1")
    return value == b"1"


def _hash20(value: bytes, name: str) -> bytes:
    if len(value) != 20:
        raise TrackerRequestError(f"invalid {name}: must be 20 bytes, got {len(value)}")
    return value


def _short(params: Mapping[bytes, list[bytes]], name: bytes) -> bytes:
    value = _one(params, name) or b""
    if len(value) > MAX_SHORT:
        raise TrackerRequestError(f"invalid {name.decode()}: too long")
    return value


def parse_ip(text: bytes) -> str:
    """A literal IPv4/IPv6 address (no host names: we never resolve)."""
    try:
        addr = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise TrackerRequestError("invalid ip: must be a literal IPv4 or IPv6 address") from None
    return normalize_ip(addr)


def normalize_ip(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Canonical text; an IPv4-mapped IPv6 address becomes plain IPv4."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def parse_location(text: bytes) -> str:
    try:
        label = text.decode("ascii")
    except UnicodeDecodeError:
        label = ""
    if not _LABEL.match(label):
        raise TrackerRequestError("invalid location: 1-64 of [A-Za-z0-9._:-]")
    return label


def parse_announce(raw_query: bytes) -> AnnounceRequest:
    """Validate an announce query (BEP 3 + BEP 23 + BEP 7 + our `location`)."""
    params = parse_query(raw_query)
    info_hash = _hash20(_required(params, b"info_hash"), "info_hash")
    peer_id = _hash20(_required(params, b"peer_id"), "peer_id")
    port = _int(params, b"port")
    if not 1 <= port <= 65535:
        raise TrackerRequestError("invalid port: must be 1-65535")
    event = (_one(params, b"event") or b"").decode("ascii", "replace")
    if event not in EVENTS:
        raise TrackerRequestError("invalid event")
    ip_raw = _short(params, b"ip")
    location_raw = _short(params, b"location")
    return AnnounceRequest(
        info_hash=info_hash,
        peer_id=peer_id,
        port=port,
        uploaded=_int(params, b"uploaded", 0),
        downloaded=_int(params, b"downloaded", 0),
        left=_int(params, b"left"),
        event="" if event == "paused" else event,  # BEP 21 "paused" is a regular update
        compact=_flag(params, b"compact", True),
        numwant=min(_int(params, b"numwant", DEFAULT_NUMWANT), MAX_NUMWANT),
        no_peer_id=_flag(params, b"no_peer_id", False),
        key=_short(params, b"key"),
        trackerid=_short(params, b"trackerid"),
        ip=parse_ip(ip_raw) if ip_raw else None,
        location=parse_location(location_raw) if location_raw else None,
    )


def parse_scrape(raw_query: bytes) -> list[bytes]:
    """The info-hashes a scrape asks about (BEP 48); empty means "this swarm"."""
    params = parse_query(raw_query)
    hashes = params.get(b"info_hash", [])
    if len(hashes) > MAX_SCRAPE_HASHES:
        raise TrackerRequestError(f"too many info_hash values (over {MAX_SCRAPE_HASHES})")
    return [_hash20(h, "info_hash") for h in hashes]


# --- responses -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """What a response needs of one peer. `compact` is 6 (v4) or 18 (v6) bytes."""

    peer_id: bytes
    ip: str
    port: int
    compact: bytes

    @property
    def is_v6(self) -> bool:
        return len(self.compact) == 18


def compact_peer(ip: str, port: int) -> bytes:
    """BEP 23 / BEP 7 compact form: address bytes then big-endian port."""
    return ipaddress.ip_address(ip).packed + port.to_bytes(2, "big")


def _encode_flat(items: Iterable[tuple[bytes, int | bytes]]) -> bytes:
    """Bencode a flat dict of int/bytes values; the hot path skips the generic codec."""
    out = [b"d"]
    for key, value in sorted(items):
        out.append(b"%d:%s" % (len(key), key))
        if isinstance(value, int):
            out.append(b"i%de" % value)
        else:
            out.append(b"%d:%s" % (len(value), value))
    out.append(b"e")
    return b"".join(out)


def failure(reason: str) -> bytes:
    return _encode_flat([(b"failure reason", reason.encode("utf-8", "replace"))])


def announce_response(
    peers: Sequence[PeerEntry],
    *,
    interval: int,
    min_interval: int,
    complete: int,
    incomplete: int,
    compact: bool,
    no_peer_id: bool,
    trackerid: bytes = b"",
    extra: Mapping[str, int] | None = None,
) -> bytes:
    """A successful announce reply; v6 peers go to `peers6` in compact mode."""
    body: dict[bytes, Any] = {
        b"interval": interval,
        b"min interval": min_interval,
        b"complete": complete,
        b"incomplete": incomplete,
    }
    if trackerid:
        body[b"tracker id"] = trackerid
    for name, value in (extra or {}).items():
        body[name.encode()] = value
    if not compact:
        body[b"peers"] = [_peer_dict(p, no_peer_id) for p in peers]
        return bencode.encode(body)
    blob = b"".join([p.compact for p in peers])
    if len(blob) == 6 * len(peers):  # the common case: IPv4 only
        body[b"peers"] = blob
    else:
        body[b"peers"] = b"".join([p.compact for p in peers if len(p.compact) == 6])
        body[b"peers6"] = b"".join([p.compact for p in peers if len(p.compact) == 18])
    return _encode_flat(body.items())


def _peer_dict(peer: PeerEntry, no_peer_id: bool) -> dict[bytes, Any]:
    entry: dict[bytes, Any] = {b"ip": peer.ip.encode(), b"port": peer.port}
    if not no_peer_id:
        entry[b"peer id"] = peer.peer_id
    return entry


def scrape_response(
    files: Iterable[tuple[bytes, int, int, int]], min_interval: int | None = None
) -> bytes:
    """BEP 48: files = (info_hash, complete, downloaded, incomplete) tuples."""
    body: dict[bytes, Any] = {
        b"files": {
            ih: {b"complete": c, b"downloaded": d, b"incomplete": i} for ih, c, d, i in files
        }
    }
    if min_interval is not None:
        body[b"flags"] = {b"min_request_interval": min_interval}
    return bencode.encode(body)
