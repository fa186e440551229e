"""Web seeds (BEP 19 `url-list`): which bytes to ask plain HTTP servers for. Pure.

Theory of operation. A web seed is an HTTP server that holds the payload's
files. To the picker it is one more peer that has every piece and never
chokes: it is added with `add_peer_have_all` under a negative key (connection
ids are positive), so rarest-first, endgame and the block states work for it
as for any peer. What differs is the transport, so this module decides:

* what to ask: whole fresh pieces first (`pick(fresh_first=True)`), rarest in
  the swarm first with the picker's random tie-break. A fresh piece adds a
  piece the swarm lacks (the web seed's bytes are then spread by the peers,
  not fetched again from it by every host), and a piece fetched whole from
  one web seed names that seed alone when its hash fails. Only when no fresh
  piece is left does it take the free blocks of partial pieces, then endgame
  duplicates, so a slow peer never holds up the last pieces.
* how much: at most MAX_FETCHES requests and `budget` bytes in flight per web
  seed; each request is one contiguous run of blocks inside one piece, which
  the engine turns into one HTTP range per file the run crosses
  (`parts_of`; BEP 47 pad files are zeros, never requested).
* whom to trust: nobody unverified. Web seed bytes go through the same piece
  assembly and SHA-1 check as a peer's; a seed whose piece fails the check is
  dropped (roost.core.member), and its blocks are fetched again from others.
* when to give up: a failed request (HTTP error, short body, timeout) backs
  the seed off for 1, 2, 4 ... s; MAX_FAILURES failures in a row drop it, and
  a client error (4xx but 408 and 429) or a redirect drops it at once: the
  file is not there and asking again will not put it there.

URLs (BEP 19): for a single-file torrent a URL ending in "/" gets the name
appended, any other is the file itself; for a multi-file torrent the URL is
a directory and name/path/to/file is appended, each component quoted.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from urllib.parse import quote

from roost.core.actions import Action, DropWebSeed, Report, WebFailed, WebFetch, WebPart
from roost.core.conn import RateMeter
from roost.core.inert import inert
from roost.core.metainfo import Info
from roost.core.picker import PiecePicker
from roost.core.wire import Block

MAX_FETCHES = 4  # requests in flight per web seed (the engine opens as many connections)
MIN_BUDGET = 4 * 1024 * 1024  # bytes in flight per web seed, at least
MAX_FETCH_BYTES = 4 * 1024 * 1024  # one request asks for at most this much
MAX_FAILURES = 3  # failures in a row before a web seed is dropped
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0


@dataclass
class _Fetch:
    seed: int
    index: int
    begin: int
    length: int
    issued_at: float


@dataclass
class WebSeed:
    key: int  # its key in the picker and the assembly (negative)
    url: str
    inflight: dict[int, _Fetch] = field(default_factory=dict)
    failures: int = 0  # in a row
    retry_at: float = 0.0
    failed_at: float = -1.0
    received: int = 0  # bytes, verified or not
    dropped: str | None = None

    @property
    def inflight_bytes(self) -> int:
        return sum(f.length for f in self.inflight.values())


def file_url(base: str, info: Info, path: tuple[str, ...]) -> str:
    """The URL of one file of the payload on a web seed (BEP 19)."""
    if info.single_file:
        return base + quote(info.name, safe="") if base.endswith("/") else base
    root = base if base.endswith("/") else base + "/"
    return root + "/".join(quote(p, safe="") for p in (info.name, *path))


class WebSeeds:
    """Every web seed of one torrent, and the requests in flight to them."""

    def __init__(self, urls: list[str], info: Info, picker: PiecePicker) -> None:
        self.info = info
        self.picker = picker
        self.seeds: dict[int, WebSeed] = {}
        for n, url in enumerate(dict.fromkeys(urls)):
            self.seeds[-(n + 1)] = WebSeed(-(n + 1), url)
        self.requests: dict[int, _Fetch] = {}  # request id -> fetch, every seed
        self._next_request = 1
        self.down = RateMeter()  # every web seed's bytes, for the progress line
        self._offsets = [f.offset for f in info.files]
        self.budget = max(MIN_BUDGET, 2 * info.piece_length)
        self._blocks_per_fetch = max(1, min(MAX_FETCH_BYTES, info.piece_length)
                                     // picker.block_size)

    def __bool__(self) -> bool:
        return any(s.dropped is None for s in self.seeds.values())

    def is_web_seed(self, key: object) -> bool:
        return isinstance(key, int) and key in self.seeds

    def start(self, out: list[Action], complete: bool) -> None:
        """Join the picker as always-complete peers (unless we have it all)."""
        for seed in self.seeds.values():
            if not complete:
                self.picker.add_peer_have_all(seed.key)
            out.append(Report("web_seed_added", {"url": inert(seed.url)}))

    # ---- asking ----
    def fill(self, out: list[Action], now: float) -> None:
        """Hand each usable web seed requests up to its budget."""
        if self.picker.complete():
            return
        for seed in self.seeds.values():
            if seed.dropped is not None or now < seed.retry_at:
                continue
            while len(seed.inflight) < MAX_FETCHES and seed.inflight_bytes < self.budget:
                reqs = self.picker.pick(seed.key, self._blocks_per_fetch, fresh_first=True,
                                        run=self._blocks_per_fetch)
                if not reqs:
                    break
                for req in reqs:  # one HTTP fetch per request the picker booked
                    self._issue(seed, req.index, req.begin, req.length, out, now)

    def _issue(self, seed: WebSeed, index: int, begin: int, length: int,
               out: list[Action], now: float) -> None:
        rid = self._next_request
        self._next_request += 1
        fetch = _Fetch(seed.key, index, begin, length, now)
        seed.inflight[rid] = fetch
        self.requests[rid] = fetch
        start = index * self.info.piece_length + begin
        out.append(WebFetch(rid, seed.key, index, begin, length,
                            self.parts_of(seed.url, start, length)))

    def parts_of(self, base: str, start: int, length: int) -> tuple[WebPart, ...]:
        """The HTTP ranges (one per file) that hold payload bytes [start, start+length)."""
        files = self.info.files
        parts: list[WebPart] = []
        i = bisect.bisect_right(self._offsets, start) - 1
        pos, end = start, start + length
        while pos < end:
            entry = files[i]
            n = min(end, entry.offset + entry.length) - pos
            if n > 0:
                url = None if entry.pad else file_url(base, self.info, entry.path)
                parts.append(WebPart(url, pos - entry.offset, n))
                pos += n
            i += 1
        return tuple(parts)

    # ---- answers ----
    def expected(self, request: int) -> int | None:
        fetch = self.requests.get(request)
        return None if fetch is None else fetch.length

    def answered(self, request: int, size: int, now: float) -> _Fetch | None:
        """A fetch came back with `size` bytes: the fetch when they are to be used,
        None when its seed was dropped meanwhile (or it is unknown)."""
        fetch = self.requests.pop(request, None)
        if fetch is None:
            return None
        seed = self.seeds[fetch.seed]
        seed.inflight.pop(request, None)
        if seed.dropped is not None:
            return None
        seed.failures = 0
        seed.received += size
        self.down.add(size)
        return fetch

    def failed(self, ev: WebFailed, out: list[Action], now: float) -> None:
        """A fetch failed: its blocks are free again; back off, or drop the seed."""
        fetch = self.requests.pop(ev.request, None)
        if fetch is None:
            return
        seed = self.seeds[fetch.seed]
        seed.inflight.pop(ev.request, None)
        if seed.dropped is not None:
            return
        self.give_back(fetch)
        reason = ev.reason if ev.status is None else f"HTTP {ev.status}: {ev.reason}"
        if ev.status is not None and (300 <= ev.status < 400 or (
                400 <= ev.status < 500 and ev.status not in (408, 429))):
            self.drop(seed.key, reason, out)
            return
        if fetch.issued_at <= seed.failed_at:
            return  # asked before the last failure: the same outage, counted once
        seed.failures += 1
        seed.failed_at = now
        if seed.failures >= MAX_FAILURES:
            self.drop(seed.key, f"{seed.failures} failures in a row, the last: {reason}", out)
            return
        wait = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (seed.failures - 1))
        seed.retry_at = now + wait
        out.append(Report("web_seed_error", {"url": inert(seed.url), "reason": inert(reason),
                                             "failures": seed.failures, "retry_in": wait}))

    @property
    def received(self) -> int:
        return sum(s.received for s in self.seeds.values())

    def give_back(self, fetch: _Fetch) -> None:
        """The blocks of a fetch that brought nothing usable are FREE again."""
        if fetch.seed not in self.picker.peers():
            return
        self.picker.request_rejected(fetch.seed, Block(fetch.index, fetch.begin, fetch.length))

    def finish(self, out: list[Action]) -> None:
        """The payload is complete: close every web seed's connections (quietly;
        late endgame answers are counted as waste by the member)."""
        for seed in self.seeds.values():
            if seed.dropped is None:
                seed.dropped = "complete"
                for rid in seed.inflight:
                    self.requests.pop(rid, None)
                seed.inflight.clear()
                out.append(DropWebSeed(seed.key))

    def drop(self, key: int, reason: str, out: list[Action]) -> None:
        """Never ask this seed again; what it had in flight goes to others."""
        seed = self.seeds.get(key)
        if seed is None or seed.dropped is not None:
            return
        seed.dropped = reason
        for rid in list(seed.inflight):
            self.requests.pop(rid, None)
        seed.inflight.clear()
        if key in self.picker.peers():
            self.picker.remove_peer(key)
        out.append(DropWebSeed(key))
        out.append(Report("web_seed_dropped", {"url": inert(seed.url), "reason": inert(reason)}))

