"""The host side of the deploy lock and history, on real files (no SSH), and the hook
environment and captured output of `activate`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roost.target.hostlock import LockedError, acquire, history, inspect_lock
from roost.target.protocol import DeployRecord, HostStatus, LockInfo, LockState
from roost.target.release import Dest, HookError, activate

ROOT = Path(__file__).resolve().parents[2]


def record(deploy_id: str) -> DeployRecord:
    return DeployRecord(deploy_id, "alice@laptop", "v1", started=1.0)


def test_a_held_lock_refuses_and_a_dead_holder_leaves_a_stale_record(tmp_path: Path) -> None:
    dest = Dest(tmp_path / "app")
    assert inspect_lock(dest) == LockInfo(LockState.FREE)
    fd, broke = acquire(dest, record("first"), break_stale=False)
    assert broke is None and inspect_lock(dest).state is LockState.HELD
    with pytest.raises(LockedError, match="locked by a running deploy first of v1 by alice"):
        acquire(dest, record("second"), break_stale=True)  # never breaks a live holder
    os.close(fd)  # the holder dies without releasing: flock gone, record kept
    assert inspect_lock(dest).state is LockState.STALE
    with pytest.raises(LockedError, match=r"stale lock: deploy first .* --break-lock"):
        acquire(dest, record("second"), break_stale=False)
    fd, broke = acquire(dest, record("second"), break_stale=True)
    os.close(fd)
    assert broke is not None and broke.deploy_id == "first"
    died = history(dest)[-1]
    assert (died.deploy_id, died.result, died.broken_by) == ("first", HostStatus.DIED,
                                                             "alice@laptop")


def host_lock(dest: Path, deploy_id: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "roost", "host-lock", "--dest", str(dest), "--deploy-id",
         deploy_id, "--who", "bob@ci", "--tag", "v2", "--json", *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_host_lock_holds_until_released_and_writes_the_history(tmp_path: Path) -> None:
    dest = tmp_path / "app"
    holder = host_lock(dest, "d1")
    assert holder.stdout is not None and holder.stdin is not None
    assert json.loads(holder.stdout.readline()) == {"locked": True, "broke": None}
    other = host_lock(dest, "d2")
    out, err = other.communicate(timeout=30)
    assert other.returncode == 3 and "locked by a running deploy d1" in err
    assert json.loads(out)["event"] == "error" and json.loads(out)["kind"] == "locked"
    out, _ = holder.communicate('release {"result": "ok", "current": "v2"}\n', timeout=30)
    assert holder.returncode == 0 and json.loads(out) == {"released": True}
    last = history(Dest(dest))[-1]
    assert (last.deploy_id, last.who, last.result, last.current) == (
        "d1", "bob@ci", HostStatus.OK, "v2")
    assert last.started is not None and last.ended is not None
    assert last.started <= last.ended
    assert inspect_lock(Dest(dest)) == LockInfo(LockState.FREE)


def test_hooks_get_the_documented_environment_and_their_output_is_kept(tmp_path: Path) -> None:
    dest = Dest(tmp_path / "app")
    for tag in ("v1", "v2"):
        (dest.releases / tag).mkdir(parents=True)
    show = 'echo "$ROOST_TAG|$ROOST_PREVIOUS|$ROOST_RELEASE|$ROOST_PREVIOUS_RELEASE|$ROOST_HOOK"'
    first = activate(dest, "v1", post=[show])
    assert first.hooks[0].output == f"v1||{dest.releases / 'v1'}||post\n"
    second = activate(dest, "v2", pre=[show], post=[show])
    assert [h.output for h in second.hooks] == [
        f"v2|v1|{dest.releases / 'v2'}|{dest.releases / 'v1'}|{phase}\n"
        for phase in ("pre", "post")]
    with pytest.raises(HookError, match="switched back to v2") as failed:
        activate(dest, "v1", post=["echo about to fail; exit 3"])
    assert failed.value.hooks[-1].output == "about to fail\n"
    assert failed.value.hooks[-1].exit == 3
    assert dest.current_tag() == "v2"


def test_a_lock_that_cannot_be_taken_is_one_sentence_not_contention(tmp_path: Path) -> None:
    dest = tmp_path / "app"
    (dest / ".roost" / "deploy.lock").mkdir(parents=True)  # not a file: cannot open it
    proc = host_lock(dest, "d1")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "Traceback" not in err
    assert "cannot take the deploy lock" in err and len(err.strip().splitlines()) == 1
    answer = json.loads(out)
    assert answer["event"] == "error" and answer["kind"] != "locked"
