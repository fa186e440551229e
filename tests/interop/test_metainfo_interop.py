"""roost's metainfo against real tools nobody here wrote.

mktorrent (Debian), transmission-create (Debian) and libtorrent (PyPI) make
torrents; roost must read them to the info-hash those tools (or libtorrent,
as an independent judge) report, and make byte-identical info dicts for the
same payload and piece size.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from roost.commands.make import make_torrent
from roost.core.metainfo import parse
from tests.conftest import require_module, require_tool

pytestmark = pytest.mark.interop
PIECE = 32768


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A directory whose byte-wise path order differs from per-component order."""
    root = tmp_path / "release"
    (root / "a").mkdir(parents=True)
    (root / "a" / "b.bin").write_bytes(os.urandom(70000))
    (root / "a.txt").write_bytes(b"hello\n" * 1000)
    (root / "z" / "deep" / "er").mkdir(parents=True)
    (root / "z" / "deep" / "er" / "x").write_bytes(os.urandom(12345))
    (root / "empty.txt").write_bytes(b"")
    return root


@pytest.fixture
def single_file(tmp_path: Path) -> Path:
    path = tmp_path / "artifact.tar"
    path.write_bytes(os.urandom(300_001))
    return path


def lt_info_hash(data: bytes) -> str:
    lt: Any = require_module("libtorrent")
    info = lt.torrent_info(lt.bdecode(data))
    return str(info.info_hashes().v1)


def mktorrent(path: Path, out: Path, private: bool) -> bytes:
    exe = require_tool("mktorrent")
    argv = [exe, "-l", str(PIECE.bit_length() - 1), "-a", "http://127.0.0.1:1/a", "-o", str(out)]
    if private:
        argv.append("-p")
    subprocess.run([*argv, str(path)], check=True, capture_output=True)
    return out.read_bytes()


@pytest.mark.parametrize("private", [True, False])
@pytest.mark.parametrize("kind", ["single", "multi"])
def test_roost_make_matches_mktorrent(
    kind: str, private: bool, tree: Path, single_file: Path, tmp_path: Path
) -> None:
    path = tree if kind == "multi" else single_file
    theirs = mktorrent(path, tmp_path / "m.torrent", private)
    ours = make_torrent(path, ["http://127.0.0.1:1/a"], piece_length=PIECE, private=private)
    assert parse(ours).raw_info == parse(theirs).raw_info
    assert parse(ours).info_hash.hex() == lt_info_hash(theirs) == parse(theirs).info_hash.hex()


def test_libtorrent_reads_roost_torrents(tree: Path) -> None:
    data = make_torrent(tree, ["http://127.0.0.1:1/a"], piece_length=PIECE)
    assert lt_info_hash(data) == parse(data).info_hash.hex()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_roost_reads_libtorrent_torrents(tree: Path) -> None:
    lt: Any = require_module("libtorrent")
    fs = lt.file_storage()
    lt.add_files(fs, str(tree))
    creator = lt.create_torrent(fs, PIECE, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(creator, str(tree.parent))
    data = lt.bencode(creator.generate())
    meta = parse(data)
    assert meta.info_hash.hex() == lt_info_hash(data)
    assert meta.info.name == "release"
    paths = {f.relpath for f in meta.info.files}
    assert paths == {"a.txt", "a/b.bin", "empty.txt", "z/deep/er/x"}


def test_roost_reads_transmission_torrents(tree: Path, tmp_path: Path) -> None:
    create = require_tool("transmission-create")
    show = require_tool("transmission-show")
    out = tmp_path / "t.torrent"
    subprocess.run(
        [create, "-o", str(out), "-s", str(PIECE // 1024), "-t", "http://127.0.0.1:1/a", str(tree)],
        check=True,
        capture_output=True,
    )
    shown = subprocess.run([show, str(out)], check=True, capture_output=True, text=True).stdout
    match = re.search(r"Hash(?: v1)?:\s+([0-9a-f]{40})", shown)
    assert match, shown
    meta = parse(out.read_bytes())
    assert meta.info_hash.hex() == match.group(1)
    assert meta.info.total_length == sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
