"""The fetch's pid file (roost.target.fsutil.write_pid_file): host-clean reads it while a
fetch may be starting, so it must exist whole or not at all, and a fetch must not start
once its deploy directory has been moved aside."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from roost.target.fsutil import write_pid_file


def test_a_pid_file_is_never_seen_without_its_pid(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """What a reader would find at every syscall of the writer: no file, or the pid."""
    pidfile = tmp_path / "fetch.pid"
    seen: list[bytes | None] = []

    def look() -> None:
        seen.append(pidfile.read_bytes() if pidfile.exists() else None)

    for name in ("open", "write", "close", "rename", "replace"):
        real = getattr(os, name)

        def watched(*args: Any, __real: Any = real, **kwargs: Any) -> Any:
            look()
            try:
                return __real(*args, **kwargs)
            finally:
                look()

        monkeypatch.setattr(os, name, watched)
    write_pid_file(pidfile, 4242)
    monkeypatch.undo()
    assert seen and set(seen) <= {None, b"4242\n"}, seen
    assert seen[-1] == b"4242\n"
    assert os.listdir(tmp_path) == ["fetch.pid"]  # no temporary name left behind


def test_no_pid_file_in_a_directory_that_was_moved_aside(tmp_path: Path) -> None:
    work = tmp_path / "deploys" / "d1"
    work.mkdir(parents=True)
    os.rename(work, tmp_path / "deploys" / ".d1.del-1")  # what host-clean does first
    with pytest.raises(FileNotFoundError):
        write_pid_file(work / "fetch.pid", 4242)
    assert not work.exists()
    assert os.listdir(tmp_path / "deploys" / ".d1.del-1") == []


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / ".fetch.pid.4242.tmp").symlink_to(victim)
    write_pid_file(tmp_path / "fetch.pid", 4242)
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "fetch.pid").read_text() == "4242\n"
    assert not (tmp_path / "fetch.pid").is_symlink()


def test_host_clean_stops_a_child_that_execs_its_fetch_after_the_pid_file(
        tmp_path: Path) -> None:
    """Between writing its pid file and its exec, the session's child still has the
    session's command line: host-clean must wait for the exec, not pass it over."""
    import os
    import subprocess
    import sys
    import time

    from roost.target.hostops import clean, deploy_dir
    from roost.target.release import Dest

    dest = Dest(tmp_path / "app")
    work = deploy_dir(dest, "d1")
    work.mkdir(parents=True)
    # the command line says `roost ... session` until, 0.3 s on, it execs `roost fetch`
    # (it says when it is up: on a loaded machine the interpreter's start alone
    # took longer than host-clean waits for the exec)
    ready = tmp_path / "ready"
    later = ("import os, sys, time; open(os.environ['READY'], 'w').close(); "
             "time.sleep(0.3); os.execv(sys.executable, "
             "[sys.executable, '-c', 'import time; time.sleep(30)', 'roost', 'fe' + 'tch'])")
    child = subprocess.Popen([sys.executable, "-c", later, "roost", "session"],
                             env={**os.environ, "READY": str(ready)})
    try:
        for _ in range(1000):
            if ready.exists():
                break
            time.sleep(0.01)
        write_pid_file(work / "fetch.pid", child.pid)
        time.sleep(0.05)
        result = clean(dest, "d1")
        assert result.stopped == (child.pid,)
        assert child.wait(10) != 0  # stopped, not left to sleep its 30 s
        assert not work.exists()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
