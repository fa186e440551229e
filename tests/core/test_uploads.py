"""Serving in turn (roost.core.uploads): a few peers at a time, a piece each."""

from __future__ import annotations

from roost.core.actions import Action, SendBlock, WantWritable, WriteReady
from roost.core.member import MemberConfig
from roost.core.wire import BLOCK_SIZE, Piece
from tests.core.member_kit import Kit, Remote

PIECE = 4 * BLOCK_SIZE


def _ask(remote: Remote, *pieces: int) -> list[Action]:
    wire = remote.wire
    return remote.say(b"".join(wire.send_request(i, 0, PIECE) for i in pieces))


def _served(actions: list[Action]) -> list[tuple[int, int]]:
    return [(a.conn, a.index) for a in actions if isinstance(a, SendBlock)]


def test_a_seed_serves_slots_peers_at_once_and_passes_the_turn_when_a_piece_has_left() -> None:
    kit = Kit(pieces=8, piece_length=PIECE, complete=True, config=MemberConfig(serve_slots=2))
    a, b, c = (kit.connect(interested=True) for _ in range(3))
    assert _served(_ask(a, 0, 1)) == [(a.cid, 0)]  # a piece, then its turn waits for the wire
    assert _served(_ask(b, 2)) == [(b.cid, 2)]
    assert _served(_ask(c, 3)) == []  # both turns are taken: c waits in line
    drained = [x for x in kit.actions if isinstance(x, WantWritable) and x.drained]
    assert {x.conn for x in drained} == {a.cid, b.cid}
    # a's piece has left: c is next in line, a queues behind it
    actions = kit.run(kit.member.event(WriteReady(a.cid), kit.now))
    assert _served(actions) == [(c.cid, 3)]
    actions = kit.run(kit.member.event(WriteReady(b.cid), kit.now))
    assert _served(actions) == [(a.cid, 1)]  # b asked for nothing more
    assert [p.index for r in (a, b, c) for p in r.of(Piece)] == [0, 1, 2, 3]


def test_a_closed_connection_gives_its_turn_to_the_next_in_line() -> None:
    kit = Kit(pieces=8, piece_length=PIECE, complete=True, config=MemberConfig(serve_slots=1))
    a, b = (kit.connect(interested=True) for _ in range(2))
    assert _served(_ask(a, 0)) == [(a.cid, 0)]
    assert _served(_ask(b, 1)) == []
    before = len(kit.actions)
    kit.hang_up(a)
    assert _served(kit.actions[before:]) == [(b.cid, 1)]


def test_without_slots_every_peer_is_served_at_once() -> None:
    kit = Kit(pieces=8, piece_length=PIECE, complete=True, config=MemberConfig(serve_slots=None))
    remotes = [kit.connect(interested=True) for _ in range(3)]
    served = [_served(_ask(r, i)) for i, r in enumerate(remotes)]
    assert served == [[(r.cid, i)] for i, r in enumerate(remotes)]
