"""Tracker client against a real (tiny, hostile when asked) HTTP server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.core import bencode
from roost.core.tracker_client_codec import (
    AnnounceRequest,
    AnnounceResponse,
    TrackerError,
    announce_url,
    parse_announce_response,
    scrape_url,
)
from roost.engine.tracker_client import (
    MAX_HEADER,
    TrackerClient,
    _read_body,
    _read_head,
    announce,
    scrape,
)

T = TypeVar("T")
# bytes that break naive encoders: '&', '=', '+', '%', space, NUL, non-UTF-8
INFO_HASH = b"&=+% \x00\xff\xfe/?#abcdefghi"
PEER_ID = b"-RO0001-" + bytes(range(200, 212))

Reply = Callable[[str], Awaitable[bytes] | bytes]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def http(body: bytes, status: str = "200 OK", headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


def chunked(body: bytes, size: int = 7) -> bytes:
    parts = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
    for i in range(0, len(body), size):
        chunk = body[i : i + size]
        parts.append(f"{len(chunk):x};ext=1\r\n".encode() + chunk + b"\r\n")
    parts.append(b"0\r\nX-Trailer: yes\r\n\r\n")
    return b"".join(parts)


def query_of(target: str) -> dict[str, bytes]:
    """Raw-bytes query parameters, decoded the way a tracker must."""
    out: dict[str, bytes] = {}
    for pair in urlsplit(target).query.split("&"):
        key, _, value = pair.partition("=")
        out[key] = unquote_to_bytes(value)
    return out


@dataclass
class FakeTracker:
    """Serves `reply(request_target)`; raw bytes are written as-is, then closed."""

    reply: Reply
    targets: list[str] = field(default_factory=list)
    server: asyncio.base_events.Server | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/announce"

    async def __aenter__(self) -> FakeTracker:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ")[1].decode("ascii")
            self.targets.append(target)
            out = self.reply(target)
            data = out if isinstance(out, bytes) else await out
            writer.write(data)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def compact4(*peers: tuple[str, int]) -> bytes:
    return b"".join(socket.inet_aton(ip) + struct.pack("!H", port) for ip, port in peers)


def compact6(*peers: tuple[str, int]) -> bytes:
    return b"".join(
        socket.inet_pton(socket.AF_INET6, ip) + struct.pack("!H", port) for ip, port in peers
    )


async def do_announce(url: str, timeout: float = 10.0, **kw: Any) -> AnnounceResponse:
    args: dict[str, Any] = dict(
        info_hash=INFO_HASH, peer_id=PEER_ID, port=6881, uploaded=1, downloaded=2, left=3
    )
    args.update(kw)
    return await announce(url, AnnounceRequest(**args), timeout=timeout)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


GOOD = {
    b"interval": 30,
    b"min interval": 5,
    b"complete": 2,
    b"incomplete": 7,
    b"peers": compact4(("10.0.0.1", 6881), ("192.168.1.2", 51413), ("10.0.0.9", 0)),
    b"peers6": compact6(("2001:db8::1", 6881)),
    b"tracker id": b"tid-1",
    b"warning message": b"be nice",
    b"roost.expected": 40,
    b"roost.complete_peers": 12,
    b"x-custom": b"kept",
}


def test_compact_v4_v6_extras_and_raw_byte_encoding() -> None:
    async def main() -> None:
        async with FakeTracker(lambda t: http(bencode.encode(GOOD))) as tr:
            resp = await do_announce(
                tr.url + "?passkey=s3cret",
                event="started",
                key="k1",
                location="rack-12/dc 1",
                numwant=50,
                tracker_id=b"old",
            )
        assert resp.peers == [("10.0.0.1", 6881), ("192.168.1.2", 51413), ("2001:db8::1", 6881)]
        assert (resp.interval, resp.min_interval) == (30, 5)
        assert (resp.complete, resp.incomplete) == (2, 7)
        assert resp.tracker_id == b"tid-1" and resp.warning == "be nice"
        assert (resp.expected_peers, resp.complete_peers) == (40, 12)
        assert resp.extra[b"x-custom"] == b"kept"
        q = query_of(tr.targets[0])
        assert q["info_hash"] == INFO_HASH and q["peer_id"] == PEER_ID
        assert q["passkey"] == b"s3cret"
        assert q["location"] == b"rack-12/dc 1"
        assert q["event"] == b"started" and q["compact"] == b"1" and q["numwant"] == b"50"
        assert (q["port"], q["uploaded"], q["downloaded"], q["left"]) == (
            b"6881",
            b"1",
            b"2",
            b"3",
        )
        assert q["key"] == b"k1" and q["trackerid"] == b"old"
        assert urlsplit(tr.targets[0]).path == "/announce"

    run(main())


def test_roost_extras_absent_are_none() -> None:
    resp = AnnounceResponse(10, None, [], None, None, None, None, {})
    assert resp.expected_peers is None and resp.complete_peers is None


def test_dictionary_peer_model_and_chunked_body() -> None:
    body = bencode.encode(
        {
            b"interval": 60,
            b"peers": [
                {b"ip": b"10.1.2.3", b"port": 7000, b"peer id": b"x" * 20},
                {b"ip": b"::1", b"port": 7001},
                {b"ip": b"seed.example.org", b"port": 7002},
                {b"ip": b"bad host!", b"port": 7003},  # skipped
                {b"ip": b"10.1.2.4", b"port": 0},  # skipped
                {b"ip": b"10.1.2.5"},  # skipped
                b"garbage",  # skipped
            ],
        }
    )

    async def main() -> AnnounceResponse:
        async with FakeTracker(lambda t: chunked(body)) as tr:
            return await do_announce(tr.url, compact=False)

    resp = run(main())
    assert resp.peers == [("10.1.2.3", 7000), ("::1", 7001), ("seed.example.org", 7002)]
    assert resp.min_interval is None and resp.tracker_id is None


def test_failure_reason_becomes_tracker_error() -> None:
    body = bencode.encode({b"failure reason": b"unregistered torrent"})

    async def main() -> None:
        async with FakeTracker(lambda t: http(body)) as tr:
            with pytest.raises(TrackerError, match="unregistered torrent") as info:
                await do_announce(tr.url)
            assert info.value.failure_reason == "unregistered torrent"
            assert "s3cret" not in str(info.value)

    run(main())


def test_non_200_is_an_error_and_shows_a_bencoded_reason() -> None:
    replies = {
        "/a": http(bencode.encode({b"failure reason": b"bad key"}), "400 Bad Request"),
        "/b": http(b"<html>not found</html>", "404 Not Found"),
    }

    async def main() -> None:
        async with FakeTracker(lambda t: replies[urlsplit(t).path]) as tr:
            base = f"http://127.0.0.1:{tr.port}"
            with pytest.raises(TrackerError, match="HTTP 400: bad key"):
                await do_announce(base + "/a")
            with pytest.raises(TrackerError, match=r"HTTP 404$"):
                await do_announce(base + "/b?passkey=s3cret")

    run(main())


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 3145728\r\n\r\nd", id="content-length"),
        pytest.param(chunked(b"x" * (3 << 20), size=1 << 20), id="chunked"),
        pytest.param(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (3 << 20), id="until-close"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: " + b"y" * 100_000 + b"\r\n\r\n", id="headers"),
    ],
)
def test_oversized_replies_are_refused(reply: bytes) -> None:
    async def main() -> None:
        async with FakeTracker(lambda t: reply) as tr:
            with pytest.raises(TrackerError, match=r"larger than|oversized"):
                await do_announce(tr.url)

    run(main())


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (http(b"this is not bencode"), "not valid bencoding"),
        (http(b"li1ei2ee"), "not a dictionary"),
        (http(bencode.encode({b"interval": 5, b"peers": b"12345"})), "compact peer list"),
        (http(bencode.encode({b"interval": -5})), "bad interval"),
        (http(bencode.encode({b"peers": 7})), "neither"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "did not answer HTTP"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nd8:intervali5ee", "mid-reply"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"", "closed the connection early"),
    ],
)
def test_garbage_replies_are_tracker_errors(reply: bytes, match: str) -> None:
    async def main() -> None:
        async with FakeTracker(lambda t: reply) as tr:
            with pytest.raises(TrackerError, match=match):
                await do_announce(tr.url)

    run(main())


def test_trailing_newline_after_bencoding_is_tolerated() -> None:
    async def main() -> AnnounceResponse:
        body = bencode.encode({b"interval": 9, b"peers": b""}) + b"\r\n"
        async with FakeTracker(lambda t: http(body)) as tr:
            return await do_announce(tr.url)

    assert run(main()).interval == 9


def test_slow_server_times_out() -> None:
    async def slow(target: str) -> bytes:
        await asyncio.sleep(5)
        return http(b"")

    async def main() -> None:
        async with FakeTracker(slow) as tr:
            start = time.monotonic()
            with pytest.raises(TrackerError, match="timed out"):
                await do_announce(tr.url, timeout=0.3)
            assert time.monotonic() - start < 2

    run(main())


def test_redirects_are_followed_but_not_forever() -> None:
    body = bencode.encode({b"interval": 11, b"peers": compact4(("1.2.3.4", 5))})

    def reply(target: str) -> bytes:
        path = urlsplit(target).path
        if path == "/announce":
            return http(b"", "302 Found", f"Location: /real?{urlsplit(target).query}\r\n")
        if path == "/loop":
            return http(b"", "301 Moved", "Location: /loop\r\n")
        return http(body)

    async def main() -> None:
        async with FakeTracker(reply) as tr:
            resp = await do_announce(tr.url)
            assert resp.peers == [("1.2.3.4", 5)]
            assert query_of(tr.targets[1])["info_hash"] == INFO_HASH
            with pytest.raises(TrackerError, match="redirected more than 3"):
                await do_announce(f"http://127.0.0.1:{tr.port}/loop")

    run(main())


def test_unreachable_and_unsupported_urls() -> None:
    async def main() -> None:
        with pytest.raises(TrackerError, match="unreachable"):
            await do_announce(f"http://127.0.0.1:{closed_port()}/announce")
        with pytest.raises(TrackerError, match="only http and https"):
            await do_announce("udp://tracker.example:6969/announce")
        with pytest.raises(TrackerError, match="malformed"):
            await do_announce("http://[::1/announce")
        with pytest.raises(TrackerError, match="bad port"):
            await do_announce("http://127.0.0.1:99999/announce")
        with pytest.raises(TrackerError, match=r"invalid host|unreachable"):
            await do_announce("http://" + "a" * 70 + ".invalid/announce")

    run(main())


def test_failover_across_tiers_and_promotion_within_a_tier() -> None:
    body = bencode.encode({b"interval": 42, b"tracker id": b"T-9", b"peers": b""})

    async def main() -> None:
        async with FakeTracker(lambda t: http(body)) as tr:
            dead1 = f"http://127.0.0.1:{closed_port()}/announce"
            dead2 = f"http://127.0.0.1:{closed_port()}/announce"
            client = TrackerClient(
                [[dead1], [dead2, tr.url]],
                info_hash=INFO_HASH,
                peer_id=PEER_ID,
                port=7000,
                location="rack-3",
                rng=random.Random(0),
            )
            assert client.next_announce_in() == 0.0
            resp = await client.announce("started", 0, 0, 100)
            assert resp.interval == 42
            assert client.tiers[1][0] == tr.url  # the one that answered leads its tier
            assert client.tracker_id == b"T-9"
            assert client.next_announce_in() == 42.0
            await client.announce(None, 10, 20, 80)
            q = query_of(tr.targets[-1])
            assert q["trackerid"] == b"T-9" and q["location"] == b"rack-3"
            assert q["key"] == query_of(tr.targets[0])["key"]  # stable across announces
            assert "event" not in q and q["left"] == b"80"

    run(main())


def test_client_advertises_the_configured_address() -> None:
    """Deploy hosts advertise the address configured for them (ip=), which may
    differ from the source address of their route to the tracker."""
    body = bencode.encode({b"interval": 5, b"peers": b""})

    async def main() -> None:
        async with FakeTracker(lambda t: http(body)) as tr:
            with_ip = TrackerClient(
                [[tr.url]], info_hash=INFO_HASH, peer_id=PEER_ID, port=7000, ip="fd00::7"
            )
            await with_ip.announce("started", 0, 0, 100)
            assert query_of(tr.targets[-1])["ip"] == b"fd00::7"
            without = TrackerClient([[tr.url]], info_hash=INFO_HASH, peer_id=PEER_ID, port=7000)
            await without.announce("started", 0, 0, 100)
            assert "ip" not in query_of(tr.targets[-1])

    run(main())


def test_every_tracker_failing_lists_each_and_backs_off() -> None:
    async def main() -> None:
        dead = f"http://127.0.0.1:{closed_port()}/announce"
        client = TrackerClient(
            [[dead], ["udp://x.example:1/announce"]],
            info_hash=INFO_HASH,
            peer_id=PEER_ID,
            port=7000,
            retry_base=2.0,
            retry_max=5.0,
        )
        with pytest.raises(TrackerError) as info:
            await client.announce("started")
        message = str(info.value)
        assert message.startswith("every tracker failed")
        assert "unreachable" in message and "only http and https" in message
        assert client.next_announce_in() == 2.0
        with pytest.raises(TrackerError):
            await client.announce()
        assert client.next_announce_in() == 4.0
        with pytest.raises(TrackerError):
            await client.announce()
        assert client.next_announce_in() == 5.0

    run(main())


def test_hostile_interval_is_clamped() -> None:
    client = TrackerClient([["http://a/announce"]], info_hash=INFO_HASH, peer_id=PEER_ID, port=1)
    client._remember("http://a/announce", AnnounceResponse(0, None, [], None, None, None, None))
    assert client.next_announce_in() == 1.0
    client._remember("http://a/announce", AnnounceResponse(10**12, 7, [], None, None, None, None))
    assert client.next_announce_in() == 6 * 3600.0
    assert client.min_announce_in() == 7.0


def test_announce_url_building() -> None:
    url = announce_url(
        "http://t.example/announce?pk=1#frag",
        AnnounceRequest(b"\x00" * 20, b"A" * 20, port=1, uploaded=-5, downloaded=0, left=0),
    )
    assert url.startswith("http://t.example/announce?pk=1&info_hash=%00%00")
    assert "uploaded=0" in url and "#" not in url
    with pytest.raises(ValueError):
        announce_url("http://t/a", AnnounceRequest(b"x", b"A" * 20, 1, 0, 0, 0))
    with pytest.raises(ValueError):
        announce_url("http://t/a", AnnounceRequest(b"x" * 20, b"A" * 20, 1, 0, 0, 0, "bogus"))


def test_scrape() -> None:
    other = b"\x01" * 20
    body = bencode.encode(
        {
            b"files": {
                INFO_HASH: {b"complete": 3, b"downloaded": 9, b"incomplete": 4},
                other: {b"complete": 1},
            }
        }
    )
    assert scrape_url("http://t/x/announce.php?pk=1") == "http://t/x/scrape.php?pk=1"
    assert scrape_url("http://t/x/a") is None

    async def main() -> None:
        async with FakeTracker(lambda t: http(body)) as tr:
            stats = await scrape(tr.url, [INFO_HASH, other])
            assert urlsplit(tr.targets[0]).path == "/scrape"
            assert stats[INFO_HASH].complete == 3 and stats[INFO_HASH].downloaded == 9
            assert stats[other].incomplete == 0
            raw = [unquote_to_bytes(p[10:]) for p in urlsplit(tr.targets[0]).query.split("&")]
            assert raw == [INFO_HASH, other]

    run(main())


# -- property tests: hostile input only ever yields TrackerError ---------------

_values = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.binary(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    [b"interval", b"min interval", b"peers", b"peers6", b"complete", b"tracker id",
     b"warning message", b"failure reason", b"roost.expected", b"ip", b"port"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=8) | _values)
def test_parse_announce_response_never_raises_anything_else(value: Any) -> None:
    try:
        resp = parse_announce_response(bencode.encode(value))
    except TrackerError:
        return
    assert all(isinstance(h, str) and 0 < p < 65536 for h, p in resp.peers)
    assert isinstance(resp.interval, int) and resp.interval >= 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_parse_random_bytes(body: bytes) -> None:
    with contextlib.suppress(TrackerError):
        parse_announce_response(body)


_heads = st.sampled_from(
    [
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 302 Found\r\nLocation: /x\r\n",
        b"HTTP/1.1 2000 X\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n",
        b"garbage\r\n",
        b"",
    ]
)


@settings(max_examples=300, deadline=None)
@given(_heads, st.binary(max_size=200), st.booleans())
def test_http_reply_parser_never_raises_anything_else(head: bytes, rest: bytes, sep: bool) -> None:
    async def main() -> None:
        reader = asyncio.StreamReader(limit=MAX_HEADER)
        reader.feed_data(head + (b"\r\n" if sep else b"") + rest)
        reader.feed_eof()
        try:
            _, headers = await _read_head(reader, "http://t/announce")
            body = await _read_body(reader, headers, "http://t/announce", 1000)
        except TrackerError:
            return
        assert len(body) <= 1000

    run(main())
