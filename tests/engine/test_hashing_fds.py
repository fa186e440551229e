"""hash_pieces over many tiny files: right digests, few descriptors open at once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from roost.engine import hashing

PIECE = 16 * 1024


def test_many_small_files_are_hashed_with_few_descriptors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = []
    blob = bytearray()
    for i in range(3000):  # one 4 MiB batch holds every one of them
        data = os.urandom(1000 + i % 7)
        (tmp_path / f"f{i}").write_bytes(data)
        sources.append((tmp_path / f"f{i}", len(data)))
        blob += data
    open_now = 0
    most = 0
    real_open, real_close = os.open, os.close

    def counted_open(*args: object, **kw: object) -> int:
        nonlocal open_now, most
        fd = real_open(*args, **kw)  # type: ignore[arg-type]
        open_now += 1
        most = max(most, open_now)
        return fd

    def counted_close(fd: int) -> None:
        nonlocal open_now
        real_close(fd)
        open_now -= 1

    monkeypatch.setattr(hashing.os, "open", counted_open)
    monkeypatch.setattr(hashing.os, "close", counted_close)
    digests = hashing.hash_pieces(hashing.PieceReader(sources), PIECE, workers=1)
    monkeypatch.undo()
    want = [hashlib.sha1(blob[i : i + PIECE]).digest() for i in range(0, len(blob), PIECE)]
    assert digests == want
    assert open_now == 0
    assert most <= 2 * (PIECE // 1000 + 2)  # the files of about one piece, not of a batch
