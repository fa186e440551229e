"""roost.engine.webseed against scripted HTTP servers: only the asked bytes are taken."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from roost.core.actions import WebPart
from roost.engine.webseed import MAX_HEADER_BYTES, WebSeedClient, WebSeedError

Answer = Callable[[bytes], bytes]  # the request's head -> the raw response
CLOSE = b"<then close>"  # an answer ending so: the server hangs up after it


async def serve(answer: Answer, body: Callable[[], Awaitable[None]] | None = None
                ) -> tuple[asyncio.AbstractServer, int, list[bytes]]:
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head)
                raw = answer(head)
                writer.write(raw.removesuffix(CLOSE))
                await writer.drain()
                if raw.endswith(CLOSE):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], heads


def ranged(data: bytes, **extra: str) -> Answer:
    def answer(head: bytes) -> bytes:
        line = next(x for x in head.split(b"\r\n") if x.lower().startswith(b"range:"))
        lo, hi = (int(v) for v in line.split(b"=")[1].split(b"-"))
        body = data[lo : hi + 1]
        headers = {"Content-Length": str(len(body)),
                   "Content-Range": f"bytes {lo}-{hi}/{len(data)}", **extra}
        text = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return f"HTTP/1.1 206 Partial Content\r\n{text}\r\n".encode() + body
    return answer


def fetch(answer: Answer, parts: list[WebPart] | None = None, timeout: float = 2.0
          ) -> tuple[bytes | WebSeedError, list[bytes]]:
    async def main() -> tuple[bytes | WebSeedError, list[bytes]]:
        server, port, heads = await serve(answer)
        client = WebSeedClient(read_timeout=timeout)
        url = f"http://127.0.0.1:{port}/dir/f"
        try:
            asked = parts or [WebPart("u", 10, 20)]  # "u": this server's URL; None: a pad
            got: bytes | WebSeedError = await client.fetch(
                tuple(WebPart(url if p.url else None, p.offset, p.length) for p in asked))
        except WebSeedError as exc:
            got = exc
        finally:
            client.close()
            server.close()
        return got, heads
    return asyncio.run(main())


DATA = bytes(range(256)) * 4


def test_a_range_and_a_pad_come_back_exactly_over_one_connection() -> None:
    got, heads = fetch(ranged(DATA), [WebPart("u", 10, 20), WebPart(None, 0, 5),
                                      WebPart("u", 100, 3)])
    assert got == DATA[10:30] + bytes(5) + DATA[100:103]
    assert len(heads) == 2 and b"Range: bytes=10-29" in heads[0]
    assert heads[0].startswith(b"GET /dir/f HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("answer", "reason", "status"),
    [
        (lambda h: b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "Not Found", 404),
        (lambda h: b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + bytes(20),
         "the server ignored the range", 200),
        (lambda h: b"HTTP/1.1 206 P\r\nContent-Length: 99999999\r\n"
         b"Content-Range: bytes 10-29/1024\r\n\r\n", "a body of 99999999 bytes", 206),
        (lambda h: b"HTTP/1.1 206 P\r\nContent-Length: 20\r\n"
         b"Content-Range: bytes 0-19/1024\r\n\r\n" + bytes(20), "Content-Range", 206),
        (lambda h: b"HTTP/1.1 206 P\r\nContent-Length: 20\r\nTransfer-Encoding: chunked\r\n"
         b"Content-Range: bytes 10-29/1024\r\n\r\n", "chunked", 206),
        (lambda h: b"HTTP/1.1 206 P\r\nContent-Length: 20\r\n"
         b"Content-Range: bytes 10-29/1024\r\n\r\n" + bytes(7) + CLOSE,
         "a short body: 7 bytes of 20", None),
        (lambda h: b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n",
         "headers over", None),
        (lambda h: b"SSH-2.0-nope\r\n\r\n", "not an HTTP/1.x response", None),
    ],
)
def test_anything_but_the_asked_bytes_is_an_error(answer: Answer, reason: str,
                                                  status: int | None) -> None:
    got, _ = fetch(answer)
    assert isinstance(got, WebSeedError), got
    assert reason in got.reason and got.status == status


def test_a_silent_server_times_out() -> None:
    got, _ = fetch(lambda h: b"HTTP/1.1 206 P\r\n", timeout=0.3)
    assert isinstance(got, WebSeedError) and "no answer for 0.3 s" in got.reason


def test_a_refused_connection_is_an_error() -> None:
    async def main() -> WebSeedError | bytes:
        client = WebSeedClient()
        try:
            return await client.fetch((WebPart("http://127.0.0.1:1/x", 0, 1),))
        except WebSeedError as exc:
            return exc
    got = asyncio.run(main())
    assert isinstance(got, WebSeedError) and got.reason.startswith("cannot connect")
