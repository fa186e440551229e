"""release.py with real files: unpack, switch, prune, rollback, hostile archives."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from roost.deploy.pack import pack
from roost.target.protocol import HookPhase
from roost.target.release import (
    HOOK_OUTPUT_MAX,
    Dest,
    ReleaseError,
    activate,
    rollback,
    run_hook,
    stage,
)
from tests.deploy.trees import make_sample_tree, tree_signature


def staged(tmp_path: Path, src: Path, tag: str, **kw: object) -> Dest:
    work = tmp_path / f"work-{tag}"
    work.mkdir()
    if src.is_dir():
        kw.setdefault("fmt", "tar")  # the tarball path; tests/deploy/test_tree.py: trees
    packed = pack(src, work, tag, **kw)  # type: ignore[arg-type]
    dest = Dest(tmp_path / "dest")
    stage(dest, packed.manifest, packed.payload)
    return dest


@pytest.mark.parametrize("fmt", [{"fmt": "tar"}, {"fmt": "auto", "compress": True}])
def test_directory_roundtrip_is_identical(tmp_path: Path, fmt: dict[str, object]) -> None:
    if fmt.get("compress") and shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    src = make_sample_tree(tmp_path / "src")
    dest = staged(tmp_path, src, "v1", **fmt)
    assert tree_signature(dest.releases / "v1") == tree_signature(src)
    assert not any(p.name.startswith(".") for p in dest.releases.iterdir())


def test_file_payload_and_multifile_payload(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src")
    dest = staged(tmp_path, src / "bin" / "tool", "f1")
    assert (dest.releases / "f1" / "tool").read_bytes() == (src / "bin" / "tool").read_bytes()
    src2 = tmp_path / "plain"
    (src2 / "a" / "b").mkdir(parents=True)
    (src2 / "a" / "b" / "c.txt").write_text("hello")
    dest2 = staged(tmp_path, src2, "d1", fmt="dir")
    assert (dest2.releases / "d1" / "a" / "b" / "c.txt").read_text() == "hello"


def test_restage_same_tag_is_a_noop_and_other_content_is_refused(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src")
    dest = staged(tmp_path, src, "v1")
    work = tmp_path / "again"
    work.mkdir()
    packed = pack(src, work, "v1", fmt="tar")
    assert stage(dest, packed.manifest, packed.payload).staged is False
    (src / "new.txt").write_text("changed")
    work2 = tmp_path / "changed"
    work2.mkdir()
    packed2 = pack(src, work2, "v1", fmt="tar")
    with pytest.raises(ReleaseError, match="other content"):
        stage(dest, packed2.manifest, packed2.payload)


def test_wrong_sha256_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src")
    work = tmp_path / "w"
    work.mkdir()
    packed = pack(src, work, "v1", fmt="tar")
    with packed.payload.open("r+b") as f:
        f.seek(600)
        f.write(b"X")
    dest = Dest(tmp_path / "dest")
    with pytest.raises(ReleaseError, match="does not match"):
        stage(dest, packed.manifest, packed.payload)
    assert list(dest.releases.iterdir()) == []


def test_switch_prune_rollback_and_history(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src")
    dest = Dest(tmp_path / "dest")
    for i in range(1, 6):
        (src / "version").write_text(str(i))
        work = tmp_path / f"w{i}"
        work.mkdir()
        packed = pack(src, work, f"v{i}", fmt="tar")
        stage(dest, packed.manifest, packed.payload)
        result = activate(dest, f"v{i}", keep=2)
        assert (dest.current / "version").read_text() == str(i)
        assert result.previous == (f"v{i - 1}" if i > 1 else None)
    assert dest.release_tags() == ["v4", "v5"]
    assert os.readlink(dest.current) == "releases/v5"
    assert rollback(dest).tag == "v4"
    assert (dest.current / "version").read_text() == "4"
    assert activate(dest, "v4").changed is False


def test_hooks_run_in_the_release_and_a_failing_post_hook_switches_back(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src")
    dest = staged(tmp_path, src, "v1")
    activate(dest, "v1", pre=["test -f version && touch $ROOST_DEST/pre-ran"])
    assert (dest.root / "pre-ran").exists()
    (src / "version").write_text("2")
    work = tmp_path / "w2"
    work.mkdir()
    packed = pack(src, work, "v2", fmt="tar")
    stage(dest, packed.manifest, packed.payload)
    with pytest.raises(ReleaseError, match="switched back to v1"):
        activate(dest, "v2", post=["echo unhealthy >&2; exit 3"])
    assert os.readlink(dest.current) == "releases/v1"
    with pytest.raises(ReleaseError, match="failed"):
        activate(dest, "v2", pre=["false"])
    assert os.readlink(dest.current) == "releases/v1"


def test_a_first_deploy_whose_post_hook_fails_leaves_nothing_current(tmp_path: Path) -> None:
    dest = staged(tmp_path, make_sample_tree(tmp_path / "src"), "v1")
    with pytest.raises(ReleaseError, match="no release is current"):
        activate(dest, "v1", post=["exit 4"])
    assert not dest.current.is_symlink() and not dest.current.exists()


def _agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roost", *args], capture_output=True, text=True, timeout=60
    )


def test_rollback_none_only_removes_the_expected_release(tmp_path: Path) -> None:
    dest = staged(tmp_path, make_sample_tree(tmp_path / "src"), "v1")
    activate(dest, "v1")
    refused = _agent("host-rollback", "--dest", str(dest.root), "--none", "--expect", "v2")
    assert refused.returncode != 0 and "left as it is" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert os.readlink(dest.current) == "releases/v1"
    done = _agent("host-rollback", "--dest", str(dest.root), "--none", "--expect", "v1")
    assert done.returncode == 0, done.stderr
    assert not dest.current.is_symlink()


# --- hostile archives -------------------------------------------------------------------


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    return info


HOSTILE = {
    "absolute": [(_member("/tmp/roost-evil"), b"x")],
    "dotdot": [(_member("a/../../evil"), b"x")],
    "symlink-escape": [(_member("up", tarfile.SYMTYPE, "../../.."), None)],
    "absolute-symlink": [(_member("etc", tarfile.SYMTYPE, "/etc"), None)],
    "write-through-symlink": [
        (_member("d", tarfile.SYMTYPE, "."), None),
        (_member("d/x"), b"x"),
    ],
    "device": [(_member("dev", tarfile.CHRTYPE), None)],
    "fifo": [(_member("fifo", tarfile.FIFOTYPE), None)],
    "hardlink-outside": [(_member("h", tarfile.LNKTYPE, "/etc/passwd"), None)],
    "duplicate-over-dir": [
        (_member("a", tarfile.DIRTYPE), None),
        (_member("a"), b"x"),
    ],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tarballs_are_refused_and_leave_nothing(tmp_path: Path, case: str) -> None:
    from roost.target.release import Manifest, sha256_file

    payload = tmp_path / "evil.tar"
    payload.write_bytes(_tar(HOSTILE[case]))
    manifest = Manifest("evil", "tar", payload.name, sha256_file(payload), payload.stat().st_size)
    dest = Dest(tmp_path / "dest")
    with pytest.raises(ReleaseError):
        stage(dest, manifest, payload)
    assert list(dest.releases.iterdir()) == []
    assert not Path("/tmp/roost-evil").exists()


def test_agent_activate_via_zipapp_json(tmp_path: Path) -> None:
    """The agent subcommand, run as the deploy runs it: python3 -I roost.pyz activate."""
    from roost.deploy.zipapp import build_zipapp

    src = make_sample_tree(tmp_path / "src")
    work = tmp_path / "w"
    work.mkdir()
    packed = pack(src, work, "v1", fmt="tar")
    (work / "manifest.json").write_text(json.dumps(packed.manifest.to_dict()))
    pyz = build_zipapp(tmp_path / "roost.pyz")
    dest = tmp_path / "dest"
    cmd = [sys.executable, "-I", "-S", str(pyz), "activate", "--dest", str(dest), "--json",
           "--manifest", str(work / "manifest.json"), "--payload", str(packed.payload)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["tag"] == "v1" and result["stage"]["staged"] is True
    assert tree_signature(dest / "current") == tree_signature(src)
    bad = subprocess.run([*cmd[:4], "activate", "--dest", str(dest), "--tag", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "not staged" in bad.stderr and "Traceback" not in bad.stderr


def test_owners_are_kept_when_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("owners are restored only by root")
    src = make_sample_tree(tmp_path / "src")
    os.chown(src / "etc" / "app.conf", 1234, 2345)
    os.lchown(src / "run", 1234, 2345)
    dest = staged(tmp_path, src, "v1")
    st = os.stat(dest.releases / "v1" / "etc" / "app.conf")
    assert (st.st_uid, st.st_gid) == (1234, 2345)
    assert os.lstat(dest.releases / "v1" / "run").st_uid == 1234


def test_a_hook_that_leaves_a_daemon_holding_its_output_does_not_hang(tmp_path: Path) -> None:
    # `service x restart` often leaves a daemon that inherited the hook's stdout:
    # waiting for EOF on it would hang the deploy until the hook timeout, or for good
    pidfile = tmp_path / "daemon.pid"
    command = f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' & echo started"
    started = time.monotonic()
    try:
        record = run_hook(command, tmp_path, "v1", tmp_path, timeout=30, phase=HookPhase.POST)
        elapsed = time.monotonic() - started
    finally:
        for _ in range(50):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert record.exit == 0 and record.output.startswith("started")
    assert elapsed < 15, f"the hook returned after {elapsed:.1f} s"


def test_a_chatty_hook_keeps_only_the_tail_of_its_output(tmp_path: Path) -> None:
    command = "head -c 20000000 /dev/zero | tr '\\0' x; echo; echo the-last-line"
    record = run_hook(command, tmp_path, "v1", tmp_path, timeout=60, phase=HookPhase.POST)
    assert record.exit == 0
    assert len(record.output) <= HOOK_OUTPUT_MAX
    assert record.output.endswith("x\nthe-last-line\n")
