"""HTTP range requests to web seeds (BEP 19), for roost.engine.session. Stdlib only.

Theory of operation. The core (roost.core.webseed) decides what to ask; this
module only asks. A `WebSeedClient` is one web seed's connections: HTTP/1.1
keep-alive over asyncio streams (TLS for https://), at most one request per
connection at a time, idle connections reused. `fetch(parts)` gets every
part of one WebFetch in order (a pad part is zeros, never asked for) and
returns exactly the bytes asked for, or raises `WebSeedError` with the HTTP
status when there was one.

Nothing a server says is believed beyond what was asked: the status must be
206 with a Content-Range naming the asked range (or 200 for a whole file
asked from its first byte), the Content-Length must be the asked length, the
headers are capped at MAX_HEADER_BYTES and the body is read with
readexactly(length), so a hostile or broken server costs at most the length
of the part. The bytes are then hash-checked by the session like a peer's.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable
from typing import TypeVar
from urllib.parse import urlsplit

from roost import __version__
from roost.core.actions import WebPart

MAX_HEADER_BYTES = 64 * 1024
READ_TIMEOUT = 20.0  # no byte for this long: the request failed
CONNECT_TIMEOUT = 10.0
_CONTENT_RANGE = re.compile(rb"bytes (\d+)-(\d+)/(\d+|\*)")


class WebSeedError(Exception):
    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


T = TypeVar("T")
_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class WebSeedClient:
    """The connections to one web seed's server(s)."""

    def __init__(self, *, read_timeout: float = READ_TIMEOUT) -> None:
        self.read_timeout = read_timeout
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._open: set[asyncio.StreamWriter] = set()
        self._tls: ssl.SSLContext | None = None

    async def fetch(self, parts: tuple[WebPart, ...]) -> bytes:
        chunks: list[bytes] = []
        for part in parts:
            if part.url is None:
                chunks.append(bytes(part.length))  # BEP 47 pad: zeros by definition
            else:
                chunks.append(await self._get(part.url, part.offset, part.length))
        return b"".join(chunks)

    def close(self) -> None:
        for writer in list(self._open):
            writer.close()
        self._open.clear()
        self._idle.clear()

    # ---- one range ----
    async def _get(self, url: str, offset: int, length: int) -> bytes:
        split = urlsplit(url)
        scheme = split.scheme.lower()
        try:
            port = split.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise WebSeedError("the URL has a bad port") from None
        host = split.hostname or ""
        key = (scheme, host, port)
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        netloc = split.netloc
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {netloc}\r\n"
            f"Range: bytes={offset}-{offset + length - 1}\r\n"
            f"User-Agent: roost/{__version__}\r\nAccept-Encoding: identity\r\n"
            "Connection: keep-alive\r\n\r\n"
        ).encode("ascii", "strict")
        idle = self._idle.get(key)
        reused = bool(idle)
        conn = idle.pop() if idle else await self._connect(scheme, host, port)
        try:
            body, keep = await self._exchange(conn, request, offset, length)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self._discard(conn)
            if reused and not (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                # the server closed an idle keep-alive connection: once more, fresh
                return await self._get(url, offset, length)
            raise WebSeedError(_short(exc)) from None
        except BaseException:
            self._discard(conn)
            raise
        if keep:
            self._idle.setdefault(key, []).append(conn)
        else:
            self._discard(conn)
        return body

    async def _connect(self, scheme: str, host: str, port: int) -> _Conn:
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=tls, limit=MAX_HEADER_BYTES),
                CONNECT_TIMEOUT,
            )
        except asyncio.TimeoutError:
            raise WebSeedError(f"cannot connect to {host}:{port}: timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise WebSeedError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        self._open.add(writer)
        return reader, writer

    def _discard(self, conn: _Conn) -> None:
        self._open.discard(conn[1])
        conn[1].close()

    async def _exchange(self, conn: _Conn, request: bytes, offset: int, length: int
                        ) -> tuple[bytes, bool]:
        reader, writer = conn
        writer.write(request)
        await self._timed(writer.drain())
        try:
            head = await self._timed(reader.readuntil(b"\r\n\r\n"))
        except asyncio.LimitOverrunError:
            raise WebSeedError(f"response headers over {MAX_HEADER_BYTES} bytes") from None
        status, reason, headers = _parse_head(head)
        if status not in (200, 206):
            raise WebSeedError(reason or "no reason given", status)
        if headers.get(b"transfer-encoding", b"identity").lower() != b"identity":
            raise WebSeedError("a chunked or encoded body; a range was asked for", status)
        if headers.get(b"content-encoding", b"identity").lower() != b"identity":
            raise WebSeedError("a compressed body; a range was asked for", status)
        _check_range(status, headers, offset, length)
        body = await self._read(reader, length)
        keep = headers.get(b"connection", b"").lower() != b"close"
        return body, keep

    async def _read(self, reader: asyncio.StreamReader, length: int) -> bytes:
        """Exactly `length` bytes, each read under the read timeout (a slow but
        moving server is fine; a silent one is not)."""
        chunks: list[bytes] = []
        left = length
        while left:
            chunk = await self._timed(reader.read(min(left, 1 << 20)))
            if not chunk:
                raise WebSeedError(f"a short body: {length - left} bytes of {length}")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    async def _timed(self, awaitable: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(awaitable, self.read_timeout)
        except asyncio.TimeoutError:
            raise WebSeedError(f"no answer for {self.read_timeout:g} s") from None


def _short(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return f"the connection closed mid-answer ({len(exc.partial)} bytes)"
    return f"the connection failed: {exc}"


def _parse_head(head: bytes) -> tuple[int, str, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise WebSeedError("not an HTTP/1.x response")
    status = int(parts[1])
    reason = parts[2].decode("latin-1")[:200] if len(parts) > 2 else ""
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, reason, headers


def _check_range(status: int, headers: dict[bytes, bytes], offset: int, length: int) -> None:
    raw_length = headers.get(b"content-length", b"")
    if not raw_length.isdigit() or int(raw_length) != length:
        raise WebSeedError(
            f"a body of {raw_length.decode('latin-1')[:20] or 'unknown'} bytes, "
            f"{length} were asked for", status)
    if status == 200:
        if offset != 0:
            raise WebSeedError("the server ignored the range (200 for a range)", status)
        return  # the whole file is exactly the asked bytes
    match = _CONTENT_RANGE.fullmatch(headers.get(b"content-range", b""))
    if match is None or int(match[1]) != offset or int(match[2]) != offset + length - 1:
        raise WebSeedError("the Content-Range is not the range asked for", status)

