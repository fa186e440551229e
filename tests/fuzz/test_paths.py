"""Hostile paths: nothing is ever written outside the destination.

Three gates, each tested with real files (and the first two also through a
real `roost fetch` process):
  * metainfo: names and paths with "..", absolute paths, separators, NUL...
    are refused at parse time (roost/core/metainfo.py safe_relpath);
  * Storage (roost/engine/storage.py): a destination whose existing
    components are symlinks leading outside is refused before any open();
  * the target-side unpacker (roost/target/release.py stage/unpack_tar): tarballs
    with absolute paths, "..", device files, FIFOs, escaping symlinks or hard
    links are refused with a clear error, and no release appears.
Every case snapshots the temporary tree before and after and checks that
nothing changed outside the destination.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from roost.core import bencode, metainfo
from roost.engine.storage import Storage
from roost.errors import MetainfoError, UnsafePathError
from roost.target.release import Dest, Manifest, ReleaseError, sha256_file, stage

PIECE = 16384


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[str, bytes]]:
    """Every entry under root (not following links): kind and content or link target."""
    out: dict[str, tuple[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and Path(dirpath) == skip.parent:
            dirnames[:] = [d for d in dirnames if d != skip.name]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path).encode())
            elif path.is_dir():
                out[rel] = ("dir", b"")
            else:
                out[rel] = ("file", path.read_bytes())
    return out


def _torrent(name: bytes, paths: list[list[bytes]] | None = None, size: int = 1000) -> bytes:
    data = b"x" * size
    count = len(paths) if paths else 1
    pieces = hashlib.sha1(data * count).digest() if size * count <= PIECE else b""
    info: dict[bytes, object] = {b"name": name, b"piece length": PIECE, b"pieces": pieces}
    if paths is None:
        info[b"length"] = size
    else:
        info[b"files"] = [{b"length": size, b"path": p} for p in paths]
    return bencode.encode({b"announce": b"http://127.0.0.1:1/announce", b"info": info})


# --- metainfo: unsafe names and paths -------------------------------------------------------

UNSAFE_TORRENTS = {
    "name ..": _torrent(b".."),
    "name absolute": _torrent(b"/etc/cron.d"),
    "name with slash": _torrent(b"a/../../x"),
    "name empty": _torrent(b""),
    "name backslash": _torrent(b"..\\..\\x"),
    "name NUL": _torrent(b"ok\x00/etc"),
    "path ..": _torrent(b"top", [[b"..", b"escape"]]),
    "path deep ..": _torrent(b"top", [[b"a", b"..", b"..", b"escape"]]),
    "path absolute component": _torrent(b"top", [[b"/etc", b"passwd"]]),
    "path empty component": _torrent(b"top", [[b"a", b"", b"b"]]),
    "path dot": _torrent(b"top", [[b".", b"x"]]),
    "path not UTF-8": _torrent(b"top", [[b"\xff"]]),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_TORRENTS))
def test_unsafe_torrent_paths_are_refused_at_parse(case: str) -> None:
    with pytest.raises(MetainfoError) as info:
        metainfo.parse(UNSAFE_TORRENTS[case])
    message = str(info.value)
    assert message and "\n" not in message


@pytest.mark.parametrize("case", ["name ..", "path ..", "name absolute"])
def test_roost_fetch_refuses_an_unsafe_torrent_with_one_sentence(tmp_path: Path, case: str) -> None:
    torrent = tmp_path / "evil.torrent"
    torrent.write_bytes(UNSAFE_TORRENTS[case])
    dest = tmp_path / "dest"
    dest.mkdir()
    before = snapshot(tmp_path)
    proc = _fetch(torrent, dest)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0], proc.stderr
    assert snapshot(tmp_path) == before


def _fetch(torrent: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable,
        "-m",
        "roost",
        "fetch",
        str(torrent),
        "-d",
        str(dest),
        "--no-tracker",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--timeout",
        "5",
        "--no-seed",
        "--quiet",
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=dest)


# --- Storage: symlinks in the destination ---------------------------------------------------


def _info(multi: bool) -> metainfo.Info:
    paths = [[b"sub", b"f.bin"], [b"g.bin"]] if multi else None
    return metainfo.parse(_torrent(b"payload", paths, size=100)).info


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    return outside


ESCAPES = {
    # (multi-file?, link path under dest, link target relative to tmp_path)
    "single file is a symlink out": (False, "payload", "outside/keep.txt"),
    "single file dangling link out": (False, "payload", "outside/new.bin"),
    "top dir is a symlink out": (True, "payload", "outside"),
    "sub dir is a symlink out": (True, "payload/sub", "outside"),
    "sub dir relative link out": (True, "payload/sub", "../../outside"),
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
@pytest.mark.parametrize("create", [True, False], ids=["downloader", "seeder"])
def test_storage_refuses_symlinks_leading_outside(tmp_path: Path, case: str, create: bool) -> None:
    multi, link, target = ESCAPES[case]
    _outside(tmp_path)
    dest = tmp_path / "dest"
    (dest / link).parent.mkdir(parents=True, exist_ok=True)
    relative = target.startswith("..")
    os.symlink(target if relative else tmp_path / target, dest / link)
    before = snapshot(tmp_path / "outside")
    storage = Storage(_info(multi), dest)
    with pytest.raises(UnsafePathError) as info:
        storage.open(create=create)
    assert "outside" in str(info.value)
    assert snapshot(tmp_path / "outside") == before


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_storage_recheck_refuses_symlinks_leading_outside(tmp_path: Path, case: str) -> None:
    multi, link, target = ESCAPES[case]
    _outside(tmp_path)
    dest = tmp_path / "dest"
    (dest / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target if target.startswith("..") else tmp_path / target, dest / link)
    with pytest.raises(UnsafePathError):
        Storage(_info(multi), dest).recheck(workers=1)


def test_storage_follows_a_symlink_that_stays_inside(tmp_path: Path) -> None:
    """Control: the refusal is about escaping, not about symlinks as such."""
    dest = tmp_path / "dest"
    (dest / "real").mkdir(parents=True)
    os.symlink("real", dest / "payload")
    with Storage(_info(True), dest) as storage:
        storage.write_piece(0, b"x" * 200)
    assert (dest / "real" / "sub" / "f.bin").read_bytes() == b"x" * 100


def test_roost_fetch_refuses_a_destination_symlink_leading_outside(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "payload")
    torrent = tmp_path / "ok.torrent"
    torrent.write_bytes(_torrent(b"payload", [[b"sub", b"f.bin"]], size=100))
    before = snapshot(outside)
    proc = _fetch(torrent, dest)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "symlink" in proc.stderr, proc.stderr
    assert snapshot(outside) == before


# --- release.py: hostile tarballs -----------------------------------------------------------


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


Members = list[tuple[tarfile.TarInfo, bytes | None]]


def _tar(members: Members, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _pax_override(name: str, real: str) -> tarfile.TarInfo:
    info = _member(name)
    info.pax_headers = {"path": real}
    return info


D, L, H = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
HOSTILE: dict[str, Members] = {
    "absolute path": [(_member("/tmp/roost-fuzz-evil"), b"x")],
    "dotdot path": [(_member("a/../../evil"), b"x")],
    "dotdot only": [(_member(".."), b"x")],
    "pax path override with dotdot": [(_pax_override("innocent", "../evil"), b"x")],
    "gnu long name with dotdot": [(_member("../" + "l" * 120), b"x")],
    "char device": [(_member("dev", tarfile.CHRTYPE), None)],
    "block device": [(_member("blk", tarfile.BLKTYPE), None)],
    "fifo": [(_member("fifo", tarfile.FIFOTYPE), None)],
    "symlink absolute": [(_member("etc", L, "/etc"), None)],
    "symlink dotdot out": [(_member("up", L, "../evil"), None)],
    "symlink deep dotdot out": [(_member("a", D), None), (_member("a/up", L, "../../x"), None)],
    "symlink empty target": [(_member("e", L, ""), None)],
    "symlink chain escape": [
        (_member("x", D), None),
        (_member("x/y", L, ".."), None),  # inside on its own: x/.. is the release
        (_member("z", L, "x/y/../.."), None),  # textually inside, physically outside
    ],
    "write through symlink to dot": [(_member("d", L, "."), None), (_member("d/x"), b"x")],
    "write through symlink in dir": [
        (_member("a", D), None),
        (_member("a/l", L, ".."), None),
        (_member("a/l/f"), b"x"),
    ],
    "dir member over symlink": [(_member("d", L, "."), None), (_member("d", D), None)],
    "file over symlink": [(_member("f", L, "g"), None), (_member("f"), b"x")],
    "hard link absolute": [(_member("h", H, "/etc/passwd"), None)],
    "hard link dotdot": [(_member("h", H, "../outside/keep.txt"), None)],
    "hard link to nothing": [(_member("h", H, "missing"), None)],
    "hard link to a symlink": [(_member("s", L, "t"), None), (_member("h", H, "s"), None)],
    "file over dir": [(_member("a", D), None), (_member("a"), b"x")],
    "not a tar": [],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tarball_is_refused_and_nothing_is_written_outside(
    tmp_path: Path, case: str
) -> None:
    _outside(tmp_path)
    payload = tmp_path / "evil.tar"
    payload.write_bytes(_tar(HOSTILE[case]) if HOSTILE[case] else b"not a tar archive" * 40)
    manifest = Manifest("evil", "tar", payload.name, sha256_file(payload), payload.stat().st_size)
    dest = Dest(tmp_path / "dest")
    before = snapshot(tmp_path)
    with pytest.raises(ReleaseError) as info:
        stage(dest, manifest, payload)
    message = str(info.value)
    assert message and "\n" not in message
    assert list(dest.releases.iterdir()) == [], "a refused release left a directory"
    assert snapshot(tmp_path, skip=tmp_path / "dest") == before
    assert not Path("/tmp/roost-fuzz-evil").exists()


def test_a_benign_tarball_with_inside_links_is_staged(tmp_path: Path) -> None:
    """Control: the same machinery accepts links that stay inside the release."""
    members: Members = [
        (_member("bin", D), None),
        (_member("bin/tool"), b"#!/bin/sh\n"),
        (_member("run", L, "bin/tool"), None),
        (_member("bin/up", L, "../run"), None),
        (_member("hard", H, "bin/tool"), None),
    ]
    payload = tmp_path / "ok.tar"
    payload.write_bytes(_tar(members))
    manifest = Manifest("ok", "tar", payload.name, sha256_file(payload), payload.stat().st_size)
    dest = Dest(tmp_path / "dest")
    assert stage(dest, manifest, payload).staged is True
    release = dest.releases / "ok"
    assert (release / "bin" / "up").read_bytes() == b"#!/bin/sh\n"
    assert os.path.realpath(release / "bin" / "up").startswith(os.path.realpath(release))
