"""Zone locality: peers outside MemberConfig.local_nets are remote; the picker
asks them only for pieces no peer of our zone has, and a remote peer gets one
request in flight."""

from __future__ import annotations

import ipaddress
import random

from roost.core.bitfield import Bitfield
from roost.core.member import MemberConfig
from roost.core.picker import PiecePicker
from tests.core.member_kit import Kit

BS = 4


def bits(s: str) -> Bitfield:
    bf = Bitfield(len(s))
    for i, c in enumerate(s):
        if c == "1":
            bf.set(i)
    return bf


def picker(n: int) -> PiecePicker:
    return PiecePicker(n, BS, n * BS, block_size=BS, rng=random.Random(1), random_first=0)


def test_a_remote_peer_is_asked_only_for_pieces_the_zone_lacks() -> None:
    p = picker(6)
    p.add_peer("local", bits("111000"), local=True)
    p.add_peer("remote", bits("111111"))
    assert p.local_availability(0) == 1 and p.local_availability(4) == 0
    assert sorted(r.index for r in p.pick("remote", 10)) == [3, 4, 5]
    assert sorted(r.index for r in p.pick("local", 10)) == [0, 1, 2]


def test_without_local_peers_the_picker_is_unchanged() -> None:
    p = picker(4)
    p.add_peer("a", bits("1111"))
    assert sorted(r.index for r in p.pick("a", 10)) == [0, 1, 2, 3]


def test_a_local_seed_leaves_remote_peers_nothing_and_leaving_gives_it_back() -> None:
    p = picker(3)
    p.add_peer_have_all("zone-seed", local=True)
    p.add_peer("remote", bits("111"))
    assert p.pick("remote", 10) == []
    p.remove_peer("zone-seed")
    assert sorted(r.index for r in p.pick("remote", 10)) == [0, 1, 2]


def test_local_counts_follow_haves_and_a_local_peer_turning_seed() -> None:
    p = picker(3)
    p.add_peer("local", bits("100"), local=True)
    p.add_peer("remote", bits("111"))
    p.peer_has("local", 1)
    assert [p.local_availability(i) for i in range(3)] == [1, 1, 0]
    assert [r.index for r in p.pick("remote", 10)] == [2]
    p.peer_has("local", 2)  # now a seed, counted once
    assert [p.local_availability(i) for i in range(3)] == [1, 1, 1]
    assert p.availability(2) == 2


def test_member_marks_peers_outside_local_nets_remote_with_one_request_in_flight() -> None:
    zone = [ipaddress.ip_network("10.1.0.0/16")]
    kit = Kit(pieces=8, config=MemberConfig(local_nets=zone))
    near = kit.connect(have=bits("11110000"), ip="10.1.0.5")
    far = kit.connect(have=Bitfield.full(8), ip="10.2.0.5")
    assert kit.member.picker.is_local(near.cid) and not kit.member.picker.is_local(far.cid)
    far.say(far.wire.send_unchoke())
    near.say(near.wire.send_unchoke())
    asked_far = far.requests()
    assert len(asked_far) == 1, "one request in flight to a remote peer"
    assert asked_far[0].index >= 4, "a remote peer is asked for what the zone lacks"
    assert len(near.requests()) > 1 and all(r.index < 4 for r in near.requests())
    # answering the remote request brings the next one, again a piece the zone lacks
    far.answer(asked_far[0])
    assert len(far.requests()) == 1 and far.requests()[0].index >= 4


def test_without_local_nets_there_are_no_zones() -> None:
    """No peer is marked local, so the picker never zones: a peer gets a full pipeline,
    and a source that is never local (a web seed) is not starved by a connected seed."""
    kit = Kit(pieces=8)
    far = kit.connect(have=Bitfield.full(8), ip="192.0.2.7")
    far.say(far.wire.send_unchoke())
    assert not kit.member.picker.is_local(far.cid)
    assert len(far.requests()) > 1
    kit.member.picker.add_peer_have_all(-1)  # as a web seed joins
    assert kit.member.picker.pick(-1, 4), "a non-local source gets pieces without zones"


def test_config_is_local() -> None:
    config = MemberConfig(local_nets=[ipaddress.ip_network("10.16.0.0/12")])
    assert config.is_local("10.20.1.1") and not config.is_local("10.32.0.1")
    assert not config.is_local("not-an-ip")
    assert MemberConfig().is_local("192.0.2.1")
