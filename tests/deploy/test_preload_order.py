"""After a release every host holds the same parts of the same pieces: each must ask
the origin for the rest in an order of its own (roost.target.fetch_tree.preload_order),
or the origin sends every block to every host and no host has anything to trade."""

from __future__ import annotations

import random

from roost.core.bitfield import Bitfield
from roost.core.picker import PiecePicker
from roost.target.fetch_tree import preload_order

BLOCK = 16384
PIECES = 60


def _host(order_rng: random.Random | None) -> PiecePicker:
    """A host holding blocks 0-1 of every piece (reused files); the origin has all."""
    picker = PiecePicker(PIECES, 4 * BLOCK, PIECES * 4 * BLOCK, rng=random.Random(0))
    local = {i: [0, 1] for i in range(PIECES)}
    items = preload_order(local, order_rng) if order_rng is not None else local.items()
    for index, blocks in items:
        picker.preload(index, blocks)
    picker.add_peer("origin", Bitfield.full(PIECES))
    return picker


def _first_pieces(picker: PiecePicker, n: int) -> list[int]:
    return list(dict.fromkeys(b.index for b in picker.pick("origin", 2 * n)))[:n]


def test_the_order_is_every_partly_held_piece_once() -> None:
    local = {i: [i % 3] for i in range(100)}
    order = preload_order(local, random.Random(1))
    assert sorted(order) == sorted(local.items())
    assert order != sorted(order)


def test_hosts_ask_the_origin_for_different_blocks_first() -> None:
    hosts = [_host(random.Random(seed)) for seed in range(8)]
    firsts = [_first_pieces(h, 4) for h in hosts]
    # eight hosts, four pieces each: in index order all 32 requests would name pieces 0-3
    assert len({p for f in firsts for p in f}) > 16
    same = [_first_pieces(_host(None), 4) for _ in range(8)]
    assert all(f == [0, 1, 2, 3] for f in same)  # what index order did
