"""Peer wire codec: fed bytes, checked events; no sockets."""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.core import bencode
from roost.core.bitfield import Bitfield
from roost.core.wire import (
    BLOCK_SIZE,
    HANDSHAKE_LEN,
    PROTOCOL,
    AllowedFast,
    BitfieldMsg,
    Cancel,
    Choke,
    Event,
    Extended,
    ExtendedHandshake,
    Handshake,
    Have,
    HaveAll,
    HaveNone,
    Haves,
    Interested,
    KeepAlive,
    NotInterested,
    PeerConnection,
    Piece,
    Port,
    RejectRequest,
    Request,
    SuggestPiece,
    Unchoke,
    allowed_fast_set,
    have_messages,
    reserved_bytes,
)
from roost.errors import RemoteProtocolError, RoostError

IH = bytes(range(20))
PID_A = b"-RO0001-aaaaaaaaaaaa"
PID_B = b"-RO0001-bbbbbbbbbbbb"
N = 20


def pair(
    *, fast_a: bool = True, fast_b: bool = True, ext_a: bool = True, ext_b: bool = True
) -> tuple[PeerConnection, PeerConnection]:
    """Two connected codecs after the handshake exchange (a dialled b)."""
    a = PeerConnection(IH, PID_A, N, fast=fast_a, extended=ext_a)
    b = PeerConnection(IH, PID_B, N, fast=fast_b, extended=ext_b)
    ev_b = b.receive(a.initiate())
    assert ev_b == [
        Handshake(IH, PID_A, fast_a, ext_a, reserved_bytes(fast=fast_a, extended=ext_a))
    ]
    ev_a = a.receive(b.initiate())
    assert len(ev_a) == 1 and isinstance(ev_a[0], Handshake)
    assert a.handshake_done and b.handshake_done
    return a, b


def frame(mid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), mid) + payload


def test_handshake_layout() -> None:
    a = PeerConnection(IH, PID_A, N)
    hs = a.handshake_bytes()
    assert len(hs) == HANDSHAKE_LEN
    assert hs.startswith(PROTOCOL)
    assert hs[25] & 0x10 and hs[27] & 0x04
    assert hs[28:48] == IH and hs[48:] == PID_A
    plain = PeerConnection(IH, PID_A, N, fast=False, extended=False).handshake_bytes()
    assert plain[20:28] == bytes(8)


def test_initiate_only_once() -> None:
    a = PeerConnection(IH, PID_A, N)
    a.initiate()
    with pytest.raises(RoostError):
        a.initiate()


@pytest.mark.parametrize("fa,fb", [(True, True), (True, False), (False, True), (False, False)])
def test_negotiation(fa: bool, fb: bool) -> None:
    a, b = pair(fast_a=fa, fast_b=fb, ext_a=fb, ext_b=True)
    assert a.fast == b.fast == (fa and fb)
    assert a.extended == b.extended == fb
    assert a.remote_peer_id == PID_B and b.remote_peer_id == PID_A


def test_wrong_protocol_rejected_early() -> None:
    b = PeerConnection(IH, PID_B, N)
    with pytest.raises(RemoteProtocolError):
        b.receive(b"GET / HTTP/1.1\r\n")
    with pytest.raises(RoostError):  # dead after the error
        b.receive(b"x")


def test_wrong_info_hash_rejected_at_48_bytes() -> None:
    b = PeerConnection(IH, PID_B, N)
    other = PeerConnection(b"\xff" * 20, PID_A, N).handshake_bytes()
    with pytest.raises(RemoteProtocolError):
        b.receive(other[:48])


def test_unbound_incoming_accept_flow() -> None:
    a = PeerConnection(IH, PID_A, N)
    server = PeerConnection(None, PID_B, 0)
    # the dialler pipelines handshake + a message (allowed: it may not wait)
    events = server.receive(a.initiate() + b"\x00\x00\x00\x00" + frame(2))
    assert len(events) == 1 and isinstance(events[0], Handshake)
    assert events[0].info_hash == IH
    assert not server.handshake_done
    with pytest.raises(RoostError):
        server.initiate()  # no torrent yet
    rest = server.accept(IH, N)
    assert rest == [KeepAlive(), Interested()]
    assert server.handshake_done and server.num_pieces == N
    a.receive(server.initiate())
    assert a.fast and server.fast


def test_unbound_flood_before_accept() -> None:
    server = PeerConnection(None, PID_B, 0)
    server.receive(PeerConnection(IH, PID_A, N).handshake_bytes())
    with pytest.raises(RemoteProtocolError):
        for _ in range(100):
            server.receive(b"\x00" * 65536)


def all_messages(a: PeerConnection) -> tuple[bytes, list[object]]:
    bf = Bitfield(N)
    bf.set(0)
    bf.set(19)
    ext = {"m": {"ut_metadata": 3, "roost_bigblock": 7}, "v": "roost 0.1", "reqq": 500, "p": 6881}
    parts = [
        (a.send_extended_handshake(ext), None),
        (a.send_bitfield(bf), BitfieldMsg(bf)),
        (a.send_keepalive(), KeepAlive()),
        (a.send_choke(), Choke()),
        (a.send_unchoke(), Unchoke()),
        (a.send_interested(), Interested()),
        (a.send_not_interested(), NotInterested()),
        (a.send_have(5), Have(5)),
        (a.send_request(1, 16384, 16384), Request(1, 16384, 16384)),
        (a.send_piece(2, 0, b"x" * 100), Piece(2, 0, b"x" * 100)),
        (a.send_piece_header(3, 5, 3) + b"abc", Piece(3, 5, b"abc")),
        (a.send_cancel(1, 16384, 16384), Cancel(1, 16384, 16384)),
        (a.send_port(6881), Port(6881)),
        (a.send_suggest(7), SuggestPiece(7)),
        (a.send_reject(1, 0, 100), RejectRequest(1, 0, 100)),
        (a.send_allowed_fast(4), AllowedFast(4)),
        (
            a.send_extended(3, b"d8:msg_typei0e5:piecei0ee"),
            Extended(3, b"d8:msg_typei0e5:piecei0ee"),
        ),
    ]
    data = b"".join(p for p, _ in parts)
    return data, [e for _, e in parts]


def test_every_message_roundtrips() -> None:
    a, b = pair()
    data, expected = all_messages(a)
    events = b.receive(data)
    assert isinstance(events[0], ExtendedHandshake)
    hs = events[0]
    assert hs.m == {"ut_metadata": 3, "roost_bigblock": 7}
    assert hs.v == "roost 0.1" and hs.reqq == 500 and hs.p == 6881
    assert events[1:] == expected[1:]


def test_byte_at_a_time_gives_same_events() -> None:
    a, b = pair()
    data, _ = all_messages(a)
    whole = pair()[1].receive(data)
    events = []
    for i in range(len(data)):
        events += b.receive(data[i : i + 1])
    assert events == whole
    assert b.buffered == 0


def test_receive_accepts_reused_bytearray_and_memoryview() -> None:
    a, b = pair()
    msg = a.send_piece(1, 0, b"y" * 1000)
    scratch = bytearray(msg)
    events = b.receive(memoryview(scratch)[:500])
    assert events == []
    scratch[:] = b"\x00" * len(scratch)  # the engine reuses its read buffer
    events = b.receive(bytearray(msg[500:]))
    assert events == [Piece(1, 0, b"y" * 1000)]


def test_have_all_none_need_fast_and_first() -> None:
    a, b = pair()
    assert b.receive(a.send_extended_handshake({"m": {}}) + a.send_have_all())[1] == HaveAll()
    a, b = pair()
    assert b.receive(a.send_have_none()) == [HaveNone()]
    # a late HaveAll is tolerated (aria2c sends one once complete); a late
    # HaveNone would take pieces back, which the protocol never does
    a, b = pair()
    b.receive(a.send_have(1))
    assert b.receive(a.send_have_all()) == [HaveAll()]
    a, b = pair()
    b.receive(a.send_have(1))
    with pytest.raises(RemoteProtocolError):
        b.receive(a.send_have_none())
    a, b = pair(fast_a=False)
    with pytest.raises(RemoteProtocolError):
        b.receive(frame(14))
    with pytest.raises(RoostError):
        a.send_have_all()


def test_late_bitfield_is_tolerated() -> None:
    """aria2c sends a whole Bitfield instead of several Haves mid-connection."""
    a, b = pair()
    b.receive(a.send_interested())
    late = Bitfield(N)
    late.set(3)
    assert b.receive(a.send_bitfield(late)) == [BitfieldMsg(late)]
    a, b = pair()
    b.receive(a.send_bitfield(Bitfield(N)))
    assert len(b.receive(a.send_bitfield(Bitfield(N)))) == 1


def test_bitfield_wrong_size_or_spare_bits() -> None:
    _, b = pair()
    with pytest.raises(RemoteProtocolError):
        b.receive(frame(5, b"\xff\xff"))  # 20 pieces need 3 bytes
    _, b = pair()
    with pytest.raises(RemoteProtocolError):
        b.receive(frame(5, b"\xff\xff\xff"))  # spare bits set


@pytest.mark.parametrize(
    "data",
    [
        frame(4, struct.pack(">I", N)),  # have out of range
        frame(6, struct.pack(">III", N, 0, 10)),  # request out of range
        frame(7, struct.pack(">II", N, 0) + b"x"),  # piece out of range
        frame(8, struct.pack(">III", 99, 0, 10)),  # cancel out of range
        frame(13, struct.pack(">I", N)),
        frame(17, struct.pack(">I", 2**32 - 1)),
        frame(16, struct.pack(">III", N, 0, 10)),
        frame(4, b"\x00\x00\x00"),  # have too short
        frame(0, b"\x00"),  # choke too long
        frame(6, struct.pack(">II", 0, 0)),  # request too short
        frame(7, struct.pack(">II", 0, 0)),  # empty block
    ],
)
def test_bannable_violations(data: bytes) -> None:
    _, b = pair()
    with pytest.raises(RemoteProtocolError) as e:
        b.receive(data)
    assert e.value.ban


@pytest.mark.parametrize(
    "data",
    [
        frame(6, struct.pack(">III", 0, 0, 0)),  # zero-length request
        frame(6, struct.pack(">III", 0, 0, BLOCK_SIZE + 1)),  # too big
        frame(8, struct.pack(">III", 0, 0, BLOCK_SIZE * 2)),
        frame(99),  # unknown id
        frame(21, b"\x00" * 40),  # BEP 52 hash request: unknown to us
    ],
)
def test_other_violations(data: bytes) -> None:
    _, b = pair()
    with pytest.raises(RemoteProtocolError):
        b.receive(data)


def test_oversized_piece_refused_from_header_alone() -> None:
    _, b = pair()
    header = struct.pack(">IBII", 9 + BLOCK_SIZE + 1, 7, 0, 0)
    with pytest.raises(RemoteProtocolError):
        b.receive(header[:5])  # refused before any body arrives
    _, b = pair()
    with pytest.raises(RemoteProtocolError):
        b.receive(struct.pack(">IB", 2**32 - 1, 20))


def test_bigger_negotiated_block() -> None:
    a, b = pair()
    b.max_block = 4 * BLOCK_SIZE
    block = bytes(4 * BLOCK_SIZE)
    assert b.receive(a.send_request(0, 0, len(block))) == [Request(0, 0, len(block))]
    assert b.receive(a.send_piece(0, 0, block)) == [Piece(0, 0, block)]
    with pytest.raises(RoostError):
        b.max_block = (1 << 20) + 1


def test_extended_needs_negotiation_and_valid_dict() -> None:
    a, b = pair(ext_b=False)
    with pytest.raises(RemoteProtocolError):
        b.receive(frame(20, b"\x00de"))
    with pytest.raises(RoostError):
        a.send_extended(1, b"")
    _, b = pair()
    with pytest.raises(RemoteProtocolError):
        b.receive(frame(20, b"\x00i1e"))  # not a dict
    _, b = pair()
    with pytest.raises(RemoteProtocolError):
        b.receive(frame(20, b"\x00d1:"))  # broken bencoding


def test_extended_handshake_tolerant_readers() -> None:
    hs = ExtendedHandshake({b"m": {b"x": b"bad", b"y": 2}, b"v": 5, b"reqq": -1, b"p": 70000})
    assert hs.m == {"y": 2}
    assert hs.v is None and hs.reqq is None and hs.p is None
    assert ExtendedHandshake({}).m == {}


def test_local_misuse_raises() -> None:
    a, _ = pair(fast_a=False)
    calls: list[Callable[[], bytes]] = [
        lambda: a.send_have_none(),
        lambda: a.send_reject(0, 0, 1),
        lambda: a.send_allowed_fast(0),
        lambda: a.send_suggest(0),
        lambda: a.send_have(N),
        lambda: a.send_request(-1, 0, 1),
        lambda: a.send_bitfield(Bitfield(N + 1)),
    ]
    for call in calls:
        with pytest.raises(RoostError):
            call()


def test_allowed_fast_bep6_vector() -> None:
    ip = bytes([80, 4, 4, 200])
    ih = b"\xaa" * 20
    assert allowed_fast_set(ip, ih, 1313, 7) == [1059, 431, 808, 1217, 287, 376, 1188]
    assert allowed_fast_set(ip, ih, 1313, 9) == [1059, 431, 808, 1217, 287, 376, 1188, 353, 508]
    # the /24 is what counts
    assert allowed_fast_set(bytes([80, 4, 4, 1]), ih, 1313, 9) == allowed_fast_set(ip, ih, 1313, 9)
    assert sorted(allowed_fast_set(ip, ih, 3, 10)) == [0, 1, 2]  # k capped, terminates
    assert len(set(allowed_fast_set(bytes(16), ih, 50, 10))) == 10


# ------------------------------------------------------------ property tests

message_strategy = st.one_of(
    st.just(("keepalive",)),
    st.just(("choke",)),
    st.just(("unchoke",)),
    st.just(("interested",)),
    st.tuples(st.just("have"), st.integers(0, N - 1)),
    st.tuples(
        st.just("request"),
        st.integers(0, N - 1),
        st.integers(0, 2**32 - 1),
        st.integers(1, BLOCK_SIZE),
    ),
    st.tuples(
        st.just("piece"),
        st.integers(0, N - 1),
        st.integers(0, 2**20),
        st.binary(min_size=1, max_size=300),
    ),
    st.tuples(st.just("extended"), st.integers(1, 255), st.binary(max_size=50)),
)


def encode(a: PeerConnection, m: tuple) -> bytes:  # type: ignore[type-arg]
    if m[0] == "piece":
        return a.send_piece(m[1], m[2], m[3])
    if m[0] == "extended":
        return a.send_extended(m[1], m[2])
    return getattr(a, f"send_{m[0]}")(*m[1:])  # type: ignore[no-any-return]


@settings(max_examples=200, deadline=None)
@given(st.lists(message_strategy, max_size=30), st.lists(st.integers(1, 400), max_size=40))
def test_any_split_gives_the_same_events(msgs: list, cuts: list[int]) -> None:  # type: ignore[type-arg]
    a, b = pair()
    _, ref = pair()
    data = b"".join(encode(a, m) for m in msgs)
    expected = ref.receive(data)
    assert len(expected) == len(msgs)
    events, pos = [], 0
    for c in cuts:
        events += b.receive(data[pos : pos + c])
        pos += c
    events += b.receive(data[pos:])
    assert events == expected
    assert b.buffered == 0


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 64))
def test_arbitrary_bytes_events_or_protocol_error(data: bytes, chunk: int) -> None:
    _, b = pair()
    try:
        for i in range(0, len(data), chunk):
            b.receive(data[i : i + chunk])
            assert b.buffered < b.max_frame
    except RemoteProtocolError:
        pass


frame_strategy = st.builds(
    lambda mid, body, extra: struct.pack(">IB", len(body) + 1 + extra, mid) + body,
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 20, 99]),
    st.binary(max_size=40),
    st.sampled_from([0, 0, 0, 1, 2**31]),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(frame_strategy, max_size=10), st.booleans())
def test_arbitrary_frames_events_or_protocol_error(frames: list[bytes], fast: bool) -> None:
    _, b = pair(fast_a=fast)
    try:
        events = b.receive(b"".join(frames))
    except RemoteProtocolError:
        return
    assert b.buffered < b.max_frame
    assert all(not isinstance(e, Handshake) for e in events)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_handshake_bytes(data: bytes) -> None:
    for ih in (IH, None):
        b = PeerConnection(ih, PID_B, N)
        with contextlib.suppress(RemoteProtocolError):
            b.receive(PROTOCOL + data)


def test_extended_handshake_bencode_roundtrip() -> None:
    a, b = pair()
    d = {"m": {"ut_pex": 1}, "yourip": b"\x7f\x00\x00\x01", "metadata_size": 1234}
    (hs,) = b.receive(a.send_extended_handshake(d))
    assert isinstance(hs, ExtendedHandshake)
    assert hs.data == bencode.decode(bencode.encode(d))
    assert hs.metadata_size == 1234 and hs.get_int(b"metadata_size") == 1234


def test_block_must_fit_its_piece_when_geometry_is_known() -> None:
    # 3 pieces of 32 KiB, the last one 100 bytes
    a = PeerConnection(IH, PID_A, 3)
    b = PeerConnection(IH, PID_B, 3, piece_length=32768, total_length=65536 + 100)
    b.receive(a.initiate())
    a.receive(b.initiate())
    assert b.receive(a.send_request(1, 16384, 16384)) == [Request(1, 16384, 16384)]
    assert b.receive(a.send_request(2, 0, 100)) == [Request(2, 0, 100)]
    assert b.receive(a.send_piece(2, 99, b"z")) == [Piece(2, 99, b"z")]
    for bad in (a.send_request(1, 16385, 16384), a.send_request(2, 0, 101),
                a.send_piece(2, 100, b"z"), a.send_cancel(0, 32768, 1)):  # fmt: skip
        c = PeerConnection(IH, PID_B, 3, piece_length=32768, total_length=65536 + 100)
        c.receive(a.handshake_bytes())
        with pytest.raises(RemoteProtocolError) as e:
            c.receive(bad)
        assert e.value.ban
    with pytest.raises(RoostError):
        PeerConnection(IH, PID_B, 4, piece_length=32768, total_length=65536 + 100)


#: wire messages, some of them ("big", index, size) Pieces of up to 5 blocks
messages_or_big_blocks = st.lists(
    st.one_of(message_strategy, st.tuples(st.just("big"), st.integers(0, N - 1),
                                          st.integers(1, 5 * BLOCK_SIZE))),
    max_size=12)
#: read sizes, up to beyond the biggest frame
read_cuts = st.lists(st.integers(1, 70_000), max_size=30)


def big_block_stream(
    msgs: list,  # type: ignore[type-arg]
) -> tuple[PeerConnection, list[bytes], list[Event]]:
    """A receiver taking blocks of up to 5 x BLOCK_SIZE, the frames of `msgs`, and the
    events a twin receiver gives for the whole stream parsed at once."""
    a, b = pair()
    _, ref = pair()
    for conn in (b, ref):
        conn.max_block = 5 * BLOCK_SIZE
    rng = random.Random(len(msgs))
    frames = [
        a.send_piece(m[1], 0, rng.randbytes(m[2])) if m[0] == "big" else encode(a, m)
        for m in msgs
    ]
    return b, frames, ref.receive(b"".join(frames))


@settings(max_examples=150, deadline=None)
@given(messages_or_big_blocks, read_cuts)
def test_big_blocks_split_anywhere_give_the_same_events(
    msgs: list, cuts: list[int]  # type: ignore[type-arg]
) -> None:
    # bodies of STREAM_BODY or more that a read leaves incomplete are received in
    # place: the events must be those of the whole stream parsed at once
    b, frames, expected = big_block_stream(msgs)
    data = b"".join(frames)
    assert len(expected) == len(msgs)
    events, pos = [], 0
    for c in cuts:
        events += b.receive(data[pos : pos + c])
        pos += min(c, len(data) - pos)
        # what was received and is not yet an event is counted as buffered
        assert b.buffered == pos - sum(len(f) for f in frames[: len(events)])
    events += b.receive(data[pos:])
    assert events == expected
    assert b.buffered == 0


@given(messages_or_big_blocks, read_cuts)
def test_reading_into_body_buffers_and_one_reused_scratch_gives_the_same_events(
    msgs: list, cuts: list[int]  # type: ignore[type-arg]
) -> None:
    # as the engine reads: into body_buffer() while a big body arrives, else
    # into one scratch buffer that the next read overwrites (so an event that
    # kept a view of it would change under us)
    b, frames, expected = big_block_stream(msgs)
    data = b"".join(frames)
    scratch = bytearray(70_000)
    events, pos = [], 0
    for c in [*cuts, len(data)]:
        while pos < len(data) and c > 0:
            view = b.body_buffer()
            if view is not None:
                n = min(c, len(view), len(data) - pos)
                view[:n] = data[pos : pos + n]
                events += b.body_received(n)
            else:
                n = min(c, len(scratch), len(data) - pos)
                scratch[:n] = data[pos : pos + n]
                events += b.receive(memoryview(scratch)[:n])
                scratch[:n] = bytes(n)  # the engine's next read reuses it
            pos += n
            c -= n
    assert events == expected
    assert b.buffered == 0


def test_body_buffer_only_for_a_big_body_and_body_received_checks_its_count() -> None:
    a, b = pair()
    b.max_block = 4 * BLOCK_SIZE
    assert b.body_buffer() is None
    block = bytes(range(256)) * (4 * BLOCK_SIZE // 256)
    frame_ = a.send_piece(3, 0, block)
    assert b.receive(frame_[:100]) == []
    view = b.body_buffer()
    assert view is not None and len(view) == len(block) - (100 - 13)
    with pytest.raises(RoostError):
        b.body_received(len(view) + 1)
    view[:] = frame_[100:]
    assert b.body_received(len(view)) == [Piece(3, 0, block)]
    assert b.body_buffer() is None
    # a body with less than the threshold left is fed as bytes
    assert b.receive(frame_[: len(frame_) - 1000]) == []
    assert b.body_buffer() is None
    assert b.receive(frame_[len(frame_) - 1000 :]) == [Piece(3, 0, block)]


def test_a_whole_big_frame_read_into_scratch_owns_its_bytes() -> None:
    a, b = pair()
    b.max_block = 4 * BLOCK_SIZE
    block = bytes(range(256)) * (3 * BLOCK_SIZE // 256)
    scratch = bytearray(a.send_piece(1, 0, block) + a.send_have(2))
    events = b.receive(memoryview(scratch))
    scratch[:] = bytes(len(scratch))  # the next read overwrites the scratch buffer
    assert events == [Piece(1, 0, block), Have(2)]
    assert isinstance(events[0], Piece) and isinstance(events[0].block, bytearray)


def test_a_have_batch_is_encoded_once_for_every_peer() -> None:
    a, b = pair()
    batch = [3, 0, N - 1]
    data = have_messages(batch, N)
    assert data == b"".join(a.send_have(i) for i in batch)
    assert b.receive(data) == [Have(3), Have(0), Have(N - 1)]
    assert have_messages([], N) == b""
    with pytest.raises(RoostError):
        have_messages([1, N], N)


def test_the_consecutive_haves_of_a_read_come_as_one_event_when_the_member_asks() -> None:
    data = (
        have_messages([3, 0], N) + PeerConnection(IH, PID_A, N).send_interested()
        + have_messages([5], N)
    )
    _, b = pair()
    assert b.receive(data) == [Have(3), Have(0), Interested(), Have(5)]  # the default
    _, b = pair()
    b.batch_haves = True
    assert b.receive(data) == [Haves([3, 0]), Interested(), Haves([5])]
    # a Have split across reads ends the batch; the next read starts another
    assert b.receive(data[:7]) == [] and b.receive(data[7:12]) == [Haves([3])]
    assert b.receive(data[12:]) == [Haves([0]), Interested(), Haves([5])]
    with pytest.raises(RemoteProtocolError):  # each index is still checked
        b.receive(have_messages([1], N) + have_messages([1], N + 1)[:5] + bytes([0, 0, 0, N]))


def test_a_kept_extension_handshake_is_never_shared() -> None:
    """Extension handshakes are decoded once per distinct payload (the eighth
    simulator pass); every caller still gets a value of its own."""
    from roost.core.wire import _decode_extended_handshake

    payload = bencode.encode({b"m": {b"ut_metadata": 2}, b"p": 6881, b"l": [1, {b"x": 2}]})
    first = _decode_extended_handshake(payload)
    assert isinstance(first, dict)
    first[b"p"] = 1
    m = first[b"m"]
    assert isinstance(m, dict)
    m[b"ut_metadata"] = 99
    listed = first[b"l"]
    assert isinstance(listed, list)
    listed.append(3)
    second = _decode_extended_handshake(payload)
    assert second == bencode.decode(payload)
    assert second == {b"m": {b"ut_metadata": 2}, b"p": 6881, b"l": [1, {b"x": 2}]}


def test_only_usual_sized_extension_handshakes_are_kept() -> None:
    """A peer may send extension handshakes up to MAX_EXTENDED (1 MiB): distinct
    big ones are decoded and dropped, so the cache never holds more than its
    entries times a usual handshake's size."""
    from roost.core import wire

    wire._EXT_HANDSHAKES.clear()
    big = bencode.encode({b"m": {}, b"v": b"x" * 100_000})
    for _ in range(3):
        value = wire._decode_extended_handshake(big)
        assert isinstance(value, dict) and len(value[b"v"]) == 100_000  # type: ignore[arg-type]
    assert big not in wire._EXT_HANDSHAKES
    assert all(len(k) <= wire._EXT_HANDSHAKE_KEPT_BYTES for k in wire._EXT_HANDSHAKES)
    small = bencode.encode({b"m": {b"ut_metadata": 2}, b"p": 6881})
    wire._decode_extended_handshake(small)
    assert small in wire._EXT_HANDSHAKES
