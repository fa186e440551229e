"""Swarm and Tracker logic with a driven clock and seeded randomness."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.core import bencode
from roost.core.tracker_server_codec import PeerEntry, compact_peer
from roost.core.tracker_swarm import (
    LocalityPolicy,
    Peer,
    SwarmRecord,
    Tracker,
    TrackerPolicy,
    _PeerSet,
    split_address,
)

from .helpers import TOKEN, announce_query, pid

IH = b"\x11" * 20


def make(policy: TrackerPolicy | None = None, expected: int = 0) -> Tracker:
    tracker = Tracker(policy or TrackerPolicy(), random.Random(7))
    tracker.register(SwarmRecord(IH, TOKEN, "app", expected))
    return tracker


def ok(tracker: Tracker, query: bytes, remote: str = "10.0.0.1", now: float = 0.0) -> dict:
    outcome = tracker.announce(TOKEN, query, remote, now)
    body = bencode.decode(outcome.body)
    assert isinstance(body, dict)
    assert outcome.error is None, body
    return body


def peers_of(body: dict) -> list[tuple[str, int]]:
    raw = body[b"peers"]
    return [
        (str(ipaddress.IPv4Address(raw[i : i + 4])), int.from_bytes(raw[i + 4 : i + 6], "big"))
        for i in range(0, len(raw), 6)
    ]


def test_peers_see_each_other_but_not_themselves() -> None:
    tracker = make()
    for n in range(5):
        body = ok(tracker, announce_query(IH, pid(n), port=7000 + n), f"10.0.0.{n + 1}")
        got = peers_of(body)
        assert len(got) == n
        assert (f"10.0.0.{n + 1}", 7000 + n) not in got


def test_stopped_removes_at_once_and_silent_peers_expire() -> None:
    tracker = make(TrackerPolicy(peer_timeout=10))
    swarm = tracker.swarms[IH]
    ok(tracker, announce_query(IH, pid(1)), now=0)
    ok(tracker, announce_query(IH, pid(2)), now=0)
    ok(tracker, announce_query(IH, pid(1), event="stopped"), now=1)
    assert set(swarm.peers) == {pid(2)}
    ok(tracker, announce_query(IH, pid(3)), now=8)
    assert tracker.expire(now=10.5) == 1  # pid(2) silent for 10.5 s > 10
    assert set(swarm.peers) == {pid(3)}
    assert tracker.expire(now=18) == 0


def test_counts_seeders_leechers_and_scrape() -> None:
    tracker = make()
    ok(tracker, announce_query(IH, pid(1), left=0))
    ok(tracker, announce_query(IH, pid(2), left=5))
    body = ok(tracker, announce_query(IH, pid(2), left=0, event="completed"))
    assert (body[b"complete"], body[b"incomplete"]) == (2, 0)
    scrape = bencode.decode(tracker.scrape(TOKEN, b"").body)
    assert scrape[b"files"][IH] == {b"complete": 2, b"downloaded": 1, b"incomplete": 0}  # type: ignore[index]


def test_numwant_clamped_by_policy() -> None:
    tracker = make(TrackerPolicy(max_numwant=10))
    for n in range(30):
        ok(tracker, announce_query(IH, pid(n)), f"10.0.1.{n}")
    body = ok(tracker, announce_query(IH, pid(99), numwant=500))
    assert len(peers_of(body)) == 10
    assert peers_of(ok(tracker, announce_query(IH, pid(98), numwant=0))) == []


def test_secrets_and_registration_are_enforced() -> None:
    tracker = make()
    tracker.register(SwarmRecord(b"\x22" * 20, "other-swarm-token-000", "b"))
    query = announce_query(IH, pid(1))
    cases = {
        None: "secret",
        "": "secret",
        "wrong-token-00000000000": "secret",
        "other-swarm-token-000": "secret",  # a real secret, but for another swarm
    }
    for token, kind in cases.items():
        outcome = tracker.announce(token, query, "10.0.0.1", 0)
        assert outcome.error == kind
        assert b"failure reason" in bencode.decode(outcome.body)  # type: ignore[operator]
    unregistered = announce_query(b"\x33" * 20, pid(1))
    assert tracker.announce(TOKEN, unregistered, "10.0.0.1", 0).error == "unregistered"
    assert tracker.swarms[IH].peers == {}


def test_ip_parameter_needs_policy() -> None:
    query = announce_query(IH, pid(1), ip="192.0.2.9")
    off = make()
    ok(off, query, "10.0.0.1")
    assert off.swarms[IH].peers[pid(1)].ip == "10.0.0.1"
    trusted = make(
        TrackerPolicy(
            ip_override="trusted", trusted_networks=(ipaddress.ip_network("10.9.0.0/16"),)
        )
    )
    ok(trusted, query, "10.0.0.1")  # not from a trusted network: ignored
    assert trusted.swarms[IH].peers[pid(1)].ip == "10.0.0.1"
    ok(trusted, announce_query(IH, pid(2), ip="192.0.2.9"), "10.9.3.4")
    assert trusted.swarms[IH].peers[pid(2)].ip == "192.0.2.9"


def test_ipv6_peers_go_to_peers6() -> None:
    tracker = make()
    ok(tracker, announce_query(IH, pid(1), port=7001), "2001:db8::1")
    body = ok(tracker, announce_query(IH, pid(2), port=7002), "10.0.0.2")
    assert body[b"peers"] == b""
    assert body[b"peers6"] == ipaddress.IPv6Address("2001:db8::1").packed + (7001).to_bytes(
        2, "big"
    )
    body = ok(tracker, announce_query(IH, pid(3), compact=0), "10.0.0.3")
    ips = {d[b"ip"] for d in body[b"peers"]}
    assert ips == {b"2001:db8::1", b"10.0.0.2"}


def test_peer_id_hijack_from_another_host_is_refused() -> None:
    tracker = make()
    ok(tracker, announce_query(IH, pid(1), key="k1"), "10.0.0.1")
    outcome = tracker.announce(TOKEN, announce_query(IH, pid(1), key="zz"), "10.6.6.6", 1)
    assert outcome.error == "conflict"
    assert tracker.swarms[IH].peers[pid(1)].ip == "10.0.0.1"
    ok(tracker, announce_query(IH, pid(1), key="k1"), "10.0.0.7")  # same key: moved host, fine


def test_completion_policy_counts_finished_and_failed() -> None:
    tracker = make(expected=4)
    swarm = tracker.swarms[IH]
    body = ok(tracker, announce_query(IH, pid(0), left=0), "10.0.0.1")  # the origin
    assert (body[b"roost.expected"], body[b"roost.complete_peers"]) == (4, 1)
    ok(tracker, announce_query(IH, pid(1), left=10), "10.0.0.2", now=1)
    ok(tracker, announce_query(IH, pid(2), left=10, port=7777), "10.0.0.3", now=1)
    ok(tracker, announce_query(IH, pid(1), left=0, event="completed"), "10.0.0.2", now=2)
    ok(tracker, announce_query(IH, pid(1), event="stopped", left=0), "10.0.0.2", now=3)
    assert swarm.done_count() == 2  # a finisher that left still counts
    assert swarm.mark_failed(address="10.0.0.3:7777") == 1
    assert swarm.mark_failed(peer_id=pid(2)) == 0  # same peer, counted once
    assert swarm.mark_failed(address="10.0.0.99") == 1  # never announced: still one
    body = ok(tracker, announce_query(IH, pid(0), left=0), "10.0.0.1", now=4)
    assert body[b"roost.complete_peers"] == 4
    assert swarm.status(4.0)["done"] is True


def test_status_shape() -> None:
    tracker = make(expected=2)
    ok(tracker, announce_query(IH, pid(1), left=7, uploaded=3, downloaded=4), now=1)
    st = tracker.swarms[IH].status(3.5)
    peer = st["peers"][0]  # type: ignore[index]
    assert peer["address"] == "10.0.0.1" and peer["left"] == 7 and peer["completed"] is False
    assert peer["uploaded"] == 3 and peer["downloaded"] == 4 and peer["last_seen_ago"] == 2.5
    assert st["totals"] == {  # type: ignore[comparison-overlap]
        "peers": 1,
        "complete": 0,
        "incomplete": 1,
        "downloaded": 0,
        "bytes_uploaded": 3,
        "bytes_downloaded": 4,
        "bytes_left": 7,
    }


def test_split_address() -> None:
    assert split_address("10.0.0.1") == ("10.0.0.1", None)
    assert split_address("10.0.0.1:80") == ("10.0.0.1", 80)
    assert split_address("[2001:db8::1]:80") == ("2001:db8::1", 80)
    assert split_address("2001:db8::1") == ("2001:db8::1", None)
    with pytest.raises(ValueError):
        split_address("host.example")


# --- locality ------------------------------------------------------------------


def fill_zones(tracker: Tracker, zones: int = 3, per_zone: int = 20) -> dict[str, str]:
    """Announce `per_zone` peers in each zone; returns address -> zone."""
    where = {}
    for z in range(zones):
        for n in range(per_zone):
            ip = f"10.{z}.0.{n + 1}"
            where[ip] = f"zone{z}"
            ok(tracker, announce_query(IH, pid(z * 100 + n), location=f"zone{z}", numwant=0), ip)
    return where


@pytest.mark.parametrize("numwant", [10, 20, 30, 50, 100])
def test_locality_three_zones_of_twenty(numwant: int) -> None:
    """The issue's claim: >= 70% same-zone, and every other zone present."""
    tracker = make()
    where = fill_zones(tracker)
    for z in range(3):
        for n in range(20):
            q = announce_query(IH, pid(z * 100 + n), location=f"zone{z}", numwant=numwant)
            got = peers_of(ok(tracker, q, f"10.{z}.0.{n + 1}", now=1))
            zones = [where[ip] for ip, _ in got]
            same = zones.count(f"zone{z}")
            assert same / len(zones) >= 0.70, (numwant, zones)
            assert set(zones) == {"zone0", "zone1", "zone2"}, zones
            assert len(got) >= min(numwant, 20)
            assert len(set(got)) == len(got)


def test_locality_from_subnet_map() -> None:
    policy = TrackerPolicy(
        location_map=tuple((ipaddress.ip_network(f"10.{z}.0.0/16"), f"zone{z}") for z in range(3))
    )
    tracker = make(policy)
    for z in range(3):
        for n in range(20):
            ok(tracker, announce_query(IH, pid(z * 100 + n), numwant=0), f"10.{z}.0.{n + 1}")
    assert tracker.swarms[IH].zone_counts() == {"zone0": 20, "zone1": 20, "zone2": 20}
    got = peers_of(ok(tracker, announce_query(IH, pid(1), numwant=20), "10.0.0.2"))
    assert sum(ip.startswith("10.0.") for ip, _ in got) >= 14


def test_a_lone_zone_is_not_starved() -> None:
    tracker = make()
    fill_zones(tracker, zones=2, per_zone=20)
    q = announce_query(IH, pid(999), location="lonely", numwant=50)
    got = peers_of(ok(tracker, q, "10.9.9.9"))
    assert len(got) >= LocalityPolicy().min_peers
    assert {ip.split(".")[1] for ip, _ in got} == {"0", "1"}


def test_every_peer_is_reachable_across_zones() -> None:
    """No island: over repeated announces, each zone hears of every other zone."""
    tracker = make()
    fill_zones(tracker, zones=4, per_zone=30)
    heard: dict[str, set[str]] = {}
    for z in range(4):
        for n in range(30):
            q = announce_query(IH, pid(z * 100 + n), location=f"zone{z}", numwant=50)
            for ip, _ in peers_of(ok(tracker, q, f"10.{z}.0.{n + 1}", now=1)):
                heard.setdefault(f"zone{z}", set()).add(ip.split(".")[1])
    assert all(seen == {"0", "1", "2", "3"} for seen in heard.values())


# --- the O(k) sampler ------------------------------------------------------------


def _peer(n: int) -> Peer:
    ip = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
    entry = PeerEntry(pid(n), ip, 1000 + n % 60000, compact_peer(ip, 1000 + n % 60000))
    return Peer(pid(n), ip, entry.port, 0, 0, 1, 0.0, 0.0, "", b"", entry)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=120),
    st.integers(0, 60),
    st.integers(0, 45),
    st.integers(0, 2**32),
)
def test_peerset_sample_is_distinct_excludes_me_and_full(
    ops: list[tuple[bool, int]], k: int, me: int, seed: int
) -> None:
    ps, live = _PeerSet(), set()
    for add, n in ops:
        if add and n not in live:
            ps.add(_peer(n))
            live.add(n)
        elif not add and n in live:
            ps.remove(pid(n))
            live.discard(n)
    assert sorted(ps.pos) == sorted(pid(n) for n in live)
    assert all(ps.items[i].peer_id == key for key, i in ps.pos.items())
    assert ps.compacts == [p.entry.compact for p in ps.items]
    peers, compacts = ps.sample(k, pid(me), random.Random(seed))
    ids = [p.peer_id for p in peers]
    assert len(set(ids)) == len(ids)
    assert pid(me) not in ids
    others = len(live - {me})
    assert len(ids) == min(k, others)
    assert compacts == [p.entry.compact for p in peers]


def test_sampling_reaches_everyone() -> None:
    """Random windows: over many lists, every peer is handed out."""
    ps = _PeerSet()
    for n in range(300):
        ps.add(_peer(n))
    rng = random.Random(1)
    seen: set[bytes] = set()
    for _ in range(60):
        seen.update(p.peer_id for p in ps.sample(50, pid(0), rng)[0])
    assert seen == {pid(n) for n in range(1, 300)}


def test_scrape_downloaded_counts_each_finish_once() -> None:
    tracker = make()
    swarm = tracker.swarms[IH]
    ok(tracker, announce_query(IH, pid(1), left=0))  # a seeder: not a download
    ok(tracker, announce_query(IH, pid(2), left=9))
    ok(tracker, announce_query(IH, pid(2), left=0))  # finished (no event)
    ok(tracker, announce_query(IH, pid(2), left=0, event="completed"))  # late event
    ok(tracker, announce_query(IH, pid(3), left=0, event="completed"))  # first seen completing
    assert swarm.times_completed == 2
