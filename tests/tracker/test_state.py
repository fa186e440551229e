"""The state file: round trip, atomic replacement, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from roost.core.tracker_swarm import SwarmRecord
from roost.tracker import state


def sample() -> state.TrackerState:
    rec = SwarmRecord(
        b"\x01" * 20, "tok-0123456789abcdef", "app", 5, "api", {b"\x02" * 20}, {"addr:10.0.0.1"}
    )
    return state.TrackerState("admin-secret", [rec])


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    state.save(path, sample())
    assert state.load(path) == sample()
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_missing_file_is_empty_state(tmp_path: Path) -> None:
    assert state.load(tmp_path / "none.json") == state.TrackerState()


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    state.save(path, sample())
    before = path.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        state.save(path, state.TrackerState("other", []))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # temp file removed


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"{",
        b"[]",
        b'{"version": 99}',
        b'{"version": 1, "swarms": [{"token": "x"}]}',
        b'{"version": 1, "swarms": [{"info_hash": "0101", "token": "x"}]}',
    ],
)
def test_corrupt_files_raise_state_error(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(text)
    with pytest.raises(state.StateError):
        state.load(path)
