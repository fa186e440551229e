"""Storage: real files in tmp_path, pieces across file boundaries, resume, path safety."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from roost.core.metainfo import Info, build_info, build_torrent, parse
from roost.engine.storage import Storage, StorageError
from roost.errors import RoostError, UnsafePathError

PIECE = 16 * 1024


def make_info(
    files: Sequence[tuple[tuple[str, ...], int]] | int, *, name: str = "payload", seed: int = 1
) -> tuple[Info, bytes]:
    """An Info for `files` (or a single file of that length) and its payload bytes."""
    total = files if isinstance(files, int) else sum(n for _, n in files)
    payload = random.Random(seed).randbytes(total)
    hashes = b"".join(hashlib.sha1(payload[i : i + PIECE]).digest() for i in range(0, total, PIECE))
    info = build_info(name, files, PIECE, hashes)
    return parse(build_torrent(info)).info, payload


def piece(info: Info, payload: bytes, index: int) -> bytes:
    start = index * info.piece_length
    return payload[start : start + info.piece_size(index)]


def write_all(storage: Storage, info: Info, payload: bytes, only: range | None = None) -> None:
    for index in only if only is not None else range(info.num_pieces):
        storage.write_piece(index, piece(info, payload, index))


# Files chosen so pieces straddle boundaries, with empty files in the middle
# and at the ends, and a file smaller than a block.
MULTI = [
    (("a", "empty0"), 0),
    (("a", "one.bin"), PIECE + 100),
    (("a", "b", "tiny"), 7),
    (("a", "b", "empty1"), 0),
    (("c.bin",), 3 * PIECE - 50),
    (("z", "last"), 0),
]


def test_single_file_write_read_roundtrip(tmp_path: Path) -> None:
    info, payload = make_info(3 * PIECE + 123, name="art.tar")
    with Storage(info, tmp_path) as st:
        write_all(st, info, payload)
        assert st.read_block(1, 100, 5000) == payload[PIECE + 100 : PIECE + 5100]
        last = info.num_pieces - 1
        assert st.read_block(last, 0, 123) == payload[-123:]
        st.flush()
        assert st.complete_paths() == [tmp_path / "art.tar"]
    assert (tmp_path / "art.tar").read_bytes() == payload


def test_multi_file_across_boundaries(tmp_path: Path) -> None:
    info, payload = make_info(MULTI)
    with Storage(info, tmp_path) as st:
        # write in a scrambled order: positioned writes must not depend on order
        order = list(range(info.num_pieces))
        random.Random(3).shuffle(order)
        for index in order:
            st.write_piece(index, memoryview(piece(info, payload, index)))
        for index in range(info.num_pieces):
            size = info.piece_size(index)
            assert st.read_block(index, 0, size) == piece(info, payload, index)
        # a block that spans one.bin | tiny | empty1 | c.bin
        start = PIECE + 90
        assert st.read_block(1, 90, 40) == payload[start : start + 40]
        spans = st.block_spans(1, 90, 40)
        assert [n for _, _, n in spans] == [10, 7, 23]
        got = b"".join(os.pread(fd, n, off) for fd, off, n in spans)
        assert got == payload[start : start + 40]
        st.flush()
    expected = [tmp_path / "payload" / Path(*p) for p, _ in MULTI]
    assert Storage(info, tmp_path).complete_paths() == expected
    offset = 0
    for path, (_, length) in zip(expected, MULTI, strict=True):
        assert path.read_bytes() == payload[offset : offset + length]
        offset += length


def test_zero_length_files_are_created(tmp_path: Path) -> None:
    info, _ = make_info(MULTI)
    with Storage(info, tmp_path):
        pass
    for parts in (("a", "empty0"), ("a", "b", "empty1"), ("z", "last")):
        path = tmp_path / "payload" / Path(*parts)
        assert path.is_file() and path.stat().st_size == 0


def test_preallocation_gives_final_sizes_and_blocks(tmp_path: Path) -> None:
    info, _ = make_info(8 * PIECE)
    with Storage(info, tmp_path, preallocate=True):
        pass
    st_alloc = (tmp_path / "payload").stat()
    assert st_alloc.st_size == 8 * PIECE
    if hasattr(os, "posix_fallocate"):
        assert st_alloc.st_blocks * 512 >= 8 * PIECE  # really reserved, not sparse
    other = tmp_path / "sparse"
    with Storage(info, other, preallocate=False):
        pass
    assert (other / "payload").stat().st_size == 8 * PIECE


def test_existing_larger_file_is_cut_to_size_and_existing_data_kept(tmp_path: Path) -> None:
    info, payload = make_info(2 * PIECE)
    (tmp_path / "payload").write_bytes(payload + b"junk" * 1000)
    with Storage(info, tmp_path) as st:
        assert st.read_block(0, 0, PIECE) == payload[:PIECE]
    assert (tmp_path / "payload").read_bytes() == payload


def test_resume_recheck_finds_exactly_the_written_pieces(tmp_path: Path) -> None:
    info, payload = make_info(MULTI)
    written = {0, 2}
    with Storage(info, tmp_path) as st:
        for index in written:
            st.write_piece(index, piece(info, payload, index))
        st.flush()
    with Storage(info, tmp_path) as st:
        have = st.recheck(workers=2)
        assert {i for i in range(info.num_pieces) if have[i]} == written
        assert have.count() == len(written)
        write_all(st, info, payload)
        assert st.recheck().all()


def test_recheck_does_not_count_a_corrupted_piece(tmp_path: Path) -> None:
    info, payload = make_info(6 * PIECE)
    with Storage(info, tmp_path) as st:
        write_all(st, info, payload)
    path = tmp_path / "payload"
    with path.open("r+b") as f:
        f.seek(3 * PIECE + 17)
        f.write(b"\x00" if payload[3 * PIECE + 17] else b"\x01")
    seen: list[int] = []
    have = Storage(info, tmp_path).recheck(progress=seen.append, workers=3)
    assert [have[i] for i in range(6)] == [True, True, True, False, True, True]
    assert sum(seen) == 6 * PIECE


def test_recheck_ignores_files_with_the_wrong_size(tmp_path: Path) -> None:
    info, payload = make_info(MULTI)
    with Storage(info, tmp_path) as st:
        write_all(st, info, payload)
    # c.bin holds pieces 1 (partly), 2, 3 and 4; grow it by a byte
    with (tmp_path / "payload" / "c.bin").open("ab") as f:
        f.write(b"x")
    have = Storage(info, tmp_path).recheck()
    assert [have[i] for i in range(info.num_pieces)] == [True] + [False] * (info.num_pieces - 1)
    # a missing file: nothing that touches it counts, nothing crashes
    (tmp_path / "payload" / "c.bin").unlink()
    have = Storage(info, tmp_path).recheck()
    assert have.count() == 1
    assert Storage(info, tmp_path / "nowhere").recheck().count() == 0


def test_symlink_under_root_pointing_outside_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "payload").mkdir(parents=True)
    outside.mkdir()
    (root / "payload" / "a").symlink_to(outside, target_is_directory=True)
    info, _ = make_info(MULTI)
    with pytest.raises(UnsafePathError, match="outside"):
        Storage(info, root).open()
    with pytest.raises(UnsafePathError):
        Storage(info, root).recheck()
    assert list(outside.iterdir()) == []  # nothing was written there


def test_symlinked_file_pointing_outside_is_refused(tmp_path: Path) -> None:
    root, victim = tmp_path / "root", tmp_path / "victim"
    root.mkdir()
    victim.write_bytes(b"precious")
    (root / "payload").symlink_to(victim)
    info, _ = make_info(2 * PIECE)
    for create in (True, False):
        with pytest.raises(UnsafePathError):
            Storage(info, root).open(create=create)
    assert victim.read_bytes() == b"precious"


def test_symlink_staying_inside_root_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "payload").mkdir()
    (tmp_path / "payload" / "a").symlink_to(tmp_path / "real", target_is_directory=True)
    info, payload = make_info(MULTI)
    with Storage(info, tmp_path) as st:
        write_all(st, info, payload)
    assert (tmp_path / "real" / "one.bin").stat().st_size == PIECE + 100


def _swap_for_link(directory: Path, outside: Path) -> None:
    """Move `directory` aside and put a symlink to `outside` in its place."""
    os.rename(directory, directory.with_name(directory.name + ".real"))
    os.symlink(outside, directory)


def _after_first(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...], basename: str,
                 action: Callable[[], None], *, before: bool = False) -> None:
    """Run `action` once, around the first os.<name> call whose path ends in `basename`
    (after it returns, or `before` it runs): a racer acting between two syscalls."""
    done: list[bool] = []
    for name in names:
        real = getattr(os, name)

        def wrapper(path: Any, *args: Any, __real: Any = real, **kwargs: Any) -> Any:
            hit = not done and os.path.basename(os.fsdecode(path)) == basename
            if hit and before:
                done.append(True)
                action()
            result = __real(path, *args, **kwargs)
            if hit and not before:
                done.append(True)
                action()
            return result

        monkeypatch.setattr(os, name, wrapper)


@pytest.mark.parametrize("create", [True, False])
def test_a_directory_swapped_for_a_symlink_during_the_walk_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, create: bool
) -> None:
    """Someone who can write under root swaps payload/a/b for a symlink to a directory
    outside, just after the walk looked at it: refused, and the file outside is
    neither read nor truncated to the payload's size."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    info, payload = make_info(MULTI)
    with Storage(info, root) as st:
        write_all(st, info, payload)
    outside.mkdir()
    (outside / "tiny").write_bytes(b"precious")  # a/b/tiny has 7 bytes
    b = root / "payload" / "a" / "b"
    _after_first(monkeypatch, ("stat", "lstat"), "b", lambda: _swap_for_link(b, outside))
    with pytest.raises(UnsafePathError, match="symlink"):
        Storage(info, root).open(create=create)
    monkeypatch.undo()
    assert (outside / "tiny").read_bytes() == b"precious"
    assert sorted(p.name for p in outside.iterdir()) == ["tiny"]


@pytest.mark.parametrize("create", [True, False])
def test_a_directory_swapped_for_a_symlink_before_a_file_open_leads_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, create: bool
) -> None:
    """payload/a becomes a symlink to a directory outside right before a/one.bin is
    opened: the file is opened from the descriptor of the directory the walk went
    through, so nothing is created or read outside root."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    info, payload = make_info(MULTI)
    if not create:
        with Storage(info, root) as st:
            write_all(st, info, payload)
    outside.mkdir()
    secret = b"s" * info.files[1].length  # a/one.bin's size: a seeder would accept it
    (outside / "one.bin").write_bytes(secret)
    (outside / "b").mkdir()  # and the rest of a/, so that a followed link would pass
    (outside / "b" / "tiny").write_bytes(b"t" * 7)
    (outside / "b" / "empty1").write_bytes(b"")
    a = root / "payload" / "a"
    _after_first(monkeypatch, ("open",), "one.bin", lambda: _swap_for_link(a, outside),
                 before=True)
    st = Storage(info, root)
    st.open(create=create)
    try:
        monkeypatch.undo()
        if create:
            write_all(st, info, payload)
        assert st.read_block(0, 0, PIECE) == piece(info, payload, 0)  # a/one.bin's bytes
    finally:
        st.close()
    assert (outside / "one.bin").read_bytes() == secret
    assert sorted(p.name for p in outside.iterdir()) == ["b", "one.bin"]
    assert (outside / "b" / "tiny").read_bytes() == b"t" * 7
    assert (root / "payload" / "a.real" / "one.bin").stat().st_size == len(secret)


def test_seeder_open_read_only(tmp_path: Path) -> None:
    info, payload = make_info(MULTI)
    with Storage(info, tmp_path) as st:
        write_all(st, info, payload)
    st = Storage(info, tmp_path)
    st.open(create=False)
    try:
        assert st.read_block(2, 0, info.piece_size(2)) == piece(info, payload, 2)
        with pytest.raises(RoostError, match="read-only"):
            st.write_piece(0, piece(info, payload, 0))
    finally:
        st.close()


def test_seeder_open_with_missing_or_short_file_is_a_clear_error(tmp_path: Path) -> None:
    info, payload = make_info(MULTI)
    with Storage(info, tmp_path) as st:
        write_all(st, info, payload)
    target = tmp_path / "payload" / "a" / "one.bin"
    target.write_bytes(payload[:100])
    with pytest.raises(StorageError, match=r"one\.bin has 100 bytes, the torrent says 16484"):
        Storage(info, tmp_path).open(create=False)
    target.unlink()
    with pytest.raises(StorageError, match=r"one\.bin is missing"):
        Storage(info, tmp_path).open(create=False)
    with pytest.raises(StorageError, match="does not exist"):
        Storage(info, tmp_path / "nope").open(create=False)


def test_file_shrunk_under_a_seeder_is_a_storage_error(tmp_path: Path) -> None:
    info, payload = make_info(3 * PIECE)
    with Storage(info, tmp_path) as st:
        write_all(st, info, payload)
    st = Storage(info, tmp_path)
    st.open(create=False)
    os.truncate(tmp_path / "payload", PIECE)
    with pytest.raises(StorageError, match="shorter"):
        st.read_block(2, 0, 100)
    st.close()


def test_bad_ranges_and_sizes_are_rejected(tmp_path: Path) -> None:
    info, _ = make_info(2 * PIECE + 10)
    with Storage(info, tmp_path) as st:
        with pytest.raises(ValueError):
            st.read_block(2, 5, 6)  # past the end of the short last piece
        with pytest.raises(ValueError):
            st.read_block(0, -1, 10)
        with pytest.raises(IndexError):
            st.read_block(3, 0, 1)
        with pytest.raises(ValueError):
            st.write_piece(0, b"short")


def test_verify_piece_buffer(tmp_path: Path) -> None:
    info, payload = make_info(2 * PIECE + 10)
    st = Storage(info, tmp_path)
    assert st.verify_piece_buffer(2, piece(info, payload, 2))
    assert not st.verify_piece_buffer(2, b"\x00" * 10)
    assert not st.verify_piece_buffer(0, piece(info, payload, 0)[:-1])


def test_many_files_lru_cap_and_threads(tmp_path: Path) -> None:
    files = [((f"d{i % 7}", f"f{i}"), 1000 + i) for i in range(300)]
    info, payload = make_info(files)
    with Storage(info, tmp_path, max_open=8) as st:
        order = list(range(info.num_pieces))
        random.Random(5).shuffle(order)
        errors: list[BaseException] = []

        def worker(mine: list[int]) -> None:
            try:
                for index in mine:
                    st.write_piece(index, piece(info, payload, index))
                    assert st.read_block(index, 0, 100) == piece(info, payload, index)[:100]
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(order[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(st._fds) <= 8
        with st.pinned_spans(3, 0, PIECE) as spans:
            assert b"".join(os.pread(fd, n, off) for fd, off, n in spans) == piece(info, payload, 3)
        st.flush()
        assert st.recheck().all()
    fd_count_before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    with Storage(info, tmp_path, max_open=8) as st:
        pass
    if fd_count_before:
        assert len(os.listdir("/proc/self/fd")) == fd_count_before  # nothing leaked


def test_root_that_cannot_be_created_is_a_storage_error(tmp_path: Path) -> None:
    info, _ = make_info(MULTI)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError, match="cannot prepare the payload"):
        Storage(info, tmp_path / "file" / "sub").open()


def test_file_in_the_way_of_a_directory_is_a_storage_error(tmp_path: Path) -> None:
    info, _ = make_info(MULTI)
    (tmp_path / "payload").mkdir()
    (tmp_path / "payload" / "a").write_bytes(b"not a dir")
    with pytest.raises(StorageError, match="not a directory"):
        Storage(info, tmp_path).open()


def test_with_top_a_symlink_may_not_leave_the_payload_for_its_parent(tmp_path: Path) -> None:
    """An origin seeds root/top (roost.target.originseed): a symlink in that tree to a
    file beside it, under root but outside root/top, is not part of what it was told
    to serve, so it is neither read at the check nor served."""
    info, payload = make_info(MULTI)
    with Storage(info, tmp_path / "real") as st:  # the payload, laid out once
        write_all(st, info, payload)
    out = tmp_path / "build" / "out"
    out.parent.mkdir()
    os.rename(tmp_path / "real" / "payload", out)
    first = info.files[0].path
    beside = out.parent / "beside.bin"  # same bytes, but outside PATH
    os.rename(out.joinpath(*first), beside)
    out.joinpath(*first).symlink_to(beside)
    with pytest.raises(UnsafePathError, match="outside"):
        Storage(info, out.parent, top="out").recheck()
    with pytest.raises(UnsafePathError, match="outside"):
        Storage(info, out.parent, top="out").open(create=False)
    # a link that stays inside root/top is followed as before
    os.unlink(out.joinpath(*first))
    os.rename(beside, out / "inside.bin")
    out.joinpath(*first).symlink_to(out / "inside.bin")
    assert Storage(info, out.parent, top="out").recheck().all()


@pytest.mark.parametrize("target", [".", "ROOT"])
def test_a_payload_file_that_links_to_the_root_itself_is_one_error(
        tmp_path: Path, target: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "art.tar").symlink_to(str(root) if target == "ROOT" else target)
    info, _ = make_info(3 * PIECE, name="art.tar")
    with pytest.raises(StorageError, match="not a regular file"):
        Storage(info, root).open(create=False)
    with pytest.raises(StorageError, match="not a regular file"):
        Storage(info, root).open()
