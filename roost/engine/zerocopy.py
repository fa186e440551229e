"""Zero-copy uploads: a Piece message's block goes from the page cache to the
socket with os.sendfile, never through a Python buffer.

Only used when the transport's write buffer is empty: then nothing queued can
be overtaken, so writing to the socket directly keeps the stream in order.
Whatever the kernel does not take at once (a full socket buffer) is handed
back to the caller, which queues it on the transport as usual. Not for TLS
transports (the bytes must be encrypted) or platforms without os.sendfile.
"""

from __future__ import annotations

import asyncio
import os

#: (fd, file offset, length), as roost.engine.storage.Storage.pinned_spans yields
Span = tuple[int, int, int]

AVAILABLE = hasattr(os, "sendfile")


def socket_fd(transport: asyncio.BaseTransport) -> int | None:
    """The raw socket fd if zero-copy may write to it, else None."""
    if not AVAILABLE or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        return int(sock.fileno())
    except (OSError, ValueError):
        return None


def send_direct(fd: int, header: bytes, spans: list[Span]) -> tuple[int, int]:
    """Write `header`, then the spans, straight to the non-blocking socket `fd`.
    Stops at the first short write. Returns (header bytes sent, span bytes sent);
    the caller sends the rest through the transport, in order."""
    try:
        head = os.write(fd, header)
    except BlockingIOError:
        return 0, 0
    if head < len(header):
        return head, 0
    done = 0
    for file_fd, offset, length in spans:
        pos = 0
        while pos < length:
            try:
                n = os.sendfile(fd, file_fd, offset + pos, length - pos)
            except BlockingIOError:
                return head, done + pos
            if n == 0:  # the file is shorter than the torrent says: let pread report it
                return head, done + pos
            pos += n
        done += length
    return head, done
