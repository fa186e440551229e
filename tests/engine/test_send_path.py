"""The engine's send path over a real TCP connection: what waits, unsent, in
front of the next message to a peer stays small however much the peer asks.

A real seeding Session on loopback and a raw peer that asks for 2 MiB and
then reads nothing. Before the limits (roost.engine.session.UNSENT_LOWAT and
WRITE_HIGH, roost.core.uploads.WRITE_WINDOW) the seeder pushed megabytes into
the transport and the kernel, and an Interested or a Request of its own to
that peer waited behind all of them (docs/sim.md, "Control messages no
longer wait behind queued uploads"). Now the requests wait in the member, and the peer
still gets every block, byte-exact, once it reads."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import io
import random
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from roost.core.bitfield import Bitfield
from roost.core.metainfo import build_info, build_torrent, parse
from roost.core.uploads import WRITE_WINDOW
from roost.core.wire import BLOCK_SIZE, PeerConnection, Piece, Unchoke
from roost.engine.config import SessionConfig
from roost.engine.reporter import Reporter
from roost.engine.session import UNSENT_LOWAT, WRITE_HIGH, Session
from roost.engine.storage import Storage

PIECE = 256 * 1024
TOTAL = 8 * PIECE  # 2 MiB: far more than the limits, far less than OUR_REQQ blocks
SIOCOUTQNSD = 0x894B  # Linux: bytes of a TCP socket not sent yet

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_NOTSENT_LOWAT")
                                and not Path("/proc/sys/net/ipv4/tcp_notsent_lowat").exists(),
                                reason="no TCP_NOTSENT_LOWAT")


def _unsent(sock: socket.socket) -> int:
    buf = fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0" * 4)
    return int(struct.unpack("i", buf)[0])


async def _client(port: int, info_hash: bytes, payload: bytes, seen: dict[str, Any],
                  session: Session) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # the peer's window fills
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    wire = PeerConnection(info_hash, b"-XX0001-cccccccccccc", TOTAL // PIECE,
                          piece_length=PIECE, total_length=TOTAL)
    await loop.sock_sendall(sock, wire.initiate())

    async def read_until(done: Any) -> list[Any]:
        events: list[Any] = []
        while not done(events):
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
            assert data, "the seeder closed the connection"
            events += wire.receive(data)
        return events

    await loop.sock_sendall(sock, wire.send_interested())
    await read_until(lambda evs: any(isinstance(e, Unchoke) for e in evs))
    asks = b"".join(wire.send_request(i // PIECE, i % PIECE, BLOCK_SIZE)
                    for i in range(0, TOTAL, BLOCK_SIZE))
    await loop.sock_sendall(sock, asks)
    await asyncio.sleep(1.0)  # read nothing: the seeder's queues fill as far as it lets them

    (proto,) = session.protocols.values()
    assert proto.transport is not None
    seen["unsent"] = _unsent(proto.transport.get_extra_info("socket"))
    seen["buffered"] = proto.transport.get_write_buffer_size()
    (conn,) = session.member.conns.values()
    seen["held"] = len(conn.upload_queue) * BLOCK_SIZE

    want = TOTAL // BLOCK_SIZE
    blocks = await read_until(lambda evs: sum(isinstance(e, Piece) for e in evs) == want)
    got = bytearray(TOTAL)
    for e in blocks:
        if isinstance(e, Piece):
            got[e.index * PIECE + e.begin : e.index * PIECE + e.begin + len(e.block)] = e.block
    seen["exact"] = bytes(got) == payload
    sock.close()


def test_a_peer_that_stops_reading_gets_little_queued_in_front_and_all_its_blocks(
    tmp_path: Path,
) -> None:
    payload = random.Random(5).randbytes(TOTAL)
    hashes = b"".join(hashlib.sha1(payload[i : i + PIECE]).digest() for i in range(0, TOTAL, PIECE))
    meta = parse(build_torrent(build_info("payload", TOTAL, PIECE, hashes)))
    info = meta.info
    with Storage(info, tmp_path) as storage:
        for index in range(info.num_pieces):
            storage.write_piece(index, payload[index * PIECE : (index + 1) * PIECE])
    seen: dict[str, Any] = {}

    async def main() -> None:
        storage = Storage(info, tmp_path)
        storage.open(create=False)
        config = SessionConfig(ports=(0, 0), listen_host="127.0.0.1", linger=None)
        session = Session(meta, storage, Bitfield.full(info.num_pieces), config,
                          Reporter(as_json=True, stream=io.StringIO()), trackers=[])
        run = asyncio.ensure_future(session.run())
        try:
            for _ in range(200):
                if session.port:
                    break
                await asyncio.sleep(0.01)
            client = _client(session.port, meta.info_hash, payload, seen, session)
            await asyncio.wait_for(client, 30)
        finally:
            session.stop()
            await run
            storage.close()

    asyncio.run(main())
    frame = 13 + BLOCK_SIZE
    assert seen["unsent"] <= UNSENT_LOWAT + frame, seen
    assert seen["buffered"] <= WRITE_HIGH + WRITE_WINDOW + frame, seen
    # the rest waits in the member, as requests, not as bytes in front of a message
    assert seen["held"] >= TOTAL // 2, seen
    assert seen["exact"], "every block arrived, byte-exact"
