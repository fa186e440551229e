"""An agent that dies mid-way: killed mid-fetch it resumes and completes; killed between
staging and activation it never exposes a partial release, and activates when told."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

from tests.pull.harness import (
    AgentProc,
    agent_argv,
    current_of,
    env,
    free_port,
    publish_argv,
    release_tree,
)
from tests.pull.keys import allowed_signers, make_key


def kill_power(agent: AgentProc) -> None:
    """SIGKILL the agent and its fetch, as a power cut or `systemctl kill` would."""
    pids = [int(p.read_text()) for p in (agent.dest / ".roost" / "deploys").glob("*/fetch.pid")]
    agent.kill()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start_publish(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env())


def finish(publish: subprocess.Popen[str]) -> tuple[int, dict[str, object], str]:
    out, err = publish.communicate(timeout=180)
    return publish.returncode, json.loads(out) if out.strip() else {}, err


def test_an_agent_killed_mid_fetch_resumes_and_completes(tmp_path: Path) -> None:
    key = make_key(tmp_path, "publisher")
    signers = allowed_signers(tmp_path / "allowed_signers", ("ci", key))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dest = tmp_path / "dest"
    argv = agent_argv("a0", dest, url, signers)
    first = AgentProc("a0", dest, tmp_path / "first.log", argv).start()
    again = AgentProc("a0", dest, tmp_path / "again.log", argv)
    size = 4_000_000
    publish = start_publish(publish_argv(
        release_tree(tmp_path, "v1", size=size), key, "127.0.0.1", port, ["a0"], "--tag", "v1",
        "--upload-rate", "500K", "--timeout", "120"))
    try:
        assert first.wait_for(lambda a: any(
            r.get("bytes_done", 0) > size // 4 for r in a.reports("fetching")), 60), first.events()
        kill_power(first)
        done = max(r["bytes_done"] for r in first.reports("fetching"))
        assert done < size and current_of(dest) is None
        assert not (dest / "releases" / "v1").exists()
        again.start()
        code, report, err = finish(publish)
    finally:
        if publish.poll() is None:
            publish.kill()
            publish.wait()
        first.stop()
        again.stop()
    assert code == 0, (report.get("message"), err[-2000:])
    assert current_of(dest) == "v1"
    assert (dest / "current" / "data.bin").stat().st_size == size
    events = again.events()
    resumed = [e for e in events if e.get("event") == "resumed"]
    assert [e["event"] for e in events if e["event"] in ("resuming",)] == ["resuming"]
    # the engine rechecked the pieces on disk: the restart did not start from nothing
    assert resumed and resumed[0]["have"] > 0, events
    assert [r["state"] for r in again.reports() if r["state"] in ("staged", "ok")] == [
        "staged", "ok"]


def test_killed_between_staging_and_activation_exposes_no_partial_release(
        tmp_path: Path) -> None:
    key = make_key(tmp_path, "publisher")
    signers = allowed_signers(tmp_path / "allowed_signers", ("ci", key))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    d0, d1 = tmp_path / "d0", tmp_path / "d1"
    a0 = AgentProc("a0", d0, tmp_path / "a0.log", agent_argv("a0", d0, url, signers)).start()
    a0_again = AgentProc("a0", d0, tmp_path / "a0-again.log", agent_argv("a0", d0, url, signers))
    a1 = AgentProc("a1", d1, tmp_path / "a1.log", agent_argv("a1", d1, url, signers))
    src = release_tree(tmp_path, "v1", size=1_000_000)
    # a1 starts late, so the activation waits while a0 sits staged
    publish = start_publish(publish_argv(src, key, "127.0.0.1", port, ["a0", "a1"],
                                         "--tag", "v1", "--timeout", "120"))
    try:
        assert a0.wait_for(lambda a: bool(a.reports("staged")), 60), a0.events()
        kill_power(a0)
        # staged means whole and verified, and not current
        assert current_of(d0) is None
        assert (d0 / "releases" / "v1" / "data.bin").read_bytes() == (src / "data.bin"
                                                                      ).read_bytes()
        # what a kill during unpacking leaves behind (roost.target.release unpacks into a hidden
        # temporary directory and renames it only when whole)
        partial = d0 / "releases" / ".v1.tmp-killed"
        partial.mkdir()
        (partial / "VERSION").write_text("half")
        a0_again.start()
        a1.start()
        code, report, err = finish(publish)
    finally:
        if publish.poll() is None:
            publish.kill()
            publish.wait()
        for agent in (a0, a0_again, a1):
            agent.stop()
    assert code == 0, (report.get("message"), err[-2000:])
    assert not partial.exists()
    assert [e["path"] for e in a0_again.events() if e["event"] == "removed_partial"] == [
        partial.name]
    assert current_of(d0) == current_of(d1) == "v1"
    assert sorted(p.name for p in (d0 / "releases").iterdir()) == ["v1"]
    assert [r["state"] for r in a0_again.reports() if r["state"] in ("staged", "ok")] == [
        "staged", "ok"]
