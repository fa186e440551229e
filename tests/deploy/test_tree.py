"""Tree releases on a host, with real processes: pieces land in the staging
directory, files of kept releases are reused, hostile input is refused.

Each release goes as in a deploy, minus SSH: `roost seed --tree` serves the
source tree, `roost fetch --tree-manifest` (the agent's command) writes into
<dest>/releases/.<tag>.tmp-<id>, and `roost activate --manifest --payload`
(the agent's stage + switch) makes it releases/<tag> and current.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roost.deploy.pack import pack
from roost.errors import ReleaseError
from roost.target.checked import CHECKED, remember
from roost.target.release import Dest
from tests.deploy.trees import make_sample_tree, tree_signature
from tests.swarm.harness import Procs, RoostProc

ROOT = Path(__file__).resolve().parents[2]
BIG = 1_500_000  # >= 40 pieces of 16 KiB: aligned with pad files


@pytest.fixture
def procs() -> Iterator[Procs]:
    registry = Procs()
    try:
        yield registry
    finally:
        registry.close()


def _roost(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "roost", *argv], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _prepare(tmp: Path, src: Path, dest: Path, tag: str) -> tuple[Path, Path, Path]:
    """What host-prepare leaves: the deploy dir with manifest and torrent."""
    scratch = tmp / f"scratch-{tag}"
    scratch.mkdir()
    packed = pack(src, scratch, tag)
    assert packed.manifest.format == "tree" and packed.torrent is not None
    Dest(dest).ensure()
    work = dest / ".roost" / "deploys" / f"d-{tag}"
    work.mkdir(parents=True)
    # as host-prepare leaves it: with the record that these bytes were validated, so
    # fetch and stage take the checked path (and the hostile cases below change the
    # manifest after the record: they must be validated in full again)
    remember(work / "manifest.json", json.dumps(packed.manifest.to_dict()).encode())
    (work / "payload.torrent").write_bytes(packed.torrent)
    return work, work / "payload.torrent", dest / "releases" / f".{tag}.tmp-d-{tag}"


def release(tmp: Path, procs: Procs, src: Path, dest: Path, tag: str, *,
            reuse: str = "copy", seed: bool = True, extra: tuple[str, ...] = ()
            ) -> RoostProc:
    work, torrent, staging = _prepare(tmp, src, dest, tag)
    peer: list[str] = []
    if seed:
        origin = procs.start(["seed", str(torrent), "-d", str(src), "--tree", "--skip-check",
                              "--no-tracker"], f"seed {tag}")
        peer = ["--peer", f"127.0.0.1:{origin.port}"]
    fetch = procs.start(["fetch", str(torrent), "--tree-manifest", str(work / "manifest.json"),
                         "--dest", str(dest), "--reuse", reuse, "-d", str(staging),
                         "--no-tracker", *peer, "--no-seed", "--timeout", "60", *extra],
                        f"fetch {tag}")
    assert fetch.wait(90) == 0, "".join(fetch.stderr)[-2000:]
    done = _roost("activate", "--dest", str(dest), "--manifest", str(work / "manifest.json"),
                  "--payload", str(staging), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stage"]["staged"] is True
    shutil.rmtree(work)
    return fetch


def reused(fetch: RoostProc) -> dict[str, Any]:
    return fetch.named("reused")[0]


def test_a_first_release_fetches_everything_and_lands_whole(tmp_path: Path,
                                                            procs: Procs) -> None:
    src = make_sample_tree(tmp_path / "src", big=BIG)
    dest = tmp_path / "dest"
    fetch = release(tmp_path, procs, src, dest, "v1")
    assert reused(fetch)["bytes"] == 0 and reused(fetch)["files"] == 0
    assert tree_signature(dest / "releases" / "v1") == tree_signature(src)
    assert tree_signature(dest / "current") == tree_signature(src)
    assert not list((dest / "releases").glob(".*"))  # no staging left, no pad file written
    assert not (dest / "releases" / "v1" / ".pad").exists()
    # the proofs of every file are recorded for the next release
    record = json.loads((dest / ".roost" / "trees" / "v1.json").read_text())
    assert set(record["files"]) == {"bin/tool", "etc/app.conf", "etc/secret", "private/key",
                                    "version", "data.bin", "empty-file"}


def _next_release(src: Path, new: Path) -> None:
    """The next release: one file changed, one added, one removed, two renamed."""
    shutil.copytree(src, new, symlinks=True)
    (new / "version").write_text("2")
    (new / "added.txt").write_text("new file\n")
    (new / "etc" / "secret").unlink()
    os.rename(new / "data.bin", new / "renamed-data.bin")
    os.rename(new / "private" / "key", new / "private" / "key2")


def _released_and_next(tmp: Path, procs: Procs) -> tuple[Path, Path, Path]:
    """The sample tree released as v1 to tmp/dest, and its next release (src2) beside it."""
    src = make_sample_tree(tmp / "src", big=BIG)
    dest = tmp / "dest"
    release(tmp, procs, src, dest, "v1")
    new = tmp / "src2"
    _next_release(src, new)
    return src, dest, new


def test_the_next_release_reuses_unchanged_and_renamed_files(tmp_path: Path,
                                                            procs: Procs) -> None:
    src, dest, new = _released_and_next(tmp_path, procs)
    fetch = release(tmp_path, procs, new, dest, "v2")
    event = reused(fetch)
    # data.bin (renamed) and private/key (renamed) are reused, with the unchanged ones
    assert event["files"] == 4 and event["bytes"] >= BIG + 64  # tool, app.conf, key2, data
    assert event["refused"] == 0
    assert fetch.named("started")[0]["have"] == event["held_pieces"]  # placed first
    complete = fetch.named("complete")[0]
    assert 0 < complete["downloaded"] < 200_000  # only pieces with new bytes crossed
    assert event["fetch_bytes"] < 200_000
    assert tree_signature(dest / "releases" / "v2") == tree_signature(new)
    assert tree_signature(dest / "releases" / "v1") == tree_signature(src)  # untouched


def test_a_release_entirely_held_needs_no_peer(tmp_path: Path, procs: Procs) -> None:
    src = make_sample_tree(tmp_path / "src", big=BIG)
    dest = tmp_path / "dest"
    release(tmp_path, procs, src, dest, "v1")
    fetch = release(tmp_path, procs, src, dest, "v1-again", seed=False)  # no origin at all
    assert reused(fetch)["fetch_bytes"] == 0
    assert fetch.named("complete")[0]["downloaded"] == 0
    assert tree_signature(dest / "releases" / "v1-again") == tree_signature(src)


def test_a_file_edited_in_place_after_activation_is_not_reused(tmp_path: Path,
                                                               procs: Procs) -> None:
    src = make_sample_tree(tmp_path / "src", big=BIG)
    dest = tmp_path / "dest"
    release(tmp_path, procs, src, dest, "v1")
    live = dest / "current" / "data.bin"
    with open(live, "r+b") as f:  # same size, new bytes, as an operator's hot fix would
        f.seek(1000)
        f.write(b"EDITED")
    fetch = release(tmp_path, procs, src, dest, "v2")
    event = reused(fetch)
    assert event["refused"] == 1 and event["hashed"] == 1  # the stale proof made it look
    assert event["files"] == 5  # everything but data.bin
    assert fetch.named("complete")[0]["downloaded"] >= BIG
    assert tree_signature(dest / "releases" / "v2") == tree_signature(src)


def test_a_touched_but_unchanged_file_is_hashed_and_reused(tmp_path: Path,
                                                           procs: Procs) -> None:
    src = make_sample_tree(tmp_path / "src", big=BIG)
    dest = tmp_path / "dest"
    release(tmp_path, procs, src, dest, "v1")
    os.utime(dest / "current" / "data.bin", (1, 1))  # proof stale, bytes the same
    fetch = release(tmp_path, procs, src, dest, "v2")
    event = reused(fetch)
    assert event["hashed"] == 1 and event["refused"] == 0 and event["files"] == 6
    assert tree_signature(dest / "releases" / "v2") == tree_signature(src)


def test_hardlink_reuse_shares_inodes_only_when_asked(tmp_path: Path, procs: Procs) -> None:
    src = make_sample_tree(tmp_path / "src", big=BIG)
    dest = tmp_path / "dest"
    release(tmp_path, procs, src, dest, "v1")
    release(tmp_path, procs, src, dest, "v2")  # default: copies
    release(tmp_path, procs, src, dest, "v3", reuse="hardlink")
    ino = {t: os.stat(dest / "releases" / t / "data.bin").st_ino for t in ("v1", "v2", "v3")}
    assert ino["v2"] != ino["v1"] and ino["v3"] in (ino["v1"], ino["v2"])
    assert tree_signature(dest / "releases" / "v3") == tree_signature(src)


def _hostile_manifest(tmp: Path, dest: Path, mutate: Any) -> subprocess.CompletedProcess[str]:
    src = make_sample_tree(tmp / "src", big=BIG)
    work, torrent, staging = _prepare(tmp, src, dest, "v1")
    data = json.loads((work / "manifest.json").read_text())
    mutate(data["tree"]["entries"])
    (work / "manifest.json").write_text(json.dumps(data))
    return _roost("fetch", str(torrent), "--tree-manifest", str(work / "manifest.json"),
                  "--dest", str(dest), "-d", str(staging), "--no-tracker", "--no-seed",
                  "--timeout", "10", "--port", "0")


HOSTILE = {
    "dotdot": lambda es: es.append({**es[0], "path": "../outside"}),
    "absolute": lambda es: es.append({**es[0], "path": "/tmp/outside"}),
    "escaping-symlink": lambda es: es.append(
        {"path": "out", "type": "symlink", "mode": 0o777, "uid": 0, "gid": 0, "mtime_ns": 0,
         "target": "../../.."}),
    "duplicate": lambda es: es.append(dict(es[-1])),
    "file-through-a-file": lambda es: es.append(
        {"path": "version/x", "type": "dir", "mode": 0o755, "uid": 0, "gid": 0,
         "mtime_ns": 0}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_manifest_is_one_clear_error_and_writes_nothing(tmp_path: Path,
                                                                 case: str) -> None:
    dest = tmp_path / "box" / "dest"
    result = _hostile_manifest(tmp_path, dest, HOSTILE[case])
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "bad manifest" in result.stderr
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == ["dest"]
    assert not list((dest / "releases").iterdir())


def test_a_torrent_that_differs_from_its_manifest_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    src = make_sample_tree(tmp_path / "src", big=BIG)
    work, torrent, staging = _prepare(tmp_path, src, dest, "v1")
    other = make_sample_tree(tmp_path / "other", big=BIG)
    scratch = tmp_path / "scratch-other"
    scratch.mkdir()
    torrent.write_bytes(pack(other, scratch, "v1").torrent or b"")
    result = _roost("fetch", str(torrent), "--tree-manifest", str(work / "manifest.json"),
                    "--dest", str(dest), "-d", str(staging), "--no-tracker", "--no-seed")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "info-hash" in result.stderr and not staging.exists()


def test_staging_refuses_a_file_that_changed_after_fetch_checked_it(
        tmp_path: Path, procs: Procs) -> None:
    src = make_sample_tree(tmp_path / "src", big=BIG)
    dest = tmp_path / "dest"
    work, torrent, staging = _prepare(tmp_path, src, dest, "v1")
    origin = procs.start(["seed", str(torrent), "-d", str(src), "--tree", "--skip-check",
                          "--no-tracker"], "seed")
    fetch = procs.start(["fetch", str(torrent), "--tree-manifest", str(work / "manifest.json"),
                         "--dest", str(dest), "-d", str(staging), "--no-tracker", "--peer",
                         f"127.0.0.1:{origin.port}", "--no-seed"], "fetch")
    assert fetch.wait(90) == 0
    with open(staging / "data.bin", "r+b") as f:
        f.write(b"tampered")
    done = _roost("activate", "--dest", str(dest), "--manifest", str(work / "manifest.json"),
                  "--payload", str(staging), "--json")
    assert done.returncode != 0 and "does not match its SHA-256" in done.stderr
    assert not (dest / "releases" / "v1").exists() and not (dest / "current").exists()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2.5 MiB tmpfs as the destination (root only), unmounted whatever happens."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    dest = tmp_path / "dest"
    dest.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2560k", "roost-test", str(dest)],
                   check=True, timeout=30)
    try:
        yield dest
    finally:
        subprocess.run(["umount", "-l", str(dest)], check=False, timeout=30)


def test_disk_full_is_one_clear_error_and_the_previous_release_stays(
        tmp_path: Path, procs: Procs, small_disk: Path) -> None:
    src = make_sample_tree(tmp_path / "src", big=BIG)
    release(tmp_path, procs, src, small_disk, "v1")
    other = make_sample_tree(tmp_path / "other", big=BIG)  # new random bytes: no reuse
    work, torrent, staging = _prepare(tmp_path, other, small_disk, "v2")
    result = _roost("fetch", str(torrent), "--tree-manifest", str(work / "manifest.json"),
                    "--dest", str(small_disk), "-d", str(staging), "--no-tracker",
                    "--no-seed", "--timeout", "20", "--port", "0")
    # 4: a full disk's exit code (roost.target.protocol), how the deploy tells the kind
    assert result.returncode == 4 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [result.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith("roost fetch: error: disk full")
    assert tree_signature(small_disk / "current") == tree_signature(src)
    cleaned = _roost("host-clean", "--dest", str(small_disk), "--json")
    assert cleaned.returncode == 0 and not staging.exists()
    assert tree_signature(small_disk / "releases" / "v1") == tree_signature(src)


def test_a_changed_small_file_costs_its_blocks_not_whole_pieces(tmp_path: Path,
                                                                 procs: Procs) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big.bin", "wb") as f:  # sparse: 130 MiB of zeros makes 128 KiB pieces
        f.truncate(130 * 2**20)
    for i in range(20):  # packed back to back before it
        (src / f"a{i:02d}.txt").write_bytes(os.urandom(5000))
    dest = tmp_path / "dest"
    release(tmp_path, procs, src, dest, "v1")
    (src / "a05.txt").write_bytes(os.urandom(5000))
    fetch = release(tmp_path, procs, src, dest, "v2")
    event = reused(fetch)
    assert event["files"] == 20 and event["local_blocks"] >= 2
    # a05 spans at most two 16 KiB blocks of its 128 KiB piece: only those cross
    assert event["fetch_bytes"] <= 2 * 16384
    assert fetch.named("complete")[0]["downloaded"] <= 2 * 16384
    assert tree_signature(dest / "releases" / "v2") == tree_signature(src)


def test_a_tree_of_many_files_stays_within_a_small_descriptor_limit(tmp_path: Path,
                                                                    procs: Procs) -> None:
    import resource

    src = tmp_path / "src"
    for i in range(1500):  # far more files than the fetch may hold open
        d = src / f"d{i % 300:03d}" / "x"  # more directories than finalize keeps open
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:04d}.js").write_bytes(os.urandom(200 + i % 700))
    dest = tmp_path / "dest"
    work, torrent, staging = _prepare(tmp_path, src, dest, "v1")
    origin = procs.start(["seed", str(torrent), "-d", str(src), "--tree", "--skip-check",
                          "--no-tracker"], "seed")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400))

    result = subprocess.run(
        [sys.executable, "-m", "roost", "fetch", str(torrent), "--tree-manifest",
         str(work / "manifest.json"), "--dest", str(dest), "-d", str(staging), "--no-tracker",
         "--peer", f"127.0.0.1:{origin.port}", "--no-seed", "--timeout", "60", "--port", "0",
         "--quiet"], capture_output=True, text=True, timeout=120, preexec_fn=limit,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    done = _roost("activate", "--dest", str(dest), "--manifest", str(work / "manifest.json"),
                  "--payload", str(staging), "--json")
    assert done.returncode == 0, done.stderr
    assert tree_signature(dest / "current") == tree_signature(src)


def _prepare_input(tmp: Path, request: dict[str, Any] | bytes, dest: Path
                   ) -> subprocess.CompletedProcess[str]:
    import zlib

    blob = request if isinstance(request, bytes) else zlib.compress(json.dumps(request).encode())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "roost", "host-prepare", "--dest", str(dest),
                           "--deploy-id", "d1", "--json"], input=blob, capture_output=True,
                          timeout=120, env=env)  # type: ignore[call-overload]


def test_host_prepare_rebuilds_a_tree_torrent_and_proves_it(tmp_path: Path) -> None:
    import base64

    from roost.core.metainfo import parse

    src = make_sample_tree(tmp_path / "src", big=BIG)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    packed = pack(src, scratch, "v1")
    assert packed.torrent is not None
    pieces = parse(packed.torrent).info.pieces
    request = {"manifest": packed.manifest.to_dict(),
               "pieces": base64.b64encode(pieces).decode()}
    dest = tmp_path / "dest"
    done = _prepare_input(tmp_path, request, dest)
    assert done.returncode == 0, done.stderr
    written = (dest / ".roost" / "deploys" / "d1" / "payload.torrent").read_bytes()
    assert (dest / ".roost" / "deploys" / "d1" / CHECKED).is_file()
    assert parse(written).info_hash == parse(packed.torrent).info_hash
    forged = {**request, "pieces": base64.b64encode(b"\x01" * len(pieces)).decode()}
    refused = _prepare_input(tmp_path, forged, tmp_path / "dest2")
    assert refused.returncode == 2 and b"info-hash" in refused.stderr
    assert not (tmp_path / "dest2" / ".roost" / "deploys" / "d1").exists()


def test_host_prepare_refuses_a_decompression_bomb(tmp_path: Path) -> None:
    import zlib

    squeeze = zlib.compressobj(9)
    chunk = b" " * (1 << 20)
    bomb = b"".join(squeeze.compress(chunk) for _ in range(600)) + squeeze.flush()
    assert len(bomb) < 2 * 2**20
    refused = _prepare_input(tmp_path, bomb, tmp_path / "dest")
    assert refused.returncode == 2 and b"too large once decompressed" in refused.stderr


def test_placed_beside_the_swarm_the_next_release_lands_the_same(tmp_path: Path,
                                                                  procs: Procs) -> None:
    src, dest, new = _released_and_next(tmp_path, procs)
    fetch = release(tmp_path, procs, new, dest, "v2", extra=("--place-beside-swarm",))
    event = reused(fetch)
    assert event["files"] == 4 and event["refused"] == 0
    # the wholly reused files (data.bin's pieces) were placed while the swarm ran:
    # the session started without their pieces and held them as they landed
    assert fetch.named("started")[0]["have"] < event["held_pieces"]
    assert fetch.named("placed")[0]["files"] >= 1
    assert 0 < fetch.named("complete")[0]["downloaded"] < 200_000
    assert tree_signature(dest / "releases" / "v2") == tree_signature(new)
    assert tree_signature(dest / "releases" / "v1") == tree_signature(src)


def _late_setup(tmp: Path, procs: Procs) -> tuple[Path, Path, Any]:
    """v1 released; v2 (data.bin renamed, one file changed) set up in-process as fetch
    does, up to the LatePlacer that would run beside the swarm."""
    import argparse

    from roost.engine.reporter import Reporter
    from roost.target.fetch_tree import tree_setup
    from roost.target.torrentfile import read_torrent

    _, dest, new = _released_and_next(tmp, procs)
    work, torrent, staging = _prepare(tmp, new, dest, "v2")
    ns = argparse.Namespace(tree_manifest=work / "manifest.json", dest=dest, dir=staging,
                            reuse="copy", stage=False, place_beside_swarm=True)
    meta = read_torrent(torrent)
    storage, have = tree_setup(meta, ns, Reporter(as_json=True, stream=io.StringIO()))
    placer = storage.placer
    assert placer is not None and ("renamed-data.bin",) in placer.late
    assert placer.reserved() and not any(have[i] for i in placer.reserved())
    assert not (staging / "renamed-data.bin").exists()  # not yet: beside the swarm
    return dest, staging, placer


def _lock_is_free(dest: Path) -> bool:
    try:
        with Dest(dest).locked(timeout=0.5):
            return True
    except ReleaseError:
        return False


def test_late_placement_holds_each_reserved_piece_once_with_its_proof(
        tmp_path: Path, procs: Procs) -> None:
    dest, staging, placer = _late_setup(tmp_path, procs)
    assert not _lock_is_free(dest)  # no prune while sources are copied
    told: list[int] = []
    placer.run(told.extend)
    assert placer.error is None
    assert sorted(told) == placer.reserved()
    assert (staging / "renamed-data.bin").read_bytes() == \
        (tmp_path / "src2" / "renamed-data.bin").read_bytes()
    assert "renamed-data.bin" in placer.storage.proofs
    assert _lock_is_free(dest)


def test_late_placement_that_fails_says_why_holds_nothing_and_lets_go_of_the_lock(
        tmp_path: Path, procs: Procs, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from roost.target import treestage

    dest, _, placer = _late_setup(tmp_path, procs)

    def full(src: int, dst: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(treestage, "copy_bytes", full)
    told: list[int] = []
    placer.run(told.extend)
    assert placer.error is not None and placer.error.startswith("disk full: reusing")
    assert not set(told) & set(placer.pieces_of[("renamed-data.bin",)])
    assert _lock_is_free(dest)


def test_a_source_rewritten_after_its_proof_is_not_placed(
        tmp_path: Path, procs: Procs) -> None:
    # beside the swarm, the proof and the copy are a whole transfer apart: a file
    # of the running release rewritten in that time (same size) must not be copied
    # in as if it were still the proven one
    dest, staging, placer = _late_setup(tmp_path, procs)
    data = dest / "releases" / "v1" / "data.bin"
    old = data.read_bytes()
    data.write_bytes(bytes(b ^ 0xFF for b in old[:16]) + old[16:])
    told: list[int] = []
    placer.run(told.extend)
    assert placer.error is not None and "changed after it was proven" in placer.error
    assert not set(told) & set(placer.pieces_of[("renamed-data.bin",)])
    assert not (staging / "renamed-data.bin").exists()


def test_a_source_written_while_it_is_copied_is_not_reused(
        tmp_path: Path, procs: Procs, monkeypatch: pytest.MonkeyPatch) -> None:
    from roost.target import treestage

    dest, _, placer = _late_setup(tmp_path, procs)
    real = treestage.copy_bytes

    def copy_then_write(src: int, dst: int, size: int) -> None:
        real(src, dst, size)
        # the running release edited in place while its bytes were being copied
        with open(dest / "releases" / "v1" / "data.bin", "r+b") as f:
            f.write(b"!")

    monkeypatch.setattr(treestage, "copy_bytes", copy_then_write)
    told: list[int] = []
    placer.run(told.extend)
    assert placer.error is not None and "changed while it was being reused" in placer.error
    assert not set(told) & set(placer.pieces_of[("renamed-data.bin",)])
