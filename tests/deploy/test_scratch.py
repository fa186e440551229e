"""A killed run's scratch directory is removed by the next run; a live one's never."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from roost.deploy import scratch


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _owned(where: Path, name: str, owner: str | None) -> Path:
    path = where / name
    (path / "tls").mkdir(parents=True)
    (path / "tls" / "key.pem").write_text("secret")
    if owner is not None:
        (path / scratch.OWNER_FILE).write_text(owner)
    return path


def test_only_the_dead_owners_directories_are_swept(tmp_path: Path) -> None:
    me = os.getpid()
    dead = _owned(tmp_path, "roost-deploy-dead", f"{_dead_pid()} 12345\n")
    reused = _owned(tmp_path, "roost-deploy-reused", f"{me} 1\n")  # my pid, not my start
    live = _owned(tmp_path, "roost-deploy-live", f"{me} {scratch._started(me)}\n")
    unknown = _owned(tmp_path, "roost-deploy-old", None)  # no owner file: left alone
    garbage = _owned(tmp_path, "roost-deploy-garbage", "lots\n")
    other = _owned(tmp_path, "roost-publish-dead", f"{_dead_pid()} 1\n")  # other prefix
    removed = scratch.sweep_stale("roost-deploy-", tmp_path)
    assert sorted(removed) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists()
    assert live.exists() and unknown.exists() and garbage.exists() and other.exists()


def test_a_new_scratch_names_its_owner_and_sweeps_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    stale = _owned(tmp_path, "roost-deploy-stale", f"{_dead_pid()} 1\n")
    made = scratch.make_scratch("roost-deploy-")
    assert made.parent == tmp_path and not stale.exists()
    assert (made.stat().st_mode & 0o777) == 0o700
    assert scratch.sweep_stale("roost-deploy-", tmp_path) == []  # its owner (us) lives


def test_a_sigkilled_deploy_leaves_nothing_after_the_next_run(tmp_path: Path) -> None:
    """A real process makes a scratch directory and is SIGKILLed; the next run's sweep
    removes it (with the TLS keys a deploy keeps there)."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from roost.deploy.scratch import "
         "make_scratch; p = make_scratch('roost-deploy-'); (p / 'key.pem').write_text('k'); "
         "print(p, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        left = Path(proc.stdout.readline().strip()) if proc.stdout else Path()
        assert left.is_dir() and left.parent == tmp_path
        assert scratch.sweep_stale("roost-deploy-", tmp_path) == []  # still running
    finally:
        proc.kill()
        proc.wait()
    assert left.is_dir()  # SIGKILL: no cleanup ran
    assert scratch.sweep_stale("roost-deploy-", tmp_path) == [left]
    assert not left.exists()
