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
from typing import Any, NamedTuple

from roost.core import bencode

MAX_QUERY = 4096  # longest legitimate announce is ~400 bytes; a generous cap
MAX_PARAMS = 64
MAX_SCRAPE_HASHES = 64
MAX_NUMWANT = 200  # hard ceiling; the tracker may clamp lower (config)
DEFAULT_NUMWANT = 50
MAX_COUNTER = 2**63 - 1  # uploaded/downloaded/left fit a signed 64-bit int
MAX_SHORT = 256  # key, trackerid, location, ip text

EVENTS = frozenset({"", "started", "completed", "stopped", "paused"})
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_HEXDIGITS = b"0123456789abcdefABCDEF"
#: every two-hex-digit escape in any mix of case ("aF" too) -> its byte
_HEX = {bytes([a, b]): bytes([int(bytes([a, b]), 16)]) for a in _HEXDIGITS for b in _HEXDIGITS}
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")


class TrackerRequestError(ValueError):
    """An invalid request; str(e) is the `failure reason` sent to the client.

    `kind` classifies it for metrics: malformed, secret, unregistered, ...
    """

    def __init__(self, reason: str, kind: str = "malformed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class AnnounceRequest(NamedTuple):
    """One validated announce (immutable; a NamedTuple because it is built
    on every announce). `ip` is the client's claim, honoured only by policy."""

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
    n = len(raw) // 3
    if len(raw) == 3 * n and raw[::3] == b"%" * n:  # fully escaped (aria2c, wrk): C speed
        try:
            decoded = bytes.fromhex(raw.replace(b"%", b"").decode("ascii"))
        except ValueError:
            decoded = b""
        if len(decoded) != n:  # fromhex skips whitespace: "% 1" must not pass as one byte
            raise TrackerRequestError("malformed percent-encoding in query")
        return decoded
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


_ANNOUNCE_PARAMS = frozenset(
    b"info_hash peer_id port uploaded downloaded left event compact numwant no_peer_id "
    b"key trackerid ip location".split()
)


def _single_values(raw: bytes) -> dict[bytes, bytes]:
    """parse_query for announces: one value per known name (a repeat is an error)."""
    if len(raw) > MAX_QUERY:
        raise TrackerRequestError(f"query too long (over {MAX_QUERY} bytes)")
    pieces = raw.split(b"&") if raw else []
    if len(pieces) > MAX_PARAMS:
        raise TrackerRequestError(f"too many query parameters (over {MAX_PARAMS})")
    params: dict[bytes, bytes] = {}
    for piece in pieces:
        if not piece:
            continue
        name, _, value = piece.partition(b"=")
        if b"%" in value or b"+" in value:
            value = unquote(value)
        if b"%" in name or b"+" in name:
            name = unquote(name)
        if name in params and name in _ANNOUNCE_PARAMS:
            raise TrackerRequestError(f"parameter {name.decode()} given more than once")
        params[name] = value
    return params


def _int(params: Mapping[bytes, bytes], name: bytes, default: int | None = None) -> int:
    value = params.get(name)
    if value is None:
        if default is None:
            raise TrackerRequestError(f"missing {name.decode()}")
        return default
    # isdigit on bytes is ASCII-only; the length cap stops huge-number DoS
    if len(value) > 19 or not value.isdigit():
        raise TrackerRequestError(f"invalid {name.decode()}: not a non-negative integer")
    number = int(value)
    if number > MAX_COUNTER:
        raise TrackerRequestError(f"invalid {name.decode()}: too large")
    return number


def _flag(params: Mapping[bytes, bytes], name: bytes, default: bool) -> bool:
    value = params.get(name)
    if not value:
        return default
    if value not in (b"0", b"1"):
        raise TrackerRequestError(f"invalid {name.decode()}: must be 0 or 1")
    return value == b"1"


def _hash20(value: bytes | None, name: str) -> bytes:
    if value is None:
        raise TrackerRequestError(f"missing {name}")
    if len(value) != 20:
        raise TrackerRequestError(f"invalid {name}: must be 20 bytes, got {len(value)}")
    return value


def _short(params: Mapping[bytes, bytes], name: bytes) -> bytes:
    value = params.get(name, b"")
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
    params = _single_values(raw_query)
    info_hash = _hash20(params.get(b"info_hash"), "info_hash")
    peer_id = _hash20(params.get(b"peer_id"), "peer_id")
    port = _int(params, b"port")
    if not 1 <= port <= 65535:
        raise TrackerRequestError("invalid port: must be 1-65535")
    event = params.get(b"event", b"").decode("ascii", "replace")
    if event not in EVENTS:
        raise TrackerRequestError("invalid event")
    ip_raw = _short(params, b"ip")
    location_raw = _short(params, b"location")
    return AnnounceRequest(
        info_hash,
        peer_id,
        port,
        _int(params, b"uploaded", 0),
        _int(params, b"downloaded", 0),
        _int(params, b"left"),
        "" if event == "paused" else event,  # BEP 21 "paused" is a regular update
        _flag(params, b"compact", True),
        min(_int(params, b"numwant", DEFAULT_NUMWANT), MAX_NUMWANT),
        _flag(params, b"no_peer_id", False),
        _short(params, b"key"),
        _short(params, b"trackerid"),
        parse_ip(ip_raw) if ip_raw else None,
        parse_location(location_raw) if location_raw else None,
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
    compact_peers: Sequence[bytes] | None = None,
) -> bytes:
    """A successful announce reply; v6 peers go to `peers6` in compact mode.

    `compact_peers`, when given, are the peers' compact forms already (the
    tracker keeps them ready), and `peers` is then only used for compact=0.
    """
    extras = sorted((k.encode(), v) for k, v in (extra or {}).items())
    if not compact or trackerid or any(not k.startswith(b"roost.") for k, _ in extras):
        return _generic_response(
            peers,
            interval,
            min_interval,
            complete,
            incomplete,
            compact,
            no_peer_id,
            trackerid,
            extras,
            compact_peers,
        )
    comps = [p.compact for p in peers] if compact_peers is None else compact_peers
    blob = b"".join(comps)
    six = b""
    if len(blob) != 6 * len(comps):  # some IPv6 peers: split them out (BEP 7)
        blob = b"".join([c for c in comps if len(c) == 6])
        six = b"".join([c for c in comps if len(c) == 18])
    # the hot path: keys in bencode (sorted) order, written directly
    out = [
        b"d8:completei%de10:incompletei%de8:intervali%de12:min intervali%de5:peers%d:"
        % (complete, incomplete, interval, min_interval, len(blob)),
        blob,
    ]
    if six:
        out.append(b"6:peers6%d:" % len(six))
        out.append(six)
    out.extend(b"%d:%si%de" % (len(k), k, v) for k, v in extras)
    out.append(b"e")
    return b"".join(out)


def _generic_response(
    peers: Sequence[PeerEntry],
    interval: int,
    min_interval: int,
    complete: int,
    incomplete: int,
    compact: bool,
    no_peer_id: bool,
    trackerid: bytes,
    extras: list[tuple[bytes, int]],
    compact_peers: Sequence[bytes] | None,
) -> bytes:
    body: dict[bytes, Any] = {
        b"interval": interval,
        b"min interval": min_interval,
        b"complete": complete,
        b"incomplete": incomplete,
        **dict(extras),
    }
    if trackerid:
        body[b"tracker id"] = trackerid
    if compact:
        comps = [p.compact for p in peers] if compact_peers is None else compact_peers
        body[b"peers"] = b"".join([c for c in comps if len(c) == 6])
        six = b"".join([c for c in comps if len(c) == 18])
        if six:
            body[b"peers6"] = six
    else:
        body[b"peers"] = [_peer_dict(p, no_peer_id) for p in peers]
    return bencode.encode(body)


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
