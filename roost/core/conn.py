"""One peer connection's state, and every transition of it. Pure.

Theory of operation. A `Conn` holds what the wire codec (roost.core.wire) does not:
choke and interest on both sides (BEP 3 names: am_* is us, peer_* is them),
what we asked the peer for (`outstanding`), what it asked of us
(`upload_queue`), its allowed-fast pieces (BEP 6), pieces it refused, whether
it is snubbed, rates and timestamps. All changes to that state happen in the
methods below; they take the picker and the member's action list (`out`) as
arguments, so a transition's effect on the swarm is visible where it happens.

Downloads are pipelined: `fill_requests` keeps about PIPELINE_SECONDS of the
peer's rate requested, plus its round trip's (`rtt`, from 20 ms: `RoundTrip`;
at least `floor`: MIN_PIPELINE_BYTES while few peers serve us, less when many
do, see `pipeline_floor`), capped by its `reqq`.
Between roost peers, the picker hands out runs of adjacent 16 KiB blocks of
up to `big_block` bytes (negotiated through BEP 10), each one wire request;
anyone else is asked one 16 KiB block per request. What we asked
(`outstanding`) and what the picker booked are the same requests. A roost
peer's pipeline is rounded down to whole runs, so a piece is asked in one
request and arrives in one message (less than a run only when nothing is in
flight). A request the peer rejects while it unchokes us means it will not
serve that piece now: the piece is taken off its availability for
REFUSAL_SECONDS (`refused`).

Transitions:

    choke (ours)     set_choking(True/False)       on rechoke / interest / close
    interest (ours)  update_interest()             after availability or our pieces change
    choke (theirs)   Choke -> drop requests; Unchoke -> fill_requests
    requests         fill_requests / piece_received / rejected / cancel / drop_requests
    snub             no block for SNUB_SECONDS with requests out -> pipeline of 1
"""

from __future__ import annotations

import math
from collections import deque

from roost.core.actions import Action, Send
from roost.core.bitfield import Bitfield, nbytes
from roost.core.picker import PiecePicker
from roost.core.wire import BLOCK_SIZE, MAX_BLOCK, Block, PeerConnection
from roost.errors import RemoteProtocolError

OUR_REQQ = 4096
#: our BEP 10 handshake key for larger blocks between roost peers
BIG_BLOCK_KEY = b"roost_block"
#: ... and for the pieces a roost peer will hold by local means (files it is
#: placing from a kept release): a bitfield it will never request them by
RESERVED_KEY = b"roost_reserved"
#: ... and for "I never download" (a super-seeding origin): not BEP 21's
#: `upload_only`, because libtorrent drops an upload-only peer that shows it
#: nothing of interest, which a super-seeding origin does at the start
UPLOAD_ONLY_KEY = b"roost_upload_only"
DEFAULT_REQQ = 250  # what a peer that does not say accepts, per libtorrent's default
# Requests in flight per peer: about PIPELINE_SECONDS of its measured rate.
# The floor is small on purpose: on a slow link a deep queue of requests to
# one peer locks pieces away from faster peers and makes the tail long.
MIN_PIPELINE_BYTES = 512 * 1024
MAX_PIPELINE_BYTES = 32 * 1024 * 1024
# A piece waits behind everything its uploader was asked for, and in a swarm
# every host is asked for about what each host keeps in flight: PIPELINE_SECONDS
# of our download rate. So a piece takes about PIPELINE_SECONDS per hop, and
# it crosses several hops at fleet scale: N = 100 hosts, 64 MiB, took 1.61x
# the bound (last host) with 1 s, 1.53x with 0.25 s (simulated, docs/sim.md
# "Fifth pass").
# The pipeline also covers the connection's round trip (`RoundTrip`, measured
# at the handshake, without the uploader's queue: a lone request measures its
# service at the uploader's share too, so it overstates a busy peer's round
# trip): rate x (PIPELINE_SECONDS + rtt), and whole runs enough that the next
# request reaches the peer before the run it is sending ends (`rtt_units`).
# With one 256 KiB piece in flight per peer, each piece cost the uploader's
# link one idle round trip: 16 hosts, 64 MiB, 50 ms one way took 1.623x the
# bound (last host) against 1.244x with no latency (docs/sim.md, "Round trips").
PIPELINE_SECONDS = 0.25
# Round trips below this are taken as none, so a LAN (the lab, the simulator
# without latency, the pinned runs: corrupt-loss has 10 ms) keeps the pipeline
# it was tuned with; a loaded host's event loop may answer a handshake a few ms
# late. Below it the rtt would add under 8 % of PIPELINE_SECONDS; at 10 ms
# (16 hosts, 64 MiB) following it gave 1.308x the bound against 1.321x.
RTT_MIN_SECONDS = 0.02
# A run in flight leaves the uploader's link to us idle for the part of a
# round trip its sending does not cover; up to this share of a run's time the
# idle costs less than a second run queued at every hop (see fill_requests).
RTT_GAP_SHARE = 0.1
# ... but the floors of all the peers that serve us together stay near
# FLOOR_TOTAL_BYTES, and never below SMALL_PIPELINE_BYTES. An uploader serves each
# of its k peers at R/k, so a floor of F bytes makes a piece wait F*k/R in its
# queue at every hop: with 60 peers and 512 KiB, 2.5 s a hop, and a host held
# 30 MiB of requests, half of a 64 MiB payload, so its endgame began with a
# fifth of the pieces missing (simulated, N=100). The measured rate still
# raises the pipeline of a fast peer (PIPELINE_SECONDS).
FLOOR_TOTAL_BYTES = 4 * 1024 * 1024
SMALL_PIPELINE_BYTES = 128 * 1024
REFUSAL_SECONDS = 10.0  # a piece a peer refused is asked of it again after this
# A request is late when the peer has not served it LATE_FLOOR_SECONDS plus the
# time its measured rate needs for the bytes asked of it before (and with) it;
# a late request is cancelled and asked again (Transmission 3.00 sits on the
# request that fills its queue and rejects it about 10 s later). Below
# LATE_MIN_RATE we assume LATE_MIN_RATE, so a peer not yet measured is not
# judged late by its zero rate (the snub covers a peer that sends nothing).
LATE_FLOOR_SECONDS = 4.0
LATE_MIN_RATE = 64 * 1024


# what a fill_requests call came to (counted by the member: SwarmMember.fills)
FILL_ASKED = 0
FILL_NOT_INTERESTED = 1
FILL_CHOKED = 2  # and no allowed-fast piece
FILL_FULL = 3  # the pipeline is full
FILL_DRY = 4  # its last pick came back short and nothing it has became free since
FILL_PART_RUN = 5  # room for less than a run while requests are in flight
FILL_EMPTY = 6  # picked, found nothing
FILL_BACKLOG = 7  # not tried: the disk is behind, or the payload is complete (the member's)
FILL_OUTCOMES = (
    "asked", "not_interested", "choked", "full", "dry", "part_run", "empty", "backlog",
)


def pipeline_floor(sources: int) -> int:
    """The request floor per peer, in bytes, when `sources` peers unchoke us:
    MIN_PIPELINE_BYTES up to 8 of them, then FLOOR_TOTAL_BYTES shared, at
    least SMALL_PIPELINE_BYTES."""
    share = FLOOR_TOTAL_BYTES // max(1, sources)
    return max(SMALL_PIPELINE_BYTES, min(MIN_PIPELINE_BYTES, share))


def rtt_units(rate: float, rtt: float, unit_bytes: int) -> int:
    """Runs of `unit_bytes` to keep in flight so that, at `rate`, the uploader's
    link to us is not idle for a round trip `rtt` after each run: while one run
    is sent (unit_bytes / rate), the requests for the next must cross; so
    1 + rate x rtt / unit_bytes, rounded up past RTT_GAP_SHARE of a run. 1 when
    the rate or the round trip is not known."""
    if rate <= 0 or rtt <= 0 or unit_bytes <= 0:
        return 1
    return 1 + max(0, math.ceil(rate * rtt / unit_bytes - RTT_GAP_SHARE))


class RoundTrip:
    """A connection's round trip, from exchanges the peer answers at once: the
    dial -> Connected (TCP's handshake) and our handshake -> its answer (the
    dialler answers our handshake with its extended handshake). Both happen
    before any data queues on the connection, so they measure the path, not
    the uploader's queue. Times are the member's `now` (the engine's clock, or
    the simulator's), never read here. The lowest sample is kept, as TCP keeps
    its minimum RTT: a busy event loop or a late answer only ever adds to a
    sample. `seconds` is 0 below RTT_MIN_SECONDS."""

    __slots__ = ("least", "probe_at")

    def __init__(self) -> None:
        self.least: float | None = None
        self.probe_at: float | None = None  # we sent what the peer answers at once

    def sample(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        if self.least is None or seconds < self.least:
            self.least = seconds

    def answered(self, now: float) -> None:
        """Something arrived: the answer to the probe, if one is out."""
        if self.probe_at is not None:
            at, self.probe_at = self.probe_at, None
            self.sample(now - at)

    @property
    def seconds(self) -> float:
        least = self.least
        return least if least is not None and least >= RTT_MIN_SECONDS else 0.0


def blocks_in(length: int, block_size: int = BLOCK_SIZE) -> int:
    """Picker blocks in a request of `length` bytes (merged requests hold several)."""
    return -(-length // block_size)


def release_span(picker: PiecePicker, key: int, index: int, begin: int, length: int) -> None:
    """Give the picker a request (a run of blocks) back."""
    picker.request_rejected(key, Block(index, begin, length))


class Outstanding:
    """What we asked a peer for, (index, begin) -> length, and how many picker
    blocks that is. fill_requests reads `blocks` on every call (a hot path), so
    it is kept up to date by every change instead of re-summed; change the
    requests only through these methods."""

    __slots__ = ("_requests", "_sent", "block_size", "blocks")

    def __init__(self, block_size: int = BLOCK_SIZE) -> None:
        self.block_size = block_size  # the picker's
        self._requests: dict[tuple[int, int], int] = {}
        # when asked and the bytes in flight then (its own included), in the order asked
        self._sent: dict[tuple[int, int], tuple[float, int]] = {}
        self.blocks = 0

    def __len__(self) -> int:
        return len(self._requests)

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._requests

    def __setitem__(self, key: tuple[int, int], length: int) -> None:
        old = self._requests.get(key)
        if old is not None:
            self.blocks -= blocks_in(old, self.block_size)
        self._requests[key] = length
        self.blocks += blocks_in(length, self.block_size)

    def add(self, key: tuple[int, int], length: int, now: float) -> None:
        """A request sent at `now`."""
        self[key] = length
        self._sent.pop(key, None)
        self._sent[key] = (now, self.blocks * self.block_size)

    def __delitem__(self, key: tuple[int, int]) -> None:
        self.blocks -= blocks_in(self._requests.pop(key), self.block_size)
        self._sent.pop(key, None)

    def get(self, key: tuple[int, int]) -> int | None:
        return self._requests.get(key)

    def pop(self, key: tuple[int, int]) -> int | None:
        """The length asked for at `key` and forget it; None when not asked."""
        length = self._requests.pop(key, None)
        if length is not None:
            self.blocks -= blocks_in(length, self.block_size)
            self._sent.pop(key, None)
        return length

    def late(
        self, now: float, rate: float, served_at: float
    ) -> list[tuple[tuple[int, int], int]]:
        """Requests not served in time: each is due LATE_FLOOR_SECONDS after it
        was sent plus the time the bytes in flight when it was sent (its own
        included) take at `rate`. Only requests sent before the peer's last
        block (`served_at`) count: one that serves nothing at all is the
        snub's to judge. The scan stops at the first request still in time:
        due times grow nearly in the order asked, so a tick costs the late
        requests, not the whole queue (one out of order waits a tick)."""
        rate = max(rate, LATE_MIN_RATE)
        late = []
        for key, (sent, queued) in self._sent.items():
            if sent >= served_at or now < sent + LATE_FLOOR_SECONDS + queued / rate:
                break
            late.append((key, self._requests[key]))
        return late

    def items(self) -> list[tuple[tuple[int, int], int]]:
        """A snapshot: safe to iterate while changing the requests."""
        return list(self._requests.items())

    def clear(self) -> None:
        self._requests.clear()
        self._sent.clear()
        self.blocks = 0


class RateMeter:
    """Bytes per second, smoothed over a few ticks."""

    __slots__ = ("_window", "rate", "total")

    def __init__(self) -> None:
        self.total = 0
        self._window = 0
        self.rate = 0.0

    def add(self, n: int) -> None:
        self.total += n
        self._window += n

    def tick(self, dt: float) -> None:
        if dt > 0:
            instant = self._window / dt
            self.rate = instant if self.rate == 0 else 0.5 * self.rate + 0.5 * instant
        self._window = 0


class Conn:
    def __init__(
        self,
        cid: int,
        address: tuple[str, int],
        wire: PeerConnection,
        *,
        outgoing: bool,
        now: float,
        block_size: int = BLOCK_SIZE,
    ) -> None:
        self.id = cid
        self.block_size = block_size  # the picker's (MemberConfig.picker_block)
        self.address = address
        self.outgoing = outgoing
        self.wire = wire
        self.remote_id: bytes | None = None
        self.client = "?"
        self.ready = False  # handshakes exchanged
        self.closed = False
        self.in_picker = False  # the picker knows its availability
        # in another zone (MemberConfig.local_nets): one request in flight, so
        # the narrow link between zones is shared by more pieces, not deeper queues
        self.remote = False
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        self.bitfield = Bitfield(wire.num_pieces)
        self.is_seed = False
        self.reserved: Bitfield | None = None  # its RESERVED_KEY, if it sent a valid one
        self.upload_only = False  # it said it never downloads (UPLOAD_ONLY_KEY)
        self.allowed_fast: set[int] = set()  # pieces it lets us fetch while choked
        self.fast_for_it: frozenset[int] = frozenset()  # pieces we let it fetch (if we have them)
        self.refused: dict[int, float] = {}  # piece -> when it refused it while unchoking us
        self.reqq = DEFAULT_REQQ
        self.floor = MIN_PIPELINE_BYTES  # pipeline_floor of the peers serving us (the member's)
        self.big_block = BLOCK_SIZE
        # blocks of a piece (a run never spans two): the unit of rtt_units
        self.piece_blocks = 1
        self.rtt = RoundTrip()
        self.picked_dry: tuple[int, int] | None = None  # picker.pick_state when a pick fell short
        self.outstanding = Outstanding(block_size)
        # at most this many blocks in flight once it was late (None: no cap);
        # halved at each lateness, grown by one per block it serves
        self.late_cap: int | None = None
        self.upload_queue: deque[Block] = deque()
        self.head_paid = False  # the first queued block's upload tokens are taken
        self.serve_at: float | None = None  # waiting for upload tokens until then
        self.window_used = 0  # bytes of blocks handed out since the last WriteReady
        self.waiting_room = False  # WantWritable sent, no WriteReady yet
        self.down = RateMeter()
        self.up = RateMeter()
        self.ready_at = now  # set again when the handshake completes
        self.last_block_at = now
        self.last_send_at = now
        self.last_recv_at = now
        self.snubbed = False
        self.last_upload_at = 0.0  # when we last sent it a block
        self.offered_at = 0.0  # super-seeding: when we last revealed a piece to it
        self.last_asked_at = 0.0  # when we last queued a request of its
        # blocks of each piece we uploaded to it, distinct (the upload log)
        self.sent_blocks: dict[int, set[int]] = {}
        # blocks of each piece it asked for and we queued, distinct (super-seeding)
        self.queued_blocks: dict[int, set[int]] = {}

    @property
    def name(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def send(self, out: list[Action], data: bytes, now: float) -> None:
        if data and not self.closed:
            out.append(Send(self.id, data))
            self.last_send_at = now

    def on_extended_handshake(self, data: dict[bytes, object], big_block: int) -> int | None:
        """Its BEP 10 handshake: request queue, big blocks; the port it listens on."""
        reqq = data.get(b"reqq")
        if isinstance(reqq, int) and 1 <= reqq <= 100_000:
            self.reqq = reqq
        big = data.get(BIG_BLOCK_KEY)
        if isinstance(big, int) and BLOCK_SIZE <= big <= MAX_BLOCK:
            # a roost peer: we may ask it for bigger blocks; anyone else is
            # asked for the standard 16 KiB (what we accept was set when we
            # sent our own extended handshake)
            self.big_block = min(big, big_block)
        reserved = data.get(RESERVED_KEY)
        if isinstance(reserved, bytes) and len(reserved) == nbytes(len(self.bitfield)):
            try:
                bits = Bitfield.from_bytes(len(self.bitfield), reserved)
            except RemoteProtocolError:
                bits = None  # spare bits set: ignored, as any malformed key is
            self.reserved = bits if bits is not None and bits.any() else None
        # a super-seeding origin shows few pieces, but never fetches any
        self.upload_only = data.get(UPLOAD_ONLY_KEY) == 1
        port = data.get(b"p")
        return port if isinstance(port, int) and 0 < port < 65536 else None

    # ---- availability ----
    def set_bitfield(self, bits: Bitfield) -> None:
        self.bitfield = bits
        self.is_seed = bits.all()

    def update_interest(self, picker: PiecePicker, out: list[Action], now: float) -> None:
        # a peer that never said what it has (no bitfield, no Have) has nothing
        interested = self.in_picker and picker.is_interesting(self.id)
        if interested != self.am_interested:
            self.am_interested = interested
            wire = self.wire
            self.send(
                out, wire.send_interested() if interested else wire.send_not_interested(), now
            )

    # ---- requests we make ----
    def pipeline_blocks(self, *, capped: bool = True) -> int:
        rtt = self.rtt.seconds
        rate = self.down.rate
        bs = self.block_size
        # the peer's reqq counts wire requests; merged requests hold several
        # blocks. One below it: Transmission 3.00 advertises 512 and refuses
        # the 512th.
        per_request = max(1, self.big_block // bs)
        if rtt:  # a round trip worth covering (RTT_MIN_SECONDS)
            target = max(self.floor, int(rate * (PIPELINE_SECONDS + rtt)))
            unit = min(per_request, self.piece_blocks)
            # whole runs to cover the round trip only where the floor asks whole
            # runs already: with more sources (FLOOR_TOTAL_BYTES shared below a
            # run each) the others keep our link busy while one idles
            units = rtt_units(rate, rtt, unit * bs) if self.floor >= unit * bs else 1
        else:
            target = max(self.floor, int(rate * PIPELINE_SECONDS))
            unit = units = 1
        target = min(target, MAX_PIPELINE_BYTES)
        blocks = 1 if self.snubbed else max(1, target // bs)
        if units > 1 and not self.snubbed:
            # whole runs only when the round trip needs more than one: below a
            # run (many sources, a small floor) the floor stays what it was
            blocks = max(blocks, unit * units)
        if capped and self.late_cap is not None:
            blocks = min(blocks, self.late_cap)
        if self.remote:
            # one request in flight between zones, or as many as the round trip needs
            return min(blocks, per_request * units)
        return min(blocks, max(1, self.reqq - 1) * per_request)

    def fill_requests(self, picker: PiecePicker, out: list[Action], now: float) -> int:
        """Ask for more, up to the pipeline; the outcome (FILL_ASKED, or why
        nothing was asked: an index into FILL_OUTCOMES)."""
        if not self.am_interested:
            return FILL_NOT_INTERESTED
        allowed: set[int] | None = None
        if self.peer_choking:
            if not self.allowed_fast:
                return FILL_CHOKED
            allowed = self.allowed_fast
        want = self.pipeline_blocks() - self.outstanding.blocks
        if want <= 0:
            return FILL_FULL
        state = picker.pick_state(self.id) if allowed is None else None
        if state is not None and state == self.picked_dry:
            return FILL_DRY  # nothing it has became free since the last pick came back short
        run = max(1, self.big_block // self.block_size)
        # the rounding's unit: a whole run, or a whole piece when pieces are smaller
        unit = min(run, -(-picker.piece_length // picker.block_size))
        if unit > 1 and not self.remote:
            # whole runs: a piece is asked in one request, not in parts (two
            # messages, two bookings and a copy, maybe from two peers) that
            # then keep the requests out of step with the pieces. The
            # pipeline is rounded down, never up: at N=32 asking a whole piece
            # over a floor of half of one cost the last host 12 % (simulated,
            # 64 MiB, 256 KiB pieces, 40 Mbit/s); less than a run is asked
            # only when nothing is in flight.
            if want >= unit:
                want -= want % unit
            elif self.outstanding.blocks:
                return FILL_PART_RUN
        picks = picker.pick(self.id, want, allowed=allowed, run=run)
        if not picks:
            self.picked_dry = state
            return FILL_EMPTY
        add, request = self.outstanding.add, self.wire.send_request
        data = []
        taken = self.outstanding.blocks
        for index, begin, length in picks:
            add((index, begin), length, now)
            data.append(request(index, begin, length))
        self.picked_dry = state if self.outstanding.blocks - taken < want else None
        self.send(out, b"".join(data), now)
        return FILL_ASKED

    def piece_received(
        self, picker: PiecePicker, index: int, begin: int, size: int, now: float
    ) -> bool:
        """A Piece message arrived: True when it is what we asked for."""
        length = self.outstanding.pop((index, begin))
        if length is None or length != size:
            if length is not None:  # not what we asked for: ask again, elsewhere
                release_span(picker, self.id, index, begin, length)
            return False
        self.last_block_at = now
        self.snubbed = False
        self.down.add(size)
        if self.late_cap is not None:
            self.late_cap += 1
            if self.late_cap >= self.pipeline_blocks(capped=False):
                self.late_cap = None
        return True

    def reask_late(self, picker: PiecePicker, out: list[Action], now: float) -> bool:
        """Cancel the requests it sat on and give them back to the picker, to
        be asked of whoever has them next (it too); halve its pipeline. True
        when any was late."""
        late = self.outstanding.late(now, self.down.rate, self.last_block_at)
        if not late:
            return False
        self.late_cap = max(1, min(self.pipeline_blocks(), self.outstanding.blocks) // 2)
        wire = self.wire
        self.send(out, b"".join(wire.send_cancel(i, b, n) for (i, b), n in late), now)
        for (index, begin), length in late:
            del self.outstanding[(index, begin)]
            release_span(picker, self.id, index, begin, length)
        return True

    def rejected(
        self, picker: PiecePicker, index: int, begin: int, out: list[Action], now: float
    ) -> None:
        length = self.outstanding.pop((index, begin))
        if length is None:
            return
        release_span(picker, self.id, index, begin, length)
        # a refusal while we may ask means it will not serve this piece now:
        # look elsewhere (rejects after a Choke are the choke's, not the piece's)
        if self.peer_choking:
            self.allowed_fast.discard(index)
        elif not self.is_seed and self.bitfield[index]:
            self.bitfield.clear(index)
            picker.peer_lacks(self.id, index)
            self.refused[index] = now
            self.update_interest(picker, out, now)

    def forgive_refusals(self, picker: PiecePicker, out: list[Action], now: float) -> None:
        """Ask again, REFUSAL_SECONDS later, for pieces it refused: a refusal may
        have been a full queue, not a missing piece, and it will not send a
        second Have for a piece it already announced."""
        for index, at in list(self.refused.items()):
            if now - at < REFUSAL_SECONDS:
                continue
            del self.refused[index]
            if not self.bitfield[index]:
                self.bitfield.set(index)
                picker.peer_has(self.id, index)
        self.is_seed = self.bitfield.all()
        self.update_interest(picker, out, now)

    def drop_requests(self, picker: PiecePicker, out: list[Action] | None, now: float) -> None:
        """Give every outstanding request back to the picker (choked, snubbed,
        closing); with `out`, tell the peer (Cancel)."""
        items = self.outstanding.items()
        if out is not None and items:
            wire = self.wire
            self.send(out, b"".join(wire.send_cancel(i, b, n) for (i, b), n in items), now)
        for (index, begin), length in items:
            release_span(picker, self.id, index, begin, length)
        self.outstanding.clear()

    def cancel_block(self, req: Block, out: list[Action], now: float) -> None:
        """Endgame: another peer delivered this block first."""
        if self.outstanding.get((req.index, req.begin)) == req.length:
            del self.outstanding[(req.index, req.begin)]
            self.send(out, self.wire.send_cancel(req.index, req.begin, req.length), now)

    # ---- uploads: our choke ----
    def set_choking(self, choke: bool, have: Bitfield, out: list[Action], now: float) -> bool:
        """Choke or unchoke it; True when that changed anything."""
        if choke == self.am_choking:
            return False
        self.am_choking = choke
        wire = self.wire
        if not choke:
            self.send(out, wire.send_unchoke(), now)
            return True
        data = [wire.send_choke()]
        # allowed-fast requests survive a choke (BEP 6); the rest are rejected
        # when the peer understands Reject, else dropped (BEP 3)
        queue = self.upload_queue
        if queue:
            fast = {i for i in self.fast_for_it if have[i]} if wire.fast else set()
            if wire.fast:
                data.extend(wire.send_reject(r.index, r.begin, r.length)
                            for r in queue if r.index not in fast)
            self.upload_queue = deque(r for r in queue if r.index in fast)
        else:  # nothing queued: nothing to reject or keep (most chokes)
            self.upload_queue = deque()
        self.send(out, b"".join(data), now)
        return True

    def cancel_upload(self, index: int, begin: int, length: int) -> None:
        item = Block(index, begin, length)
        if item in self.upload_queue:
            self.upload_queue.remove(item)

    def record_queued(self, index: int, begin: int, length: int, piece_size: int) -> bool:
        """As record_sent, for the blocks of a piece it asked for and we queued."""
        return _record(self.queued_blocks, index, begin, length, piece_size)

    def record_sent(self, index: int, begin: int, length: int, piece_size: int) -> bool:
        """Count the distinct blocks of a piece sent to it; True when that
        completes the piece (a block sent twice, after a snub or in endgame,
        must not make a half-sent piece count as sent)."""
        return _record(self.sent_blocks, index, begin, length, piece_size)


def _record(
    pieces: dict[int, set[int]], index: int, begin: int, length: int, piece_size: int
) -> bool:
    blocks = pieces.setdefault(index, set())
    blocks.update(range(begin // BLOCK_SIZE, -(-(begin + length) // BLOCK_SIZE)))
    if len(blocks) * BLOCK_SIZE >= piece_size:
        del pieces[index]
        return True
    return False


def client_name(peer_id: bytes) -> str:
    """Azureus-style peer ids: -XX1234-...; anything else shown as hex."""
    if len(peer_id) == 20 and peer_id[:1] == b"-" and peer_id[7:8] == b"-":
        return peer_id[1:7].decode("ascii", "replace")
    return peer_id[:8].hex()
