"""Property fuzzing of every pure parser that reads hostile bytes.

Property (the issue's): each parser returns, or raises the project's protocol
error for it (DecodeError, MetainfoError, RemoteProtocolError,
TrackerRequestError, TrackerError) — never another exception — plus the
cheap semantic checks in targets.py. Strategies build near-valid inputs
(strategies.py) as well as raw bytes, and failures shrink to a minimal case.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from roost.core import bencode, metainfo
from roost.core import tracker_server_codec as protocol
from roost.errors import DecodeError, MetainfoError
from tests.fuzz import strategies as S
from tests.fuzz.conftest import FUZZ, examples
from tests.fuzz.targets import TARGETS, Target, check

# (target, strategy, examples in the suite)
CASES: dict[str, tuple[st.SearchStrategy[bytes], int]] = {
    "bencode": (S.bencode_inputs, 400),
    "metainfo": (S.metainfo_inputs, 400),
    "wire_stream": (S.wire_inputs, 400),
    "wire_chunked": (
        st.tuples(st.integers(0, 15), S.wire_inputs).map(lambda t: bytes([t[0]]) + t[1]),
        250,
    ),
    "wire_raw": (st.one_of(S.raw_connections(), st.binary(max_size=120)), 250),
    "tracker_query": (S.tracker_query_inputs, 400),
    "tracker_response": (S.tracker_response_inputs, 400),
}


def _property_test(target: Target, strategy: st.SearchStrategy[bytes], n: int) -> Any:
    @settings(FUZZ, max_examples=examples(n))
    @given(strategy)
    def run(data: bytes) -> None:
        check(target, data)  # anything but the allowed error propagates and fails

    return run


@pytest.mark.parametrize("name", sorted(CASES))
def test_parser_only_raises_its_protocol_error(name: str) -> None:
    strategy, n = CASES[name]
    _property_test(TARGETS[name], strategy, n)()


def _outcomes(name: str, strategy: st.SearchStrategy[bytes]) -> set[str]:
    seen: set[str] = set()

    @settings(FUZZ, max_examples=examples(150), database=None)
    @given(strategy)
    def probe(data: bytes) -> None:
        seen.add(check(TARGETS[name], data))

    probe()
    return seen


@pytest.mark.parametrize("name", sorted(CASES))
def test_strategy_reaches_both_outcomes(name: str) -> None:
    """A strategy that only ever yields refused input would test nothing deep."""
    assert _outcomes(name, CASES[name][0]) == {"ok", "refused"}


# --- stronger, parser-specific properties ------------------------------------------


@settings(FUZZ, max_examples=examples(300))
@given(S.values)
def test_bencode_roundtrip_of_any_value(value: Any) -> None:
    data = bencode.encode(value)
    assert bencode.encode(bencode.decode(data)) == data


@settings(FUZZ, max_examples=examples(50))
@given(st.integers(1, 200))
@example(63)
@example(64)
@example(10**5)
def test_bencode_depth_cap_is_exact(depth: int) -> None:
    data = b"l" * depth + b"e" * depth
    if depth <= bencode.MAX_DEPTH:
        assert bencode.decode(data) is not None
    else:
        with pytest.raises(DecodeError):
            bencode.decode(data)


@settings(FUZZ, max_examples=examples(300))
@given(S.torrents())
def test_metainfo_accepts_only_safe_paths(data: bytes) -> None:
    try:
        meta = metainfo.parse(data)
    except MetainfoError:
        return
    assert meta.info_hash == hashlib.sha1(meta.raw_info).digest()
    for entry in meta.info.files:
        assert metainfo.safe_relpath(entry.path) == entry.path
    assert sum(f.length for f in meta.info.files) == meta.info.total_length


@settings(FUZZ, max_examples=examples(400))
@given(st.one_of(st.binary(max_size=60), S.queries()))
def test_unquote_agrees_with_the_standard_library(raw: bytes) -> None:
    """Where our strict unquote accepts, it decodes exactly like urllib."""
    try:
        ours = protocol.unquote(raw)
    except protocol.TrackerRequestError:
        assert b"%" in raw
        return
    assert ours == unquote_to_bytes(raw.replace(b"+", b" "))


@settings(FUZZ, max_examples=examples(200))
@given(S.wire_inputs)
def test_wire_events_do_not_depend_on_how_bytes_are_split(data: bytes) -> None:
    """One receive() of everything and one per byte give the same events or the same refusal."""
    from roost.errors import RemoteProtocolError
    from tests.fuzz.targets import _conn, handshake

    def run(chunk: int) -> list[Any] | str:
        conn = _conn()
        stream = handshake() + data
        events: list[Any] = []
        try:
            for i in range(0, len(stream), chunk):
                events += conn.receive(stream[i : i + chunk])
        except RemoteProtocolError as exc:
            return f"refused: {exc}"
        return events

    whole, bytewise = run(len(data) + 68), run(1)
    if isinstance(whole, str) or isinstance(bytewise, str):
        assert whole == bytewise
    else:
        assert whole == bytewise
