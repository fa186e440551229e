"""Drive a SwarmMember with a fake clock and scripted remote peers, no sockets.

A `Kit` holds one member and the remotes connected to it. Each remote is a
real wire codec (roost.core.wire.PeerConnection) on the far side of the
connection: what the member sends is parsed by it, and what a test makes the
remote say is encoded by it, so the member sees exactly the bytes a real
peer would send. Actions other than bytes are kept (`kit.actions`) for the
test to inspect; CheckAndWrite is answered by `kit.check()`, which hashes the
piece as the engine would.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, TypeVar

from roost.core import metainfo
from roost.core.actions import (
    Action,
    CheckAndWrite,
    Close,
    Closed,
    Connected,
    PieceChecked,
    Report,
    Send,
    SendBlock,
    Stop,
)
from roost.core.bitfield import Bitfield
from roost.core.member import MemberConfig, SwarmMember
from roost.core.wire import BLOCK_SIZE, PeerConnection, Request

T = TypeVar("T")


class Remote:
    def __init__(self, kit: Kit, cid: int, address: tuple[str, int], peer_id: bytes) -> None:
        self.kit = kit
        self.cid = cid
        self.address = address
        self.peer_id = peer_id
        self.wire = PeerConnection(
            kit.info_hash,
            peer_id,
            kit.info.num_pieces,
            max_block=1 << 20,
            piece_length=kit.info.piece_length,
            total_length=kit.info.total_length,
        )
        self.messages: list[Any] = []
        self.closed: str | None = None

    def got(self, data: bytes) -> None:
        self.messages.extend(self.wire.receive(data))

    def of(self, kind: type[T]) -> list[T]:
        return [m for m in self.messages if isinstance(m, kind)]

    def say(self, data: bytes) -> list[Action]:
        """Bytes from this remote to the member."""
        return self.kit.run(self.kit.member.receive(self.cid, data, self.kit.now))

    def requests(self) -> list[Request]:
        """Requests it received and has not answered (answered ones are dropped)."""
        return [m for m in self.messages if isinstance(m, Request)]

    def answer(self, req: Request, data: bytes | None = None) -> list[Action]:
        self.messages.remove(req)
        if data is None:
            data = self.kit.block(req.index, req.begin, req.length)
        return self.say(self.wire.send_piece(req.index, req.begin, data))


class Kit:
    def __init__(
        self,
        *,
        pieces: int = 8,
        piece_length: int = 4 * BLOCK_SIZE,
        complete: bool = False,
        config: MemberConfig | None = None,
        trackers: bool = False,
        seed: int = 1,
        web_seeds: list[str] | None = None,
        multi_file: bool = False,
    ) -> None:
        rng = random.Random(seed)
        self.payload = rng.randbytes(pieces * piece_length - 1000)
        hashes = b"".join(
            hashlib.sha1(self.payload[i : i + piece_length]).digest()
            for i in range(0, len(self.payload), piece_length)
        )
        # multi_file: two files ("a" ends mid-piece) and a pad, as tree torrents lay them out
        files: list[tuple[tuple[str, ...], int, bool]] | int = len(self.payload)
        if multi_file:
            half = len(self.payload) // 2 + 100
            pad = (-half) % piece_length
            self.payload = self.payload[:half] + bytes(pad) + self.payload[half + pad :]
            hashes = b"".join(
                hashlib.sha1(self.payload[i : i + piece_length]).digest()
                for i in range(0, len(self.payload), piece_length)
            )
            files = [(("a",), half, False), ((".pad", str(pad)), pad, True),
                     (("dir", "b c"), len(self.payload) - half - pad, False)]
        info = metainfo.build_info("payload", files, piece_length, hashes)
        meta = metainfo.parse(metainfo.build_torrent(info))
        self.info, self.info_hash = meta.info, meta.info_hash
        have = Bitfield.full(pieces) if complete else Bitfield(pieces)
        self.member = SwarmMember(
            self.info,
            self.info_hash,
            have,
            config or MemberConfig(),
            trackers=trackers,
            rng=random.Random(seed),
            web_seeds=web_seeds,
        )
        self.now = 1000.0
        self.actions: list[Action] = []
        self.remotes: dict[int, Remote] = {}
        self.pending: list[CheckAndWrite] = []
        self._next = 1
        self.run(self.member.start(6881, self.now))

    # ---- the world's side of the actions ----
    def run(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            self.actions.append(action)
            if isinstance(action, Send):
                self.remotes[action.conn].got(action.data)
            elif isinstance(action, SendBlock):
                data = self.block(action.index, action.begin, action.length)
                self.remotes[action.conn].got(action.header + data)
            elif isinstance(action, CheckAndWrite):
                self.pending.append(action)
            elif isinstance(action, Close):
                remote = self.remotes.get(action.conn)
                if remote is not None:
                    remote.closed = action.reason
        return actions

    def block(self, index: int, begin: int, length: int) -> bytes:
        at = index * self.info.piece_length + begin
        return self.payload[at : at + length]

    def check(self) -> None:
        """Answer every pending CheckAndWrite, hashing as the engine does."""
        while self.pending:
            action = self.pending.pop(0)
            ok = hashlib.sha1(action.data).digest() == self.info.piece_hash(action.index)
            self.run(self.member.event(PieceChecked(action.index, ok), self.now))

    def advance(self, seconds: float) -> None:
        """Let time pass, calling handle_timer at every deadline on the way."""
        end = self.now + seconds
        stuck = 0
        while True:
            deadline = self.member.next_deadline()
            if deadline > end:
                break
            stuck = stuck + 1 if deadline <= self.now else 0
            assert stuck < 100, f"handle_timer does not move the deadline ({deadline})"
            self.now = max(self.now, deadline)
            self.run(self.member.handle_timer(self.now))
        self.now = end

    # ---- remotes ----
    def connect(
        self,
        *,
        have: Bitfield | None = None,
        ip: str | None = None,
        interested: bool = False,
        extended: dict[bytes, Any] | None = None,
        rtt: float = 0.0,
    ) -> Remote:
        """An incoming connection that completes both handshakes and says what it has;
        its answer to our handshake comes `rtt` (simulated) seconds after it."""
        cid = self._next
        self._next += 1
        address = (ip or f"10.0.0.{cid + 1}", 40000 + cid)
        peer_id = b"-XX0001-" + cid.to_bytes(12, "big")
        remote = self.remotes[cid] = Remote(self, cid, address, peer_id)
        self.run(self.member.event(Connected(cid, address), self.now))
        wire = remote.wire
        remote.say(wire.handshake_bytes())  # the member answers with its own
        if rtt:
            self.advance(rtt)
        data = wire.send_extended_handshake(extended or {b"m": {}})
        if have is None or not have.any():
            data += wire.send_have_none()
        elif have.all():
            data += wire.send_have_all()
        else:
            data += wire.send_bitfield(have)
        if interested:
            data += wire.send_interested()
        remote.say(data)
        return remote

    def hang_up(self, remote: Remote) -> None:
        self.run(self.member.event(Closed(remote.cid), self.now))

    # ---- looking at what came out ----
    def reports(self, name: str) -> list[dict[str, Any]]:
        return [a.fields for a in self.actions if isinstance(a, Report) and a.name == name]

    def stops(self) -> list[Stop]:
        return [a for a in self.actions if isinstance(a, Stop)]

    def of(self, kind: type[T]) -> list[T]:
        return [a for a in self.actions if isinstance(a, kind)]
