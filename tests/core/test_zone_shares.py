"""The zone's import shares: the hosts of a zone split what the zone lacks,
so a piece crosses the narrow link between zones once, not once per host."""

from __future__ import annotations

import ipaddress
import random

from roost.core.bitfield import Bitfield
from roost.core.conn import UPLOAD_ONLY_KEY
from roost.core.member import IMPORT_GRACE_SECONDS, MemberConfig
from roost.core.picker import PiecePicker
from roost.core.zone_shares import ZoneShares, ranks
from tests.core.member_kit import Kit

BS = 4
IDS = [b"-RO0001-" + bytes([i]) * 12 for i in range(8)]


def shares_of(own: int, others: list[int], pieces: int = 256) -> ZoneShares:
    shares = ZoneShares(IDS[own], pieces)
    for i in others:
        shares.add(i, IDS[i])
    return shares


def test_hosts_that_know_the_same_zone_split_every_piece_exactly_once() -> None:
    views = [shares_of(h, [i for i in range(8) if i != h]) for h in range(8)]
    owners = [[h for h in range(8) if views[h].ours(p)] for p in range(256)]
    assert all(len(o) == 1 for o in owners)
    counts = [v.count() for v in views]
    assert sum(counts) == 256 and min(counts) >= 16, counts  # about 32 each


def test_views_that_differ_still_leave_every_piece_an_importer() -> None:
    rng = random.Random(7)
    for _ in range(50):
        views = [
            shares_of(h, [i for i in range(8) if i != h and rng.random() < 0.5], 64)
            for h in range(8)
        ]
        for p in range(64):
            assert any(v.ours(p) for v in views), p


def test_a_local_peer_leaving_gives_its_share_back() -> None:
    shares = shares_of(0, [1, 2, 3])
    before = shares.count()
    assert shares.remove(2) and not shares.remove(2)
    assert shares.count() > before
    shares.remove(1)
    shares.remove(3)
    assert shares.count() == 256  # alone in the zone: everything is ours


def test_ranks_are_the_same_everywhere_and_differ_by_peer() -> None:
    assert ranks(IDS[1], 8) == ranks(IDS[1], 8)
    assert ranks(IDS[1], 8) != ranks(IDS[2], 8)


def picker(n: int, own: int = 0) -> PiecePicker:
    return PiecePicker(
        n, BS, n * BS, block_size=BS, rng=random.Random(1), random_first=0, own_id=IDS[own]
    )


def test_a_remote_peer_is_asked_only_for_our_share_until_the_split_is_lifted() -> None:
    p = picker(16)
    p.add_peer("near", Bitfield(16), local=True, peer_id=IDS[1])
    p.add_peer("far-1", Bitfield.full(16))
    p.add_peer("far-2", Bitfield.full(16))
    ours = {i for i in range(16) if shares_of(0, [1], 16).ours(i)}
    assert 0 < len(ours) < 16
    assert {r.index for r in p.pick("far-1", 100)} == ours
    state = p.pick_state("far-2")
    assert p.pick("far-2", 100) == []
    assert p.lift_zone_shares() and not p.lift_zone_shares()
    assert p.pick_state("far-2") != state, "a peer found dry must be asked again"
    assert {r.index for r in p.pick("far-2", 100)} == set(range(16)) - ours


def test_an_upload_only_peers_offers_are_taken_whoever_its_share_is() -> None:
    # a super-seeding origin offers each piece to one peer and waits for it
    p = picker(16)
    p.add_peer("near", Bitfield(16), local=True, peer_id=IDS[1])
    p.add_peer("origin", Bitfield.full(16))
    p.add_peer("far", Bitfield.full(16))
    ours = {i for i in range(16) if shares_of(0, [1], 16).ours(i)}
    assert {r.index for r in p.pick("far", 100)} == ours
    p.upload_only("origin")
    assert {r.index for r in p.pick("origin", 100)} == set(range(16)) - ours


def test_a_local_upload_only_peer_has_no_share() -> None:
    p = picker(16)
    p.add_peer("origin", Bitfield(16), local=True, peer_id=IDS[1])  # shows nothing yet
    p.add_peer("far-1", Bitfield.full(16))
    p.add_peer("far-2", Bitfield.full(16))
    first = {r.index for r in p.pick("far-1", 100)}
    assert 0 < len(first) < 16
    state = p.pick_state("far-2")
    p.upload_only("origin")  # its BEP 10 handshake said so after its bitfield
    assert p.pick_state("far-2") != state
    assert {r.index for r in p.pick("far-2", 100)} == set(range(16)) - first


def test_without_an_id_or_local_peers_there_is_no_split() -> None:
    p = PiecePicker(8, BS, 8 * BS, block_size=BS, rng=random.Random(1), random_first=0)
    p.add_peer("near", Bitfield(8), local=True, peer_id=IDS[1])
    p.add_peer("far-1", Bitfield.full(8))
    p.add_peer("far-2", Bitfield.full(8))
    assert len(p.pick("far-1", 100)) == 8
    q = picker(8)
    q.add_peer("far-1", Bitfield.full(8))
    q.add_peer("far-2", Bitfield.full(8))
    assert len(q.pick("far-1", 100)) == 8  # no local peer: no zone


def test_a_partial_piece_is_not_continued_from_a_remote_peer_a_local_one_has() -> None:
    p = PiecePicker(4, 2 * BS, 8 * BS, block_size=BS, rng=random.Random(1), random_first=0)
    p.add_peer("near", Bitfield(4), local=True)
    p.add_peer("far", Bitfield.full(4))
    first = p.pick("far", 1)  # one block of a piece the zone lacked
    assert len(first) == 1
    index = first[0].index
    p.peer_has("near", index)  # now a local peer has it
    assert all(r.index != index for r in p.pick("far", 100))
    assert [r.index for r in p.pick("near", 100)] == [index]


def test_a_zoned_member_that_starves_takes_any_piece_its_zone_lacks() -> None:
    zone = [ipaddress.ip_network("10.1.0.0/16")]
    kit = Kit(pieces=16, config=MemberConfig(local_nets=zone))
    kit.connect(have=Bitfield(16), ip="10.1.0.5")  # a zone peer with nothing yet
    far = [kit.connect(have=Bitfield.full(16), ip=f"10.2.0.{i}") for i in (5, 6)]
    for remote in far:
        remote.say(remote.wire.send_unchoke())
    for _ in range(200):  # serve every request (one in flight per remote peer)
        pending = [(r, q) for r in far for q in r.requests()]
        if not pending:
            break
        for remote, req in pending:
            remote.answer(req)
        kit.check()
    share = set(kit.member.have.iter_set())
    assert 0 < len(share) < 16, "only our share came from outside the zone"
    assert kit.member.zone_shares_lifted_at is None
    kit.advance(IMPORT_GRACE_SECONDS + 1)
    assert kit.member.zone_shares_lifted_at is not None
    later = {q.index for r in far for q in r.requests()} - share
    assert later, "after the grace, pieces outside our share are asked too"


def test_a_super_seeding_member_says_it_only_uploads_and_peers_read_it() -> None:
    origin = Kit(pieces=8, complete=True, config=MemberConfig(super_seed=True))
    leecher = origin.connect()
    hs = [m for m in leecher.messages if type(m).__name__ == "ExtendedHandshake"]
    assert hs and hs[0].data.get(UPLOAD_ONLY_KEY) == 1
    zone = [ipaddress.ip_network("10.1.0.0/16")]
    kit = Kit(pieces=8, config=MemberConfig(local_nets=zone))
    near = kit.connect(have=Bitfield(8), ip="10.1.0.5", extended={b"m": {}, UPLOAD_ONLY_KEY: 1})
    other = kit.connect(have=Bitfield(8), ip="10.1.0.6")
    assert kit.member.conns[near.cid].upload_only
    assert not kit.member.conns[other.cid].upload_only
    shares = kit.member.picker._shares
    assert shares is not None and set(shares._peers) == {other.cid}
