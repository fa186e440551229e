"""The engine's receive path (roost.engine.session.PeerProtocol) over a real TCP
connection: a big Piece body is read straight into its own buffer, the
kernel is asked to wake us once per LOWAT bytes of it (SO_RCVLOWAT), never for
more than the body still owes, and back to every byte once it is in."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from roost.core.wire import BLOCK_SIZE, PeerConnection, Piece
from roost.engine import session as session_mod
from roost.engine.session import LOWAT, PeerProtocol

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_RCVLOWAT"), reason="no SO_RCVLOWAT")

IH = bytes(range(20))
BODY = 5 * BLOCK_SIZE + 123  # more than LOWAT, not a multiple of it
FIRST = 4000  # the first write: handshake (68), Piece header (13) and some of the body


class WireMember:
    """Just enough of SwarmMember: one wire codec, the events it produced."""

    def __init__(self) -> None:
        self.wire = PeerConnection(IH, b"-RO0001-bbbbbbbbbbbb", 4)
        self.wire.max_block = 8 * BLOCK_SIZE
        self.events: list[Any] = []

    def body_buffer(self, cid: int) -> memoryview | None:
        return self.wire.body_buffer()

    def body_received(self, cid: int, n: int, now: float) -> list[Any]:
        self.events += self.wire.body_received(n)
        return []

    def receive(self, cid: int, data: memoryview, now: float) -> list[Any]:
        self.events += self.wire.receive(data)
        return []

    def event(self, ev: object, now: float) -> list[Any]:
        return []


class StubSession:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.member = WireMember()
        self.protocols: dict[int, PeerProtocol] = {}
        self.config = type("Config", (), {"zero_copy": False})()

    def register(self, proto: PeerProtocol) -> int:
        self.protocols[1] = proto
        return 1

    def feed(self, ev: object) -> None:
        pass

    def act(self, actions: list[Any]) -> None:
        pass


async def _run(body: int) -> tuple[list[int], list[Any]]:
    loop = asyncio.get_running_loop()
    session: Any = StubSession(loop)
    server = await loop.create_server(lambda: PeerProtocol(session, None), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = PeerConnection(IH, b"-RO0001-aaaaaaaaaaaa", 4)
    block = bytes(range(251)) * (body // 251) + bytes(body % 251)
    frame = sender.send_piece(2, 0, block)
    lowats: list[int] = []
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(sender.initiate())
        writer.write(frame[:FIRST])
        await writer.drain()
        proto: PeerProtocol | None = None
        for _ in range(200):
            await asyncio.sleep(0.01)
            proto = session.protocols.get(1)
            if proto is not None and proto.lowat > 1:
                break
        assert proto is not None and proto.raw_sock is not None
        lowats.append(proto.raw_sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))
        pos = FIRST
        while pos < len(frame):  # the rest in 20 KiB writes, as a slow link would
            writer.write(frame[pos : pos + 20_000])
            await writer.drain()
            pos += 20_000
            await asyncio.sleep(0.005)
            lowats.append(proto.raw_sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))
        for _ in range(200):
            if session.member.events[-1:] and isinstance(session.member.events[-1], Piece):
                break
            await asyncio.sleep(0.01)
        lowats.append(proto.raw_sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))
    finally:
        writer.close()
        server.close()
    return lowats, session.member.events


def test_a_big_body_is_read_in_place_with_the_wake_up_threshold_it_can_meet() -> None:
    lowats, events = asyncio.run(_run(BODY))
    body_events = [e for e in events if isinstance(e, Piece)]
    assert len(body_events) == 1 and body_events[0].index == 2
    assert len(body_events[0].block) == BODY
    assert body_events[0].block == bytes(range(251)) * (BODY // 251) + bytes(BODY % 251)
    assert lowats[0] == LOWAT  # while the body is arriving
    assert lowats[-1] == 1  # once it is in: every byte wakes us again
    assert all(1 <= x <= LOWAT for x in lowats)


def test_the_threshold_never_exceeds_what_the_body_still_owes(monkeypatch: Any) -> None:
    # were it higher, the last bytes of a body would never wake us: a hang
    seen: list[tuple[int, int]] = []
    original = PeerProtocol._set_lowat

    def spy(self: PeerProtocol, lowat: int) -> None:
        view = self.session.member.body_buffer(self.cid)
        seen.append((lowat, len(view) if view is not None else 0))
        original(self, lowat)

    monkeypatch.setattr(session_mod.PeerProtocol, "_set_lowat", spy)
    # after the first write the body owes 50,000 bytes: between the in-place
    # threshold and LOWAT
    _, events = asyncio.run(_run(FIRST - 68 - 13 + 50_000))
    assert any(isinstance(e, Piece) for e in events)
    assert seen and all(lowat == 1 or lowat <= left for lowat, left in seen)
