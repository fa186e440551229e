"""Swarm state: peer tables, expiry, locality-aware peer selection, stats. Pure.

Theory of operation. A `Swarm` holds the live peers of one registered
info-hash, keyed by peer_id. Every announce upserts its peer and stamps
`last_seen = now` (the caller passes `now`; nothing here reads a clock);
`stopped` removes the peer at once; `expire(now)` drops peers silent for
longer than the timeout. Peers are also indexed per location label in
`_PeerSet`s (array + position map, O(1) add/remove, compact forms kept in a
parallel array) so that a peer list costs O(numwant), not O(swarm): it is a
window of the array at a random offset (see `_PeerSet.sample`).

Locality. A requester with a label gets mostly same-label peers, but a share
of every list (`foreign_fraction`, at least one peer from each other label
when the list is long enough) comes from elsewhere, round-robin over the other
labels, so no group can become an island that starves. When its own label is
thin, foreign peers top the list up to `min_peers`.

Deploy completion. `finished` is the set of peer_ids that ever reported
left=0 (seeders included) and `failed` the peers the orchestrator gave up
on; both survive stop/expiry, so `done_count` only grows, and with
`expected_peers` early finishers learn when everyone is done.
"""

from __future__ import annotations

import ipaddress
import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from roost.core.tracker_scale import Pace, pace_for
from roost.core.tracker_server_codec import (
    AnnounceRequest,
    PeerEntry,
    TrackerRequestError,
    announce_response,
    compact_peer,
    failure,
    parse_announce,
    parse_scrape,
    scrape_response,
)

#: label of peers that carry none; a zone of its own for selection purposes
NO_LOCATION = ""


@dataclass(slots=True)
class Peer:
    peer_id: bytes
    ip: str
    port: int
    uploaded: int
    downloaded: int
    left: int
    last_seen: float
    first_seen: float
    location: str
    key: bytes
    entry: PeerEntry

    @property
    def complete(self) -> bool:
        return self.left == 0


@dataclass(frozen=True, slots=True)
class LocalityPolicy:
    foreign_fraction: float = 0.25
    min_peers: int = 20


@dataclass(slots=True)
class SwarmRecord:
    """The durable part of a swarm (what the state file keeps)."""

    info_hash: bytes
    token: str
    name: str = ""
    expected_peers: int = 0
    source: str = "api"  # "api" or "dir:<filename>"
    finished: set[bytes] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)  # "peer:<hex>" or "addr:<ip[:port]>"


Picked = tuple[list["Peer"], list[bytes]]  # peers and their compact forms, in step


class _PeerSet:
    """Peers of one label, with their compact forms in a parallel list.

    Removal swaps the last peer into the hole (O(1)); sampling takes a window
    at a random start, wrapping around, so a peer list is two list slices
    and one bytes join, with no Python-level loop over peers.
    """

    __slots__ = ("compacts", "items", "pos")

    def __init__(self) -> None:
        self.items: list[Peer] = []
        self.compacts: list[bytes] = []
        self.pos: dict[bytes, int] = {}

    def add(self, peer: Peer) -> None:
        self.pos[peer.peer_id] = len(self.items)
        self.items.append(peer)
        self.compacts.append(peer.entry.compact)

    def remove(self, peer_id: bytes) -> None:
        index = self.pos.pop(peer_id)
        last = self.items.pop()
        last_compact = self.compacts.pop()
        if index < len(self.items):  # move the last one into the hole
            self.items[index] = last
            self.compacts[index] = last_compact
            self.pos[last.peer_id] = index

    def sample(self, k: int, exclude: bytes, rng: random.Random) -> Picked:
        """Up to k peers other than `exclude`: a window at a random offset.

        The array order is arbitrary (arrival order shuffled by removals) and
        the offset changes on every call, so over a few announces each peer
        hears of peers all over the swarm.
        """
        items, compacts = self.items, self.compacts
        n = len(items)
        skip = self.pos.get(exclude)
        if k <= 0 or n == 0:
            return [], []
        if k >= n - (skip is not None):
            peers, comps = items[:], compacts[:]
            if skip is not None:
                del peers[skip], comps[skip]
            return peers, comps
        start = int(rng.random() * n)
        stop = start + k + (skip is not None)
        if stop <= n:
            peers, comps = items[start:stop], compacts[start:stop]
        else:
            peers = items[start:] + items[: stop - n]
            comps = compacts[start:] + compacts[: stop - n]
        if skip is not None:
            offset = (skip - start) % n
            drop = offset if offset < len(peers) else len(peers) - 1
            del peers[drop], comps[drop]
        return peers, comps

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class AnnounceResult:
    peers: list[Peer]
    compacts: list[bytes]
    complete: int
    incomplete: int


class Swarm:
    """Live state of one registered swarm."""

    def __init__(
        self, record: SwarmRecord, rng: random.Random | None = None, max_peers: int = 100_000
    ) -> None:
        self.record = record
        self.peers: dict[bytes, Peer] = {}
        self._zones: dict[str, _PeerSet] = {}
        self._all = _PeerSet()
        self._rng = rng or random.Random()
        self.max_peers = max_peers
        self.seeders = 0
        self.times_completed = 0  # scrape "downloaded": completed transitions
        self.dirty = False  # durable part changed since the last save

    # --- announces ---------------------------------------------------------

    def announce(
        self,
        req: AnnounceRequest,
        ip: str,
        location: str,
        now: float,
        numwant: int,
        policy: LocalityPolicy,
    ) -> AnnounceResult:
        """Apply one announce and pick peers for the reply."""
        peer = self.peers.get(req.peer_id)
        if peer is not None and peer.key and req.key != peer.key and peer.ip != ip:
            # another host reusing a live peer_id without its key: refuse the hijack
            raise TrackerRequestError("peer_id in use by another peer", kind="conflict")
        if req.event == "stopped":
            if peer is not None:
                self._remove(peer)
            self._note_finished(req)
            return AnnounceResult([], [], self.seeders, len(self.peers) - self.seeders)
        if peer is None and len(self.peers) >= self.max_peers:
            raise TrackerRequestError("swarm is full", kind="full")
        peer = self._upsert(peer, req, ip, location, now)
        self._note_finished(req)
        peers, compacts = self.select(peer, numwant, policy)
        return AnnounceResult(peers, compacts, self.seeders, len(self.peers) - self.seeders)

    def _upsert(
        self, peer: Peer | None, req: AnnounceRequest, ip: str, location: str, now: float
    ) -> Peer:
        if peer is not None and (peer.ip, peer.port, peer.location) != (ip, req.port, location):
            self._remove(peer)  # address or label changed: re-index from scratch
            peer = None
        is_new = peer is None
        if peer is None:
            entry = PeerEntry(req.peer_id, ip, req.port, compact_peer(ip, req.port))
            peer = Peer(req.peer_id, ip, req.port, 0, 0, req.left, now, now, location, b"", entry)
            self.peers[req.peer_id] = peer
            self._zones.setdefault(location, _PeerSet()).add(peer)
            self._all.add(peer)
            self.seeders += peer.complete
        was_complete = peer.complete
        peer.uploaded, peer.downloaded, peer.left = req.uploaded, req.downloaded, req.left
        peer.last_seen = now
        peer.key = peer.key or req.key
        self.seeders += int(peer.complete) - int(was_complete)
        # scrape "downloaded": a download finishing, counted once per transition
        # (a first-seen `completed` counts too: e.g. announced after a tracker restart)
        if (not was_complete and peer.complete) or (is_new and req.event == "completed"):
            self.times_completed += 1
        return peer

    def _note_finished(self, req: AnnounceRequest) -> None:
        if (req.left == 0 or req.event == "completed") and req.peer_id not in self.record.finished:
            self.record.finished.add(req.peer_id)
            self.dirty = True

    def _remove(self, peer: Peer) -> None:
        del self.peers[peer.peer_id]
        self._all.remove(peer.peer_id)
        zone = self._zones[peer.location]
        zone.remove(peer.peer_id)
        if not zone:
            del self._zones[peer.location]
        self.seeders -= peer.complete

    def expire(self, now: float, timeout: float) -> int:
        """Drop peers silent for more than `timeout` seconds; return how many."""
        stale = [p for p in self.peers.values() if now - p.last_seen > timeout]
        for peer in stale:
            self._remove(peer)
        return len(stale)

    # --- selection ---------------------------------------------------------

    def select(self, me: Peer, numwant: int, policy: LocalityPolicy) -> Picked:
        """Up to `numwant` other peers, same-location first (see module doc)."""
        others = [z for label, z in self._zones.items() if label != me.location]
        if me.location == NO_LOCATION or not others:
            return self._all.sample(numwant, me.peer_id, self._rng)
        own = self._zones[me.location]
        own_count = len(own) - 1
        foreign_total = sum(len(z) for z in others)
        want = min(numwant, own_count + foreign_total)
        # a full list keeps a foreign share: the fraction, or one per other label
        wanted_share = max(min(len(others), want // 2), int(want * policy.foreign_fraction + 0.5))
        share = min(want, foreign_total, wanted_share)
        local = min(own_count, want - share)
        foreign = share
        if local == own_count:
            # own label exhausted: the list gets short rather than mostly foreign,
            # yet never shorter than min_peers, so a thin label is not starved
            ratio = policy.foreign_fraction / (1 - policy.foreign_fraction)
            cap = max(len(others), math.ceil(local * ratio))
            floor = min(numwant, policy.min_peers) - local
            foreign = min(foreign_total, want - local, max(cap, floor))
        peers, compacts = own.sample(local, me.peer_id, self._rng)
        for zone, k in self._spread(others, foreign):
            more_peers, more_compacts = zone.sample(k, b"", self._rng)
            peers += more_peers
            compacts += more_compacts
        return peers, compacts

    def _spread(self, zones: list[_PeerSet], count: int) -> list[tuple[_PeerSet, int]]:
        """Split `count` evenly over `zones` (in random order), within each one's size."""
        order = list(zones)
        self._rng.shuffle(order)
        quota = [0] * len(order)
        remaining = count
        while remaining > 0:  # bounded: each pass places >= 1 or stops
            placed = 0
            for i, zone in enumerate(order):
                if remaining and quota[i] < len(zone):
                    quota[i] += 1
                    remaining -= 1
                    placed += 1
            if not placed:
                break
        return [(zone, k) for zone, k in zip(order, quota, strict=True) if k]

    # --- completion policy & stats -----------------------------------------

    def mark_failed(self, peer_id: bytes | None = None, address: str | None = None) -> int:
        """Count a peer as done-but-failed; returns how many marks were added."""
        keys: set[str] = set()
        if peer_id is not None:
            keys.add("peer:" + peer_id.hex())
        if address is not None:
            ip, port = split_address(address)
            hits = [p for p in self.peers.values() if p.ip == ip and port in (None, p.port)]
            keys.update("peer:" + p.peer_id.hex() for p in hits)
            if not hits:
                keys.add("addr:" + (ip if port is None else f"{ip}:{port}"))
        new = keys - self.record.failed
        self.record.failed |= new
        self.dirty = self.dirty or bool(new)
        return len(new)

    def done_count(self) -> int:
        """Distinct peers that finished or were marked failed."""
        if not self.record.failed:  # the hot path of every announce
            return len(self.record.finished)
        failed_ids = {bytes.fromhex(k[5:]) for k in self.record.failed if k.startswith("peer:")}
        unresolved = sum(1 for k in self.record.failed if k.startswith("addr:"))
        return len(self.record.finished | failed_ids) + unresolved

    def status(self, now: float) -> dict[str, Any]:
        """Operator/orchestrator view (JSON-ready)."""
        rec = self.record
        peers = [
            {
                "peer_id": p.peer_id.hex(),
                "address": p.ip,
                "port": p.port,
                "location": p.location,
                "left": p.left,
                "uploaded": p.uploaded,
                "downloaded": p.downloaded,
                "completed": p.complete,
                "last_seen_ago": round(now - p.last_seen, 3),
            }
            for p in self.peers.values()
        ]
        return {
            "info_hash": rec.info_hash.hex(),
            "name": rec.name,
            "expected_peers": rec.expected_peers,
            "complete_peers": self.done_count(),
            "finished_peers": len(rec.finished),
            "failed_marks": sorted(rec.failed),
            "done": rec.expected_peers > 0 and self.done_count() >= rec.expected_peers,
            "totals": {
                "peers": len(self.peers),
                "complete": self.seeders,
                "incomplete": len(self.peers) - self.seeders,
                "downloaded": self.times_completed,
                "bytes_uploaded": sum(p.uploaded for p in self.peers.values()),
                "bytes_downloaded": sum(p.downloaded for p in self.peers.values()),
                "bytes_left": sum(p.left for p in self.peers.values()),
            },
            "peers": peers,
        }

    def size(self) -> int:
        """The swarm's size for pacing: its live peers, or the deploy's expected
        count when larger (so the first replies already carry the long interval)."""
        return max(len(self.peers), self.record.expected_peers)

    def zone_counts(self) -> dict[str, int]:
        return {label: len(z) for label, z in self._zones.items()}


def split_address(address: str) -> tuple[str, int | None]:
    """ "ip", "ip:port" or "[v6]:port" -> (canonical ip, port or None)."""
    text, port = address.strip(), None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        text, port = host, int(rest[1:]) if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, _, rest = text.partition(":")
        text, port = host, int(rest)
    try:
        return str(ipaddress.ip_address(text)), port
    except ValueError:
        raise ValueError(f"not an IP address: {address!r}") from None


def location_for(
    ip: str, table: Iterable[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]
) -> str:
    """The label of the first network in `table` holding `ip` (or no label)."""
    addr = ipaddress.ip_address(ip)
    for network, label in table:
        if addr.version == network.version and addr in network:
            return label
    return NO_LOCATION


# --- the tracker: registry + policy + request handling ------------------------

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}\Z")


def valid_token(token: str) -> bool:
    return bool(_TOKEN.match(token))


@dataclass(frozen=True)
class TrackerPolicy:
    """Tunables. Defaults suit a deploy: short intervals, quick expiry."""

    interval: int = 5
    min_interval: int = 2
    peer_timeout: float = 20.0  # > 3 intervals: one lost announce is not death
    max_numwant: int = 100
    ip_override: str = "off"  # "off", or "trusted": honour `ip` only from trusted_networks
    trusted_networks: tuple[IPNetwork, ...] = ()
    location_map: tuple[tuple[IPNetwork, str], ...] = ()
    locality: LocalityPolicy = LocalityPolicy()
    max_peers_per_swarm: int = 100_000

    def pace(self, n: int) -> Pace:
        """Interval, min interval, expiry and list length for a swarm of n peers
        (roost.core.tracker_scale: these values are the floor, n may raise them)."""
        return pace_for(
            n,
            interval=self.interval,
            min_interval=self.min_interval,
            peer_timeout=self.peer_timeout,
            max_numwant=self.max_numwant,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """A reply body plus what metrics need; `error` is a failure kind or None."""

    body: bytes
    error: str | None = None
    event: str = ""


class Tracker:
    """Every registered swarm, looked up by info-hash and by secret token."""

    def __init__(self, policy: TrackerPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.swarms: dict[bytes, Swarm] = {}
        self.by_token: dict[str, Swarm] = {}
        self._rng = rng or random.Random()

    def register(self, record: SwarmRecord) -> Swarm:
        """Add or update a swarm. A token belongs to one swarm only."""
        if len(record.info_hash) != 20:
            raise ValueError("info_hash must be 20 bytes")
        if not valid_token(record.token):
            raise ValueError("token must be 16-128 characters of [A-Za-z0-9_-]")
        holder = self.by_token.get(record.token)
        if holder is not None and holder.record.info_hash != record.info_hash:
            raise ValueError("token already in use by another swarm")
        swarm = self.swarms.get(record.info_hash)
        if swarm is None:
            swarm = Swarm(record, self._rng, self.policy.max_peers_per_swarm)
            self.swarms[record.info_hash] = swarm
        else:
            self.by_token.pop(swarm.record.token, None)
            # keep the live completion marks; take the new settings
            record.finished |= swarm.record.finished
            record.failed |= swarm.record.failed
            swarm.record = record
        self.by_token[record.token] = swarm
        return swarm

    def unregister(self, info_hash: bytes) -> bool:
        swarm = self.swarms.pop(info_hash, None)
        if swarm is None:
            return False
        self.by_token.pop(swarm.record.token, None)
        return True

    def client_ip(self, req: AnnounceRequest, remote: str) -> str:
        """The address to hand out: the connection's, unless policy trusts `ip`."""
        if req.ip is None or self.policy.ip_override != "trusted":
            return remote
        addr = ipaddress.ip_address(remote)
        if any(addr.version == n.version and addr in n for n in self.policy.trusted_networks):
            return req.ip
        return remote

    def announce(self, token: str | None, raw_query: bytes, remote: str, now: float) -> Outcome:
        try:
            req = parse_announce(raw_query)
            swarm = self._swarm_for(token, req.info_hash)
            ip = self.client_ip(req, remote)
            location = req.location or (
                location_for(ip, self.policy.location_map)
                if self.policy.location_map
                else NO_LOCATION
            )
            pace = self.policy.pace(swarm.size())
            numwant = min(req.numwant, pace.list_size)
            result = swarm.announce(req, ip, location, now, numwant, self.policy.locality)
        except TrackerRequestError as exc:
            return Outcome(failure(exc.reason), exc.kind)
        rec = swarm.record
        body = announce_response(
            [p.entry for p in result.peers] if not req.compact else (),
            compact_peers=result.compacts,
            interval=pace.interval,
            min_interval=pace.min_interval,
            complete=result.complete,
            incomplete=result.incomplete,
            compact=req.compact,
            no_peer_id=req.no_peer_id,
            extra={
                "roost.expected": rec.expected_peers,
                "roost.complete_peers": swarm.done_count(),
            },
        )
        return Outcome(body, None, req.event or "update")

    def _swarm_for(self, token: str | None, info_hash: bytes) -> Swarm:
        if not token:
            raise TrackerRequestError("missing secret: announce to /<secret>/announce", "secret")
        swarm = self.by_token.get(token)
        if swarm is None:
            raise TrackerRequestError("invalid secret", "secret")
        if swarm.record.info_hash != info_hash:
            kind = "secret" if info_hash in self.swarms else "unregistered"
            raise TrackerRequestError("torrent not registered for this secret", kind)
        return swarm

    def scrape(self, token: str | None, raw_query: bytes) -> Outcome:
        """BEP 48, scoped to the token's swarm (a secret never reveals other swarms)."""
        try:
            hashes = parse_scrape(raw_query)
            if not token:
                raise TrackerRequestError("missing secret: scrape /<secret>/scrape", "secret")
            swarm = self.by_token.get(token)
            if swarm is None:
                raise TrackerRequestError("invalid secret", "secret")
        except TrackerRequestError as exc:
            return Outcome(failure(exc.reason), exc.kind)
        ih = swarm.record.info_hash
        files = []
        if not hashes or ih in hashes:
            incomplete = len(swarm.peers) - swarm.seeders
            files.append((ih, swarm.seeders, swarm.times_completed, incomplete))
        min_interval = self.policy.pace(swarm.size()).min_interval
        return Outcome(scrape_response(files, min_interval), None, "scrape")

    def expire(self, now: float) -> int:
        return sum(
            s.expire(now, self.policy.pace(s.size()).peer_timeout) for s in self.swarms.values()
        )
