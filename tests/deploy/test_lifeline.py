"""A deploy's children (its tracker, its origin) die with it, even by SIGKILL, and
never run a roost/ folder found in the operator's working directory."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from roost.deploy.transport import spawn_roost_child
from roost.target import lifeline

CHILD = textwrap.dedent("""
    import os, sys, time
    from roost.target.lifeline import honour_request, PARENT_ENV
    honour_request()
    print(os.getpid(), PARENT_ENV in os.environ, flush=True)
    time.sleep(60)
""")

STARTER = textwrap.dedent("""
    import subprocess, sys
    from roost.target.lifeline import asked_by
    import os
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=asked_by(os.getpid()),
                             stdout=subprocess.PIPE, text=True)
    print(child.stdout.readline().strip(), flush=True)
    import time
    time.sleep(60)
""")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def _gone_after_starter_killed(starter: subprocess.Popen[str], child_pid: int) -> bool:
    """SIGKILL the starter (no handler of its runs), then up to 10 s for the child to end."""
    starter.kill()
    starter.wait()
    deadline = time.monotonic() + 10
    while not _gone(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _gone(child_pid)


def _clean_up(starter: subprocess.Popen[str], child_pid: int) -> None:
    starter.kill()
    starter.wait()
    if child_pid and not _gone(child_pid):
        os.kill(child_pid, signal.SIGKILL)


def test_a_child_that_asked_dies_when_its_starter_is_killed() -> None:
    starter = subprocess.Popen([sys.executable, "-c", STARTER, CHILD],
                               stdout=subprocess.PIPE, text=True)
    child_pid = 0
    try:
        assert starter.stdout is not None
        pid_text, inherited = starter.stdout.readline().split()
        child_pid = int(pid_text)
        assert inherited == "False"  # the request is not passed on to grandchildren
        assert not _gone(child_pid)
        assert _gone_after_starter_killed(starter, child_pid)
    finally:
        _clean_up(starter, child_pid)


def test_a_child_whose_starter_is_already_gone_ends_at_once() -> None:
    env = {**os.environ, lifeline.PARENT_ENV: str(os.getpid() + 1_000_000)}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, timeout=30,
                          capture_output=True)
    assert done.returncode == 143
    assert done.stdout == b""


def test_without_a_request_nothing_changes() -> None:
    env = {k: v for k, v in os.environ.items() if k != lifeline.PARENT_ENV}
    done = subprocess.run([sys.executable, "-c", CHILD.replace("time.sleep(60)", "")],
                          env=env, timeout=30, capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.split()[1] == "False"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="-P is Python 3.11+")
def test_a_roost_folder_in_the_working_directory_is_not_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "roost"
    (fake / "deploy").mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemExit('the shadow ran')\n")
    (fake / "deploy" / "__init__.py").write_text("")
    (fake / "deploy" / "trackerproc.py").write_text("raise SystemExit('the shadow ran')\n")
    monkeypatch.chdir(tmp_path)

    async def run() -> tuple[int, bytes]:
        proc = await spawn_roost_child("roost.deploy.trackerproc",
                                       stdin=asyncio.subprocess.DEVNULL)
        _, err = await proc.communicate()
        return proc.returncode or 0, err

    code, err = asyncio.run(run())
    assert b"the shadow ran" not in err
    assert code == 2 and b"usage: python -m roost.deploy.trackerproc" in err


LOCAL_STARTER = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from roost.deploy.transport import LocalTransport

    async def main():
        stream = await LocalTransport(Path(sys.argv[1])).start("echo $$; exec sleep 60")
        async for line in stream.lines():
            print(line.strip(), flush=True)
            break
        await asyncio.sleep(60)

    asyncio.run(main())
""")


def test_a_local_hosts_command_dies_when_the_deploy_is_killed(tmp_path: Path) -> None:
    """The demo's local hosts: armed by an exec'd setpriv, without a preexec_fn."""
    if not lifeline.armed_argv():
        pytest.skip("no setpriv here (util-linux): nothing arms the signal")
    starter = subprocess.Popen([sys.executable, "-c", LOCAL_STARTER, str(tmp_path / "home")],
                               stdout=subprocess.PIPE, text=True)
    child_pid = 0
    try:
        assert starter.stdout is not None
        child_pid = int(starter.stdout.readline())
        assert not _gone(child_pid)
        assert _gone_after_starter_killed(starter, child_pid)
    finally:
        _clean_up(starter, child_pid)
