"""Announce/scrape parsing and responses, fed raw bytes (no sockets)."""

from __future__ import annotations

from urllib.parse import quote_from_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost import bencode
from roost.tracker import protocol as p

IH = bytes(range(20))
PID = b"-RO0001-" + bytes(range(200, 212))


def q(**params: bytes | str | int) -> bytes:
    parts = []
    for name, value in params.items():
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(f"{name}={quote_from_bytes(raw, safe='')}")
    return "&".join(parts).encode()


def base(**extra: bytes | str | int) -> bytes:
    params: dict[str, bytes | str | int] = {
        "info_hash": IH, "peer_id": PID, "port": 6881,
        "uploaded": 1, "downloaded": 2, "left": 3,
    }
    params.update(extra)
    return q(**params)


def test_every_bep3_parameter_is_parsed() -> None:
    req = p.parse_announce(
        base(event="started", compact=0, numwant=7, no_peer_id=1, key="abc",
             trackerid="t1", ip="10.1.2.3", location="rack-7")
    )
    assert (req.info_hash, req.peer_id, req.port) == (IH, PID, 6881)
    assert (req.uploaded, req.downloaded, req.left) == (1, 2, 3)
    assert req.event == "started" and not req.compact and req.numwant == 7
    assert req.no_peer_id and req.key == b"abc" and req.trackerid == b"t1"
    assert req.ip == "10.1.2.3" and req.location == "rack-7"


def test_defaults_compact_and_numwant() -> None:
    req = p.parse_announce(base())
    assert req.compact and req.numwant == p.DEFAULT_NUMWANT and req.event == ""


def test_raw_binary_bytes_survive_percent_decoding() -> None:
    ih = bytes([0, 0x25, 0x26, 0x3D, 0x2B, 0xFF] + [0x80] * 14)  # %, &, =, +, non-UTF-8
    assert p.parse_announce(base(info_hash=ih)).info_hash == ih


def test_numwant_is_clamped() -> None:
    assert p.parse_announce(base(numwant=10**9)).numwant == p.MAX_NUMWANT


def test_ipv6_ip_parameter_and_mapped_v4() -> None:
    assert p.parse_announce(base(ip="2001:db8::1")).ip == "2001:db8::1"
    assert p.parse_announce(base(ip="::ffff:10.0.0.1")).ip == "10.0.0.1"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (b"", "missing info_hash"),
        (base(info_hash=b"short"), "info_hash: must be 20 bytes, got 5"),
        (base(info_hash=b"x" * 21), "must be 20 bytes"),
        (base(peer_id=b"x" * 19), "peer_id: must be 20 bytes"),
        (base(port=0), "invalid port"),
        (base(port=65536), "invalid port"),
        (base(port=-1), "invalid port"),
        (base(port="12a"), "invalid port"),
        (base(left="1e9"), "invalid left"),
        (base(uploaded="9" * 30), "invalid uploaded"),
        (base(uploaded=2**63), "too large"),
        (base(event="exploded"), "invalid event"),
        (base(compact=2), "invalid compact"),
        (base(ip="example.com"), "invalid ip"),
        (base(location="bad label!"), "invalid location"),
        (base(key="k" * 300), "invalid key: too long"),
        (base() + b"&port=1", "port given more than once"),
        (base() + b"&x=%zz", "malformed percent-encoding"),
        (base() + b"&x=%4", "malformed percent-encoding"),
        (base() + b"&pad=" + b"a" * p.MAX_QUERY, "query too long"),
        (b"&".join([b"a=1"] * (p.MAX_PARAMS + 1)), "too many query parameters"),
    ],
)
def test_invalid_announces_get_a_reason(query: bytes, reason: str) -> None:
    with pytest.raises(p.TrackerRequestError, match=reason):
        p.parse_announce(query)


def test_left_is_required() -> None:
    query = base().replace(b"&left=3", b"")
    with pytest.raises(p.TrackerRequestError, match="missing left"):
        p.parse_announce(query)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_parse_never_raises_anything_else(raw: bytes) -> None:
    for parse in (p.parse_announce, p.parse_scrape):
        try:
            parse(raw)
        except p.TrackerRequestError as exc:
            assert exc.reason
            assert bencode.decode(p.failure(exc.reason))[b"failure reason"]  # type: ignore[index]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=20, max_size=20), st.binary(min_size=20, max_size=20),
       st.integers(1, 65535), st.integers(0, 2**63 - 1))
def test_fuzz_valid_announces_roundtrip(ih: bytes, pid: bytes, port: int, left: int) -> None:
    req = p.parse_announce(base(info_hash=ih, peer_id=pid, port=port, left=left))
    assert (req.info_hash, req.peer_id, req.port, req.left) == (ih, pid, port, left)


def test_scrape_hashes() -> None:
    other = b"\xff" * 20
    assert p.parse_scrape(q(info_hash=IH) + b"&" + q(info_hash=other)) == [IH, other]
    assert p.parse_scrape(b"") == []
    with pytest.raises(p.TrackerRequestError, match="20 bytes"):
        p.parse_scrape(q(info_hash=b"abc"))


def test_compact_v4_and_v6_peers() -> None:
    v4 = p.PeerEntry(b"a" * 20, "10.0.0.1", 6881, p.compact_peer("10.0.0.1", 6881))
    v6 = p.PeerEntry(b"b" * 20, "2001:db8::2", 443, p.compact_peer("2001:db8::2", 443))
    assert v4.compact == bytes([10, 0, 0, 1, 0x1A, 0xE1])
    assert len(v6.compact) == 18 and v6.compact[-2:] == b"\x01\xbb"
    body = bencode.decode(
        p.announce_response([v4, v6], interval=5, min_interval=2, complete=1, incomplete=1,
                            compact=True, no_peer_id=False, extra={"roost.expected": 4})
    )
    assert isinstance(body, dict)
    assert body[b"peers"] == v4.compact and body[b"peers6"] == v6.compact
    assert body[b"interval"] == 5 and body[b"min interval"] == 2
    assert body[b"roost.expected"] == 4


def test_dictionary_model_with_and_without_peer_id() -> None:
    v4 = p.PeerEntry(b"a" * 20, "10.0.0.1", 6881, p.compact_peer("10.0.0.1", 6881))
    kw = {"interval": 5, "min_interval": 2, "complete": 0, "incomplete": 1, "compact": False}
    full = bencode.decode(p.announce_response([v4], no_peer_id=False, **kw))  # type: ignore[arg-type]
    bare = bencode.decode(p.announce_response([v4], no_peer_id=True, **kw))  # type: ignore[arg-type]
    assert full[b"peers"] == [{b"ip": b"10.0.0.1", b"port": 6881, b"peer id": b"a" * 20}]  # type: ignore[index]
    assert bare[b"peers"] == [{b"ip": b"10.0.0.1", b"port": 6881}]  # type: ignore[index]


def test_scrape_response_shape() -> None:
    body = bencode.decode(p.scrape_response([(IH, 3, 4, 5)], 2))
    assert body == {
        b"files": {IH: {b"complete": 3, b"downloaded": 4, b"incomplete": 5}},
        b"flags": {b"min_request_interval": 2},
    }
