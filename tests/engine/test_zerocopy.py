"""Zero-copy uploads over a real socket pair and real files."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from roost.engine import zerocopy
from roost.engine.zerocopy import send_direct

pytestmark = pytest.mark.skipif(not zerocopy.AVAILABLE, reason="no os.sendfile here")


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "peer closed early"
        out += chunk
    return bytes(out)


def test_header_then_spans_of_two_files_arrive_in_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(bytes(range(256)) * 4)
    b.write_bytes(b"xyz" * 100)
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
        try:
            head, sent = send_direct(left.fileno(), b"HDR", [(fa, 1000, 24), (fb, 3, 30)])
        finally:
            os.close(fa)
            os.close(fb)
        assert (head, sent) == (3, 54)
        want = b"HDR" + a.read_bytes()[1000:1024] + b.read_bytes()[3:33]
        assert recv_exactly(right, len(want)) == want


def test_a_full_socket_hands_the_rest_back(tmp_path: Path) -> None:
    data = os.urandom(8 * 1024 * 1024)
    src = tmp_path / "big"
    src.write_bytes(data)
    left, right = socket.socketpair()
    with left, right:
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        left.setblocking(False)
        fd = os.open(src, os.O_RDONLY)
        try:
            head, sent = send_direct(left.fileno(), b"H", [(fd, 0, len(data))])
        finally:
            os.close(fd)
        assert head == 1 and 0 < sent < len(data)  # nobody reads: the buffer fills
        assert recv_exactly(right, 1 + sent) == b"H" + data[:sent]


def test_tls_and_socketless_transports_are_not_used() -> None:
    class Fake(asyncio.BaseTransport):
        def __init__(self, extra: dict[str, object]) -> None:
            super().__init__(extra)

    left, right = socket.socketpair()
    with left, right:
        assert zerocopy.socket_fd(Fake({"socket": left})) == left.fileno()
        assert zerocopy.socket_fd(Fake({"socket": left, "sslcontext": object()})) is None
        assert zerocopy.socket_fd(Fake({})) is None
