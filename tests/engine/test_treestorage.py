"""TreeStorage: pieces land in a staging directory, files checked by SHA-256 as they
complete, descriptors bounded, nothing reached through a symlink."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from roost.core.metainfo import Info, parse
from roost.deploy import treepack
from roost.engine.storage import StorageError
from roost.engine.treestorage import TreeStorage
from roost.errors import RoostError


def _tree(root: Path, files: int = 300, big: int = 0) -> Path:
    rng = random.Random(3)
    for i in range(files):
        d = root / f"d{i % 30:02d}" / "sub"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:04d}.js").write_bytes(rng.randbytes(1 + i * 37 % 3000))
    if big:
        (root / "big.bin").write_bytes(rng.randbytes(big))
    return root


def _packed(src: Path) -> tuple[treepack.TreePayload, Info, list[bytes]]:
    packed = treepack.build(src, "v1")
    info = parse(packed.torrent).info
    reader = TreeStorage(info, src, None)
    reader.open(create=False)
    try:
        pieces = [reader.read_block(i, 0, info.piece_size(i)) for i in range(info.num_pieces)]
    finally:
        reader.close()
    return packed, info, pieces


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_every_file_is_checked_and_proven_with_few_descriptors(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", big=2_000_000)
    packed, info, pieces = _packed(src)
    staging = tmp_path / "staging"
    staging.mkdir()
    verified: dict[str, int] = {}
    before = _open_fds()
    storage = TreeStorage(info, staging, packed.manifest, max_open=16)
    storage.on_file_verified = lambda rel, size: verified.__setitem__(rel, size)
    storage.open(create=True)
    try:
        most = 0
        for index, data in enumerate(pieces):
            storage.write_piece(index, data)
            most = max(most, _open_fds() - before)
        assert storage.unverified() == []
    finally:
        storage.close()
    assert _open_fds() == before
    # 16 file fds + at most 64 directory fds + the root and the pad memfd
    assert most <= 16 + 64 + 2
    files = {e.relpath: e for e in packed.manifest.files}
    assert verified == {rel: e.size for rel, e in files.items()}
    assert set(storage.proofs) == set(files)
    for rel, entry in files.items():
        assert (staging / rel).read_bytes() == (src / rel).read_bytes()
        st = os.stat(staging / rel)
        assert storage.proofs[rel] == [entry.sha256, st.st_ino, st.st_size, st.st_mtime_ns,
                                       st.st_ctime_ns]


def test_a_small_file_whose_bytes_differ_fails_its_sha256(tmp_path: Path) -> None:
    # a small file lies wholly inside one piece: it is hashed from the piece's bytes
    src = _tree(tmp_path / "src", files=40)
    packed, info, pieces = _packed(src)
    staging = tmp_path / "staging"
    staging.mkdir()
    storage = TreeStorage(info, staging, packed.manifest)
    storage.open(create=True)
    try:
        bad = bytearray(pieces[0])
        bad[0] ^= 1
        with pytest.raises(StorageError, match="does not match its SHA-256"):
            storage.write_piece(0, bytes(bad))
    finally:
        storage.close()


def test_a_symlink_in_the_staging_directory_is_never_followed(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", files=40)
    packed, info, _ = _packed(src)
    staging = tmp_path / "staging"
    staging.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, staging / "d00")  # where a directory of the tree goes
    storage = TreeStorage(info, staging, packed.manifest)
    with pytest.raises(RoostError):
        storage.open(create=True)
    storage.close()
    assert list(outside.iterdir()) == []


def test_local_blocks_are_read_in_when_the_piece_is_checked_and_only_once(
        tmp_path: Path) -> None:
    """A partly held piece's blocks that lie in placed files are read from them when
    the piece is checked (not before the session starts); once: a piece that failed
    its check is fetched again whole, and those bytes must not be overwritten."""
    import shutil

    from roost.core.wire import BLOCK_SIZE
    from roost.target import treestage

    src = _tree(tmp_path / "src", files=40)
    with open(src / "big.bin", "wb") as f:  # sparse: enough bytes for 32 KiB pieces
        f.truncate(40 * 2**20)
    packed, info, pieces = _packed(src)
    assert info.piece_length == 2 * BLOCK_SIZE
    changed = info.files[-1].path  # the last small file: fetched; every other one placed
    done = {f.path for f in info.files if not f.pad and f.path != changed}
    staging = tmp_path / "staging"
    for path in done:
        (staging.joinpath(*path)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.joinpath(*path), staging.joinpath(*path))
    local = treestage.local_blocks(info, done, BLOCK_SIZE)
    index, blocks = next((i, b) for i, b in local.items() if len(b) < 2)
    storage = TreeStorage(info, staging, packed.manifest, done=done)
    storage.open(create=True)
    try:
        storage.fill_at_check(index, blocks, BLOCK_SIZE)
        size = info.piece_size(index)
        data = bytearray(pieces[index])
        for j in blocks:  # what the network did not send: undefined bytes
            data[j * BLOCK_SIZE : min((j + 1) * BLOCK_SIZE, size)] = b"\xff" * min(
                BLOCK_SIZE, size - j * BLOCK_SIZE)
        garbled = bytes(data)
        storage.fill_local(index, data)
        assert data == pieces[index]
        again = bytearray(garbled)  # the piece fetched again after a failed check
        storage.fill_local(index, again)
        assert again == garbled
        other = bytearray(pieces[0])
        storage.fill_local(0, other)  # a piece with nothing local: untouched
        assert other == pieces[0]
    finally:
        storage.close()
