"""Announce/scrape parsing and responses, fed raw bytes (no sockets)."""

from __future__ import annotations

from urllib.parse import quote_from_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.core import bencode
from roost.core import tracker_server_codec as p

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
        "info_hash": IH,
        "peer_id": PID,
        "port": 6881,
        "uploaded": 1,
        "downloaded": 2,
        "left": 3,
    }
    params.update(extra)
    return q(**params)


def test_every_bep3_parameter_is_parsed() -> None:
    req = p.parse_announce(
        base(
            event="started",
            compact=0,
            numwant=7,
            no_peer_id=1,
            key="abc",
            trackerid="t1",
            ip="10.1.2.3",
            location="rack-7",
        )
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


@pytest.mark.parametrize("raw", [b"% 1%2 ", b"%\t1", b"%1 ", b"%zz%00", b"%\xff\xff"])
def test_malformed_escapes_are_refused(raw: bytes) -> None:
    with pytest.raises(p.TrackerRequestError, match="percent-encoding"):
        p.unquote(raw)


def test_escapes_in_any_case() -> None:
    assert p.unquote(b"%aF%Af%af%AF%0a") == b"\xaf" * 4 + b"\n"
    raw = base().replace(b"info_hash=", b"x=") + b"&info_hash=" + b"%aB" * 20
    assert p.parse_announce(raw).info_hash == b"\xab" * 20


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.lists(st.sampled_from(["lower", "upper", "mixed"])))
def test_unquote_inverts_any_percent_encoding(raw: bytes, cases: list[str]) -> None:
    encoded = b"".join(
        b"%"
        + (
            f"{c:02x}".encode()
            if (cases[i % len(cases)] if cases else "lower") == "lower"
            else f"{c:02X}".encode()
            if cases[i % len(cases)] == "upper"
            else f"{c:02x}"[0].encode() + f"{c:02X}"[1].encode()
        )
        for i, c in enumerate(raw)
    )
    assert p.unquote(encoded) == raw


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
@given(
    st.binary(min_size=20, max_size=20),
    st.binary(min_size=20, max_size=20),
    st.integers(1, 65535),
    st.integers(0, 2**63 - 1),
)
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
        p.announce_response(
            [v4, v6],
            interval=5,
            min_interval=2,
            complete=1,
            incomplete=1,
            compact=True,
            no_peer_id=False,
            extra={"roost.expected": 4},
        )
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


_addr4 = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 65535))
_addr6 = st.tuples(st.integers(0, 2**128 - 1), st.integers(1, 65535))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(_addr4.map(lambda a: (4, a)), _addr6.map(lambda a: (6, a))), max_size=30),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.dictionaries(
        st.sampled_from(["roost.expected", "roost.complete_peers", "x.other"]),
        st.integers(0, 10**6),
    ),
    st.binary(max_size=8),
)
def test_fast_announce_encoding_matches_the_generic_codec(
    addrs: list[tuple[int, tuple[int, int]]],
    complete: int,
    incomplete: int,
    extra: dict[str, int],
    trackerid: bytes,
) -> None:
    import ipaddress

    peers = []
    for version, (number, port) in addrs:
        ip = str(ipaddress.IPv4Address(number) if version == 4 else ipaddress.IPv6Address(number))
        ip = p.normalize_ip(ipaddress.ip_address(ip))
        peers.append(p.PeerEntry(b"i" * 20, ip, port, p.compact_peer(ip, port)))
    got = p.announce_response(
        peers,
        interval=5,
        min_interval=2,
        complete=complete,
        incomplete=incomplete,
        compact=True,
        no_peer_id=False,
        trackerid=trackerid,
        extra=extra,
    )
    want: dict[bytes, object] = {
        b"interval": 5,
        b"min interval": 2,
        b"complete": complete,
        b"incomplete": incomplete,
        b"peers": b"".join(e.compact for e in peers if not e.is_v6),
        **{k.encode(): v for k, v in extra.items()},
    }
    six = b"".join(e.compact for e in peers if e.is_v6)
    if six:
        want[b"peers6"] = six
    if trackerid:
        want[b"tracker id"] = trackerid
    assert got == bencode.encode(want)


_QUERYISH = st.text(alphabet="%&=+aAbBfF0129_xinfohashperidportleftnumwantevent", max_size=300)


@settings(max_examples=500, deadline=None)
@given(_QUERYISH, st.sampled_from([b"", base() + b"&", b"info_hash=" + b"%aB" * 20 + b"&"]))
def test_fuzz_queryish_input_never_breaks_the_tracker(tail: str, head: bytes) -> None:
    """Through the whole pure tracker: every input gets a bencoded reply, never an exception."""
    from roost.core.tracker_swarm import SwarmRecord, Tracker, TrackerPolicy

    tracker = Tracker(TrackerPolicy())
    tracker.register(SwarmRecord(IH, "fuzz-token-000000000"))
    for query in (head + tail.encode(), tail.encode()):
        outcome = tracker.announce("fuzz-token-000000000", query, "10.0.0.1", 0.0)
        assert isinstance(bencode.decode(outcome.body), dict)
        outcome = tracker.scrape("fuzz-token-000000000", query)
        assert isinstance(bencode.decode(outcome.body), dict)
