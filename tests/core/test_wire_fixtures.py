"""Regression fixtures: byte streams a real libtorrent 2.1.1 seed sent to a roost
codec (captured over loopback by an ad-hoc interop run, 4 pieces of 256 KiB,
798777 bytes). They pin the message order real clients use: the BEP 10
handshake comes before HaveAll / Bitfield, and AllowedFast after Unchoke."""

from __future__ import annotations

import pytest

from roost.core.wire import (
    AllowedFast,
    BitfieldMsg,
    ExtendedHandshake,
    Handshake,
    HaveAll,
    PeerConnection,
    Unchoke,
)

PEER_ID = b"-RO0001-123456789012"

LIBTORRENT_FAST_IH = bytes.fromhex("64bebb7ff0c97bb180f084c77bbc7aec6e747c2d")
LIBTORRENT_FAST = bytes.fromhex(
    "13426974546f7272656e742070726f746f636f6c000000000010000564bebb7ff0c97bb180f084c77bbc7aec"
    "6e747c2d2d4c54323131302d7037792921286d336e38556a000000d414006431323a636f6d706c6574655f61"
    "676f692d3165313a6d6431313a6c745f646f6e746861766569376531303a73686172655f6d6f646569386531"
    "313a75706c6f61645f6f6e6c7969336531323a75745f686f6c6570756e636869346531313a75745f6d657461"
    "64617461693265363a75745f7065786931656531333a6d657461646174615f73697a656932363065343a7265"
    "717169323030306531313a75706c6f61645f6f6e6c79693165313a7631383a6c6962746f7272656e742f322e"
    "312e312e30363a796f75726970343a7f00000165000000010e00000001010000000511000000000000000511"
    "000000010000000511000000020000000511000000030000000101"
)

LIBTORRENT_PLAIN_IH = bytes.fromhex("c5d5e2d04906255e4ed58905f31946b1b9c9612c")
LIBTORRENT_PLAIN = bytes.fromhex(
    "13426974546f7272656e742070726f746f636f6c0000000000100005c5d5e2d04906255e4ed58905f31946b1"
    "b9c9612c2d4c54323131302d7571772e35415a57537a354e000000d414006431323a636f6d706c6574655f61"
    "676f692d3165313a6d6431313a6c745f646f6e746861766569376531303a73686172655f6d6f646569386531"
    "313a75706c6f61645f6f6e6c7969336531323a75745f686f6c6570756e636869346531313a75745f6d657461"
    "64617461693265363a75745f7065786931656531333a6d657461646174615f73697a656932363065343a7265"
    "717169323030306531313a75706c6f61645f6f6e6c79693165313a7631383a6c6962746f7272656e742f322e"
    "312e312e30363a796f75726970343a7f000001650000000205f000000001010000000101"
)


def run(ih: bytes, stream: bytes, fast: bool, chunk: int) -> list[object]:
    conn = PeerConnection(ih, PEER_ID, 4, fast=fast, piece_length=262144, total_length=798777)
    conn.initiate()
    events: list[object] = []
    for i in range(0, len(stream), chunk):
        events += conn.receive(stream[i : i + chunk])
    assert conn.buffered == 0
    return events


@pytest.mark.parametrize("chunk", [1, 7, 68, 1000])
def test_libtorrent_seed_with_fast(chunk: int) -> None:
    events = run(LIBTORRENT_FAST_IH, LIBTORRENT_FAST, True, chunk)
    kinds = [type(e) for e in events]
    assert kinds[:4] == [Handshake, ExtendedHandshake, HaveAll, Unchoke]
    assert set(kinds[4:]) <= {AllowedFast, Unchoke}
    hs = events[1]
    assert isinstance(hs, ExtendedHandshake)
    assert hs.v is not None and hs.v.startswith("libtorrent/")
    assert hs.reqq is not None and "ut_metadata" in hs.m


@pytest.mark.parametrize("chunk", [1, 13, 1000])
def test_libtorrent_seed_without_fast(chunk: int) -> None:
    events = run(LIBTORRENT_PLAIN_IH, LIBTORRENT_PLAIN, False, chunk)
    kinds = [type(e) for e in events]
    assert kinds[:4] == [Handshake, ExtendedHandshake, BitfieldMsg, Unchoke]
    bf = events[2]
    assert isinstance(bf, BitfieldMsg) and bf.bitfield.all()
