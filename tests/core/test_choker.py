"""Choker and BEP 16 super-seeder, including an upload-log simulation."""

from __future__ import annotations

import random
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.core.bitfield import Bitfield
from roost.core.choker import Choker, PeerStat, SuperSeeder


def stat(key: str, down: float = 0, up: float = 0, **kw: bool) -> PeerStat:
    return PeerStat(
        key,
        interested=kw.get("interested", True),
        download_rate=down,
        upload_rate=up,
        is_seed=kw.get("is_seed", False),
        snubbed=kw.get("snubbed", False),
    )


# ------------------------------------------------------------ choker


def test_unchokes_all_interested_non_seeds_when_slots_suffice() -> None:
    c = Choker(slots=4, rng=random.Random(1))
    peers = [stat("a"), stat("b", interested=False), stat("s", is_seed=True), stat("c")]
    assert c.rechoke(peers) == {"a", "c"}


def test_best_rates_plus_one_optimistic() -> None:
    c = Choker(slots=3, optimistic_every=3, rng=random.Random(2))
    peers = [stat(k, down=rate) for k, rate in zip("abcdef", [10, 50, 40, 1, 2, 3], strict=True)]
    got = c.rechoke(peers)
    assert {"b", "c"} <= got and len(got) == 3
    opt = c.optimistic
    assert opt in {"a", "d", "e", "f"} and opt in got


def test_seeding_ranks_by_upload_rate_among_equals() -> None:
    c = Choker(slots=3, rng=random.Random(3))
    peers = [stat(k, down=100 - i, up=i) for i, k in enumerate("abcdef")]
    got = c.rechoke(peers, seeding=True)
    assert {"f", "e"} <= got


def test_seeding_feeds_the_peers_furthest_behind_first() -> None:
    c = Choker(slots=3, rng=random.Random(3))
    peers = [stat(k, up=100 - i) for i, k in enumerate("abcdef")]
    for p, missing in zip(peers, [1, 2, 90, 3, 80, 4], strict=True):
        p.missing = missing
    got = c.rechoke(peers, seeding=True)
    assert {"c", "e"} <= got  # the laggards, though we upload to them slowest


def test_snubbed_peers_only_get_the_optimistic_slot() -> None:
    c = Choker(slots=3, rng=random.Random(4))
    peers = [stat("a", down=100, snubbed=True), stat("b", down=5), stat("c", down=4)]
    peers += [stat("d", down=1), stat("e", down=0)]
    got = c.rechoke(peers)
    assert {"b", "c"} <= got
    assert "a" not in got or c.optimistic == "a"
    # snubbed peers do not fill regular slots even when they are free
    c = Choker(slots=3, rng=random.Random(4))
    peers = [stat("b", down=5)] + [stat(f"s{i}", down=9, snubbed=True) for i in range(3)]
    for _ in range(5):
        got = c.rechoke(peers)
        assert len(got) == 2 and "b" in got and c.optimistic in got


def test_optimistic_rotates_every_n_rounds() -> None:
    c = Choker(slots=2, optimistic_every=3, rng=random.Random(5))
    peers = [stat("top", down=100)] + [stat(f"p{i}") for i in range(10)]
    history = []
    for _ in range(9):
        got = c.rechoke(peers)
        assert "top" in got and len(got) == 2
        history.append(c.optimistic)
    assert history[0] == history[1] == history[2]
    assert history[3] == history[4] == history[5] != history[2]
    assert history[6] != history[5]


def test_never_unchokes_seeds_or_uninterested() -> None:
    c = Choker(slots=2, rng=random.Random(6))
    peers = [stat(f"s{i}", down=1000, is_seed=True) for i in range(5)]
    peers += [stat(f"u{i}", down=1000, interested=False) for i in range(5)]
    peers += [stat(f"p{i}", down=i) for i in range(5)]
    for _ in range(10):
        assert all(str(k).startswith("p") for k in c.rechoke(peers))


# ------------------------------------------------------------ super-seeder


def empty(n: int) -> Bitfield:
    return Bitfield(n)


def test_offers_one_piece_at_a_time_and_serves_only_offers() -> None:
    s = SuperSeeder(4, random.Random(1))
    s.add_peer("a", empty(4))
    s.add_peer("b", empty(4))
    pa = s.next_offer("a")
    assert pa is not None
    assert s.next_offer("a") is None  # one outstanding offer
    pb = s.next_offer("b")
    assert pb is not None and pb != pa
    assert s.may_serve("a", pa) and not s.may_serve("a", pb) and not s.may_serve("x", pa)
    s.on_sent("a", pa)
    # given to a: a may ask again (a choke or Cancel dropped what it asked)
    # until it says it has it
    assert s.may_serve("a", pa) and not s.may_serve("b", pa)
    assert s.next_offer("a") is None  # waits until pa spreads
    s.on_peer_has("a", pa)
    assert not s.may_serve("a", pa)
    assert s.next_offer("a") is None  # its own Have is not spreading
    s.on_peer_has("b", pa)  # b got it from a
    pa2 = s.next_offer("a")
    assert pa2 is not None and pa2 not in (pa, pb)


def test_lone_peer_is_not_starved() -> None:
    s = SuperSeeder(3, random.Random(2))
    s.add_peer("a", empty(3))
    got = []
    for _ in range(3):
        i = s.next_offer("a")
        assert i is not None
        got.append(i)
        s.on_sent("a", i)
        s.on_peer_has("a", i)
    assert sorted(got) == [0, 1, 2]
    assert s.next_offer("a") is None


def test_never_offers_what_the_peer_has_and_least_sent_after_phase_one() -> None:
    s = SuperSeeder(3, random.Random(3))
    bf = Bitfield(3)
    bf.set(0)
    s.add_peer("a", bf)  # piece 0 is covered by a
    s.add_peer("b", empty(3))
    offers = set()
    for k in ("a", "b"):
        i = s.next_offer(k)
        assert i is not None and i != 0
        offers.add(i)
    assert offers == {1, 2}
    got = {}
    for k in ("a", "b"):
        (got[k],) = s.offers_of(k)
        s.on_sent(k, got[k])
        s.on_peer_has(k, got[k])
    assert s.next_offer("b") is None  # b's piece has not spread yet
    s.on_peer_has("a", got["b"])  # a fetched b's piece from b
    # phase 2: b lacks 0 and the piece a got; 0 was never sent by us, so 0 first
    assert s.next_offer("b") == 0
    assert s.sent_counts() == [0, 1, 1]


def test_withdraw_and_leaving_peer_return_offers() -> None:
    s = SuperSeeder(1, random.Random(4))
    s.add_peer("a", empty(1))
    s.add_peer("b", empty(1))
    assert s.next_offer("a") == 0
    assert s.next_offer("b") is None  # exclusive while unsent
    s.withdraw("a")
    assert not s.may_serve("a", 0)
    assert s.next_offer("b") == 0
    s.remove_peer("b")
    assert s.next_offer("a") == 0


def simulate(
    n_pieces: int,
    n_peers: int,
    seed: int,
    *,
    origin_rate: int = 1,
    max_offers: int = 1,
    event_driven: bool = False,
) -> tuple[list[int], SuperSeeder, dict[int, Bitfield]]:
    """Cooperative peers: each requests what it is offered; the origin uploads
    `origin_rate` whole pieces per tick; peers swap one piece per tick each.
    `event_driven`: the origin asks for offers only for peers freed by
    on_peer_has / on_sent, plus a sweep every 10 ticks (as the engine does).
    Returns the origin's upload log (piece per whole-piece upload)."""
    rng = random.Random(seed)
    s = SuperSeeder(n_pieces, random.Random(seed), max_offers=max_offers)
    have: dict[int, Bitfield] = {}
    for k in range(n_peers):
        have[k] = Bitfield(n_pieces)
        s.add_peer(k, have[k])
    log: list[int] = []
    to_offer: set[Hashable] = set(range(n_peers))

    def announce(k: int, i: int) -> None:
        have[k].set(i)
        to_offer.update(s.on_peer_has(k, i))

    for tick in range(20 * n_pieces * n_peers + 100):
        if all(bf.all() for bf in have.values()):
            break
        if not event_driven or tick % 10 == 0:
            to_offer.update(range(n_peers))
        for key in list(to_offer):
            for _ in range(n_pieces + 1):
                if s.next_offer(key) is None:
                    break
            else:
                raise AssertionError("next_offer never said wait")
        to_offer.clear()
        # the origin serves the requests for offered pieces, some per tick
        wanting = [(k, i) for k in range(n_peers) for i in s.offers_of(k) if not have[k][i]]
        rng.shuffle(wanting)
        for k, i in wanting[:origin_rate]:
            assert s.may_serve(k, i)
            s.on_sent(k, i)
            to_offer.add(k)
            log.append(i)
            announce(k, i)
        # peer-to-peer: every peer downloads one piece it lacks from a random other peer
        for k in rng.sample(range(n_peers), n_peers):
            others = [o for o in range(n_peers) if o != k]
            rng.shuffle(others)
            for o in others:
                useful = [i for i in have[o].iter_set() if not have[k][i]]
                if useful:
                    announce(k, rng.choice(useful))
                    break
    return log, s, have


def assert_each_once_before_any_twice(log: list[int], n_pieces: int) -> None:
    seen: set[int] = set()
    for i in log:
        if len(seen) == n_pieces:
            break
        assert i not in seen, f"piece {i} uploaded twice before every piece was uploaded once"
        seen.add(i)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 40), st.integers(1, 8), st.integers(0, 2**32), st.integers(1, 3),
    st.integers(1, 3), st.booleans(),
)  # fmt: skip
def test_superseed_upload_log(
    n_pieces: int, n_peers: int, seed: int, origin_rate: int, max_offers: int, events: bool
) -> None:
    log, s, have = simulate(
        n_pieces, n_peers, seed, origin_rate=origin_rate, max_offers=max_offers,
        event_driven=events,
    )  # fmt: skip
    assert all(bf.all() for bf in have.values()), "the swarm must finish"
    assert_each_once_before_any_twice(log, n_pieces)
    assert s.sent_counts() == [log.count(i) for i in range(n_pieces)]


def test_superseed_origin_uploads_about_one_copy() -> None:
    """With a healthy swarm the origin needs to upload little more than one copy."""
    log, _, _ = simulate(64, 8, seed=11)
    assert len(set(log)) == 64
    assert len(log) <= 64 * 1.5


def test_upload_log_checker_can_fail() -> None:
    with pytest.raises(AssertionError):
        assert_each_once_before_any_twice([0, 1, 0, 2], 3)
    assert_each_once_before_any_twice([0, 1, 2, 0, 0], 3)


def test_set_bitfield_keeps_announced_offers() -> None:
    s = SuperSeeder(4, random.Random(5))
    s.add_peer("a", empty(4))  # added at handshake time, bitfield not yet known
    s.add_peer("b", empty(4))
    first = s.next_offer("a")
    assert first is not None
    bf = Bitfield(4)
    s.set_bitfield("a", bf)  # it had nothing: the offer it was told about stands
    assert s.offers_of("a") == {first} and s.may_serve("a", first)
    bf.set(first)
    s.set_bitfield("b", bf)  # b already has a's piece: it is covered, a's offer stays
    assert s.may_serve("a", first)
    s.set_bitfield("a", bf)  # a has it after all: the offer is released
    assert s.offers_of("a") == set()
    nxt = s.next_offer("a")
    assert nxt is not None and nxt != first
    s.set_bitfield("b", Bitfield(4))  # b's bitfield shrank: a still covers `first`
    assert s.next_offer("b") not in (None, first, nxt)


def test_on_peer_has_names_the_peers_it_frees() -> None:
    s = SuperSeeder(3, random.Random(6))
    for k in "abc":
        s.add_peer(k, empty(3))
    pa = s.next_offer("a")
    pb = s.next_offer("b")
    assert pa is not None and pb is not None
    s.on_sent("a", pa)
    assert s.on_peer_has("a", pa) == []  # its own Have frees nothing
    assert s.next_offer("a") is None
    assert s.on_peer_has("c", pa) == ["a"]  # pa spread from a to c
    assert s.on_peer_has("b", pa) == []  # b is still on its own offer; a was freed already
    assert s.next_offer("a") not in (None, pa, pb)


def test_a_piece_whose_only_copy_left_with_its_peer_is_offered_again() -> None:
    s = SuperSeeder(2, random.Random(7))
    for k in "abc":
        s.add_peer(k, empty(2))
    pa = s.next_offer("a")
    pb = s.next_offer("b")
    assert pa is not None and pb is not None
    assert s.next_offer("c") is None  # both pieces are taken, phase 1
    s.on_sent("a", pa)
    s.remove_peer("a")  # died before announcing pa: that copy is gone
    assert s.next_offer("c") == pa
    # announced copies survive their sender: b's piece spreads to c, b leaves
    s.on_sent("b", pb)
    s.on_peer_has("b", pb)
    s.on_peer_has("c", pb)
    s.remove_peer("b")
    s.on_sent("c", pa)
    s.on_peer_has("c", pa)
    assert s.next_offer("c") is None  # c has everything
    assert s.sent_counts() == [1 + (pa == 0), 1 + (pa == 1)]
