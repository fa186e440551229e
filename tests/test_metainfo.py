"""Metainfo: building, parsing, and every validation rule."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from roost.core import bencode
from roost.core.metainfo import (
    build_info,
    build_torrent,
    choose_piece_length,
    parse,
    parse_piece_size,
    safe_relpath,
)
from roost.errors import MetainfoError, UnsafePathError, UsageError

KIB = 1024
MIB = 1024 * KIB


def torrent(info: dict[str, Any], **top: Any) -> bytes:
    return bencode.encode({"info": info, **top})


def single(length: int = 40000, piece: int = 16384, **extra: Any) -> dict[str, Any]:
    count = -(-length // piece)
    return {
        "name": "f.bin",
        "length": length,
        "piece length": piece,
        "pieces": b"\x01" * 20 * count,
        **extra,
    }


def test_single_file_roundtrip_and_info_hash() -> None:
    info = build_info("f.bin", 40000, 16384, b"\x01" * 60)
    data = build_torrent(info, ["http://t/a", "http://t/b"], comment="hi", creation_date=5)
    meta = parse(data)
    assert meta.info.private  # private by default
    assert meta.info.single_file
    assert meta.info.total_length == 40000
    assert meta.info.num_pieces == 3
    assert meta.info.piece_size(2) == 40000 - 2 * 16384
    assert meta.announce == "http://t/a"
    assert meta.trackers == (("http://t/a",), ("http://t/b",))
    assert meta.comment == "hi" and meta.creation_date == 5
    assert meta.info_hash == hashlib.sha1(bencode.encode(info)).digest()


def test_info_hash_uses_raw_bytes_of_info() -> None:
    # an info dict with an unknown key still hashes over exactly its bytes
    info = single(extra_key=b"kept")
    data = torrent(info, announce="http://t")
    meta = parse(data)
    assert meta.info_hash == hashlib.sha1(bencode.encode(info)).digest()


def test_multi_file_offsets_and_magnet() -> None:
    info = build_info(
        "dir", [(("a", "b"), 10), (("c",), 20000)], 16384, b"\x02" * 40, private=False
    )
    meta = parse(build_torrent(info, [["http://t/1", "http://t/2"]]))
    assert [f.offset for f in meta.info.files] == [0, 10]
    assert meta.info.files[0].relpath == "a/b"
    assert not meta.info.private
    assert meta.announce_list == (("http://t/1", "http://t/2"),)
    magnet = meta.magnet()
    assert magnet.startswith(f"magnet:?xt=urn:btih:{meta.info_hash.hex()}&dn=dir")
    assert "tr=http%3A%2F%2Ft%2F1" in magnet


@pytest.mark.parametrize(
    ("info", "message"),
    [
        (single(pieces=b"\x01" * 40), "need 3"),
        (single(pieces=b"\x01" * 59), "multiple of 20"),
        (single(**{"piece length": 0}), "piece length"),
        (single(**{"piece length": 1 << 30}), "piece length"),
        ({**single(), "files": []}, "both"),
        ({"name": "x", "piece length": 16384, "pieces": b""}, "neither"),
        (single(length=-1), "non-negative"),
        (single(name="../etc"), "not allowed|separator"),
        (single(name=".."), "not allowed"),
        (single(name=""), "not allowed"),
        (single(name="con"), "reserved"),
        (single(name=b"\xff\xfe"), "UTF-8"),
        (single(name="a\x00b"), "NUL"),
        (single(name="x" * 300), "255 bytes"),
    ],
)
def test_invalid_info_is_rejected(info: dict[str, Any], message: str) -> None:
    with pytest.raises(MetainfoError, match=message):
        parse(torrent(info))


def multi(paths: list[list[Any]]) -> dict[str, Any]:
    return {
        "name": "d",
        "piece length": 16384,
        "pieces": b"\x01" * 20,
        "files": [{"length": 1, "path": p} for p in paths],
    }


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ([["..", "x"]], "not allowed"),
        ([["a", "..", "b"]], "not allowed"),
        ([["/etc/passwd"]], "separator"),
        ([["a/b"]], "separator"),
        ([["a\\b"]], "separator"),
        ([[]], "empty file path"),
        ([["a", ""]], "not allowed"),
        ([["."]], "not allowed"),
        ([["x"] * 65], "deeper"),
        ([["a"], ["a"]], "twice"),
        ([["a"], ["a", "b"]], "runs through a file"),
        ([["a", "b"], ["a"]], "twice or is a directory"),
        ([["ok", "nul.txt"]], "reserved"),
        ([["a\x01"]], "control character"),
    ],
)
def test_unsafe_paths_are_rejected(paths: list[list[Any]], message: str) -> None:
    with pytest.raises(
        UnsafePathError if "twice" not in message and "runs" not in message else MetainfoError,
        match=message,
    ):
        parse(torrent(multi(paths)))


def test_not_a_torrent() -> None:
    with pytest.raises(MetainfoError, match="not a torrent"):
        parse(b"hello")
    with pytest.raises(MetainfoError, match="not a dictionary"):
        parse(b"li1ee")
    with pytest.raises(MetainfoError, match="no 'info'"):
        parse(b"de")
    with pytest.raises(MetainfoError, match="announce-list"):
        parse(torrent(single(), **{"announce-list": [[1]]}))


@pytest.mark.parametrize(
    ("total", "pieces_low", "pieces_high"),
    [
        (64 * MIB, 1000, 2000),
        (256 * MIB, 1000, 2000),
        (4096 * MIB, 1000, 2000),
        (1 * MIB, 1, 64),
        (100 * 1024 * MIB, 1, 8000),
    ],
)
def test_piece_length_choice(total: int, pieces_low: int, pieces_high: int) -> None:
    length = choose_piece_length(total)
    assert 16 * KIB <= length <= 16 * MIB and length & (length - 1) == 0
    assert pieces_low <= -(-total // length) <= pieces_high


def test_parse_piece_size() -> None:
    assert parse_piece_size("256K") == 256 * KIB
    assert parse_piece_size("1MiB") == MIB
    assert parse_piece_size("16384") == 16384
    for bad in ("300K", "8K", "32M", "abc", ""):
        with pytest.raises(UsageError):
            parse_piece_size(bad)


def test_build_refuses_unsafe_paths() -> None:
    with pytest.raises(UnsafePathError):
        build_info("d", [(("..", "x"), 1)], 16384, b"\x01" * 20)
    with pytest.raises(UnsafePathError):
        safe_relpath(["a", "/"])
