"""Make the benchmark's torrent with mktorrent and read its info-hash."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from bench.tools.base import which_or_not_run


def _skip(data: bytes, i: int) -> int:
    """Index just past the bencoded value starting at i."""
    c = data[i : i + 1]
    if c == b"i":
        return data.index(b"e", i) + 1
    if c in (b"l", b"d"):
        i += 1
        while data[i : i + 1] != b"e":
            i = _skip(data, i)
        return i + 1
    colon = data.index(b":", i)
    return colon + 1 + int(data[i:colon])


def info_hash(torrent: bytes) -> bytes:
    """SHA-1 of the raw bencoded `info` value of a metainfo file."""
    if torrent[:1] != b"d":
        raise ValueError("not a bencoded dictionary")
    i = 1
    while torrent[i : i + 1] != b"e":
        key_end = _skip(torrent, i)
        key = torrent[torrent.index(b":", i) + 1 : key_end]
        val_end = _skip(torrent, key_end)
        if key == b"info":
            return hashlib.sha1(torrent[key_end:val_end]).digest()
        i = val_end
    raise ValueError("no info dictionary")


def make_torrent(payload: Path, out: Path, announce: str, piece_size: int) -> list[str]:
    """Write a private single-file torrent; return the mktorrent command line."""
    if piece_size & (piece_size - 1) or not 2**15 <= piece_size <= 2**28:
        raise ValueError("piece size must be a power of two in 32 KiB..256 MiB")
    argv = [which_or_not_run("mktorrent"), "-p", "-l", str(piece_size.bit_length() - 1),
            "-a", announce, "-o", str(out), str(payload)]
    out.unlink(missing_ok=True)
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    return argv
