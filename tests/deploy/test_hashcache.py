"""The deploy host's hash cache (roost.deploy.hashcache): a tree packed again reads only
what it cannot prove unchanged, and always yields the torrent and manifest a fresh
hash gives."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from roost.core.metainfo import parse
from roost.deploy import hashcache, treepack
from roost.deploy.hashcache import HashCache

MIB = 2**20


def make_tree(root: Path) -> Path:
    (root / "lib").mkdir(parents=True)
    (root / "static").mkdir()
    (root / "empty").mkdir()
    for i in range(3):  # large enough to be aligned on pieces (40 pieces of 16 KiB)
        (root / "lib" / f"blob{i}.so").write_bytes(os.urandom(MIB + 1000 * i))
    for i in range(60):  # packed back to back
        (root / "static" / f"a{i:02d}.js").write_bytes(os.urandom(500 + 97 * i))
    (root / "static" / "zero").write_bytes(b"")
    os.symlink("lib/blob0.so", root / "link")
    return root


class Reads:
    """Bytes the cached pack reads from the source files."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        real = os.pread

        def pread(fd: int, n: int, offset: int) -> bytes:
            data = real(fd, n, offset)
            self.bytes += len(data)
            return data

        monkeypatch.setattr(treepack.os, "pread", pread)


def old_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hashes are taken as if long after the files were written (not racy)."""
    monkeypatch.setattr(treepack, "now_ns", lambda: time.time_ns() + 60 * 10**9)


def build(root: Path, cache_dir: Path | None) -> tuple[treepack.TreePayload, HashCache | None]:
    cache = HashCache.load(cache_dir, root) if cache_dir is not None else None
    return treepack.build(root, "v", cache=cache), cache


def same(a: treepack.TreePayload, b: treepack.TreePayload) -> bool:
    return a.torrent == b.torrent and a.manifest == b.manifest


@pytest.fixture
def cached_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A sample tree packed once, its hashes remembered as if long after its files were
    written: (the tree's root, the cache directory)."""
    old_files(monkeypatch)
    root = make_tree(tmp_path / "src")
    cache_dir = tmp_path / "cache"
    build(root, cache_dir)
    return root, cache_dir


def test_a_cached_pack_is_the_fresh_pack_and_reads_only_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_files(monkeypatch)
    reads = Reads(monkeypatch)
    root = make_tree(tmp_path / "src")
    cache_dir = tmp_path / "cache"
    first, cache = build(root, cache_dir)
    assert cache is not None and cache.hits == 0
    assert same(first, build(root, None)[0])
    total = first.manifest.total_size
    assert reads.bytes == total

    reads.bytes = 0
    again, cache = build(root, cache_dir)
    assert same(again, first) and reads.bytes == 0
    assert cache is not None and cache.hits == 63  # every non-empty file

    # the next build, in place: one small file rewritten, one renamed, one added
    (root / "static" / "a07.js").write_bytes(os.urandom(1234))
    os.rename(root / "static" / "a08.js", root / "static" / "b08.js")
    (root / "static" / "new.js").write_bytes(os.urandom(3000))
    reads.bytes = 0
    nxt, cache = build(root, cache_dir)
    assert same(nxt, build(root, None)[0])
    assert 0 < reads.bytes < total // 4  # the small files' pieces, not the blobs


def test_a_rewrite_with_the_same_size_and_mtime_is_not_trusted(
    cached_tree: tuple[Path, Path]
) -> None:
    """Size and mtime prove nothing: the rewrite moved ctime, so the file is hashed."""
    root, cache_dir = cached_tree
    blob = root / "lib" / "blob1.so"
    st = blob.stat()
    blob.write_bytes(os.urandom(st.st_size))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # as a build tool restoring times
    assert blob.stat().st_mtime_ns == st.st_mtime_ns and blob.stat().st_size == st.st_size
    got, cache = build(root, cache_dir)
    assert same(got, build(root, None)[0])
    assert cache is not None and cache.hits == 62


def test_a_file_changed_just_before_it_was_hashed_is_not_remembered(tmp_path: Path) -> None:
    """Racy: a second write in the same timestamp tick would change no number, so a
    file younger than RACY_NS at its hashing is hashed again next time."""
    root = make_tree(tmp_path / "src")  # just written
    cache_dir = tmp_path / "cache"
    build(root, cache_dir)
    _, cache = build(root, cache_dir)
    assert cache is not None and cache.hits == 0


def test_a_damaged_or_foreign_cache_is_ignored(cached_tree: tuple[Path, Path]) -> None:
    root, cache_dir = cached_tree
    (path,) = cache_dir.glob("*.json")
    assert path.stat().st_mode & 0o777 == 0o600
    for damage in (b"{not json", json.dumps({"version": 99}).encode(),
                   json.dumps({"version": 1, "files": [], "pieces": 3}).encode()):
        path.write_bytes(damage)
        got, cache = build(root, cache_dir)
        assert same(got, build(root, None)[0])
        assert cache is not None and cache.hits == 0


def test_a_wrong_remembered_piece_is_never_used_for_changed_content(
    cached_tree: tuple[Path, Path]
) -> None:
    """Pieces are keyed by what they hold (file SHA-256, offset, length): a piece whose
    file changed has another key, so a stale digest cannot be picked up."""
    root, cache_dir = cached_tree
    (path,) = cache_dir.glob("*.json")
    data: dict[str, Any] = json.loads(path.read_bytes())
    data["pieces"] = {k: "00" * 20 for k in data["pieces"]}  # every remembered piece wrong
    path.write_bytes(json.dumps(data).encode())
    (root / "lib" / "blob2.so").write_bytes(os.urandom(MIB))
    got, _ = build(root, cache_dir)
    fresh = build(root, None)[0]
    blob2 = next(e for e in got.manifest.files if e.path == ("lib", "blob2.so"))
    assert blob2.sha256 == next(e for e in fresh.manifest.files
                                if e.path == ("lib", "blob2.so")).sha256
    # the changed blob's pieces are hashed afresh; every other piece was taken from
    # the cache (deliberately wrong here, to see which were)
    mine = [i for i, segs in enumerate(treepack._segments(list(got.slots),
                                                          got.manifest.piece_length))
            if any(s.path == ("lib", "blob2.so") for s, _, _ in segs)]
    assert mine
    got_info, fresh_info = parse(got.torrent).info, parse(fresh.torrent).info
    for i in range(got_info.num_pieces):
        if i in mine:
            assert got_info.piece_hash(i) == fresh_info.piece_hash(i)
        else:
            assert got_info.piece_hash(i) == b"\0" * 20


def test_the_cache_keeps_the_newest_trees_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashcache, "MAX_TREES", 2)
    cache_dir = tmp_path / "cache"
    for i in range(4):
        root = tmp_path / f"src{i}"
        (root).mkdir()
        (root / "f").write_bytes(b"x" * (i + 1))
        build(root, cache_dir)
        time.sleep(0.01)
    assert len(list(cache_dir.glob("*.json"))) == 2
