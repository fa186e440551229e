"""One SSH connection and one agent session per host, counted on the hosts themselves.

sshd logs at VERBOSE one "Accepted publickey" line per connection and one
"Starting session: command" line per exec'd command: those are the
counts, from the hosts' side. The agent processes are sampled from /proc
during the deploy. Killing the operator mid-fetch must leave nothing
behind: the session stops the fetch, removes the deploy's files and
releases the lock (recorded as `lost`), with no operator to do it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.conftest import require_fleet_tools
from tests.fleet.fleet import DEPLOY_USER, Fleet
from tests.fleet.helpers import ROOT, deploy_argv, run_roost

pytestmark = [pytest.mark.root, pytest.mark.slow]
N = 3


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    require_fleet_tools()
    with Fleet(N, dest_size="64m", log_level="VERBOSE") as fleet:
        yield fleet


def log_counts(fleet: Fleet, i: int) -> tuple[int, int]:
    """(connections, commands) host i's sshd has logged so far."""
    text = (fleet.run_dir / f"sshd-{fleet.hosts[i].name}.log").read_text()
    return text.count("Accepted publickey for "), text.count("Starting session: command ")


def agent_processes(fleet: Fleet, i: int) -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of host i's roost agent processes."""
    found = {}
    for pid in fleet.extra_pids(i):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if Path(argv[0].decode()).name.startswith("python") and any(
                a.endswith(b".pyz") for a in argv):
            ppid = int(stat.rpartition(")")[2].split()[1])
            found[pid] = (ppid, b" ".join(argv).decode(errors="replace").strip())
    return found


def descends_from(pid: int, ancestor: int, seen: dict[int, tuple[int, str]]) -> bool:
    """`pid` is `ancestor` or its descendant, through parents the sampler saw."""
    for _ in range(len(seen) + 1):  # a bounded walk: pids could repeat
        if pid == ancestor:
            return True
        if pid not in seen:
            return False
        pid = seen[pid][0]
    return False


class Sampler(threading.Thread):
    """Every agent process seen on every host while a deploy runs (bounded in time)."""

    def __init__(self, fleet: Fleet, seconds: float = 120) -> None:
        super().__init__(daemon=True)
        self.fleet, self.seconds = fleet, seconds
        self.seen: list[dict[int, tuple[int, str]]] = [{} for _ in range(fleet.n)]
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            for i in range(self.fleet.n):
                self.seen[i].update(agent_processes(self.fleet, i))
            time.sleep(0.05)


def test_a_deploy_uses_one_connection_and_one_agent_session_per_host(
        fleet: Fleet, tmp_path: Path) -> None:
    src = tmp_path / "app.bin"
    src.write_bytes(os.urandom(3 * 2**20))
    # one command: the probe, which execs the session (after reading the agent on that
    # same channel on the first deploy, when the host lacks it)
    for tag, pushed in (("v1", True), ("v2", False)):
        commands = 1
        before = [log_counts(fleet, i) for i in range(N)]
        sampler = Sampler(fleet)
        sampler.start()
        try:
            code, report, err = run_roost(deploy_argv(
                fleet, src, [h.address for h in fleet.hosts], "--tag", tag,
                "--batch", "1", "--health-check", "true"))  # batches: health checks too
        finally:
            sampler.stop.set()
            sampler.join()
        assert code == 0, (report.get("message"), err[-2000:])
        assert [h["pushed_agent"] for h in report["hosts"]] == [pushed] * N
        time.sleep(0.3)  # sshd writes its last lines as the channels close
        for i in range(N):
            conns, cmds = (a - b for a, b in zip(log_counts(fleet, i), before[i], strict=True))
            assert (conns, cmds) == (1, commands), f"h{i}: {conns} connections, {cmds} commands"
            seen = sampler.seen[i]
            # started by sshd's shell, not forked by another agent process
            sessions = [p for p, (pp, cmd) in seen.items()
                        if cmd.endswith(" session") and pp not in seen]
            assert len(sessions) == 1, f"h{i}: agent sessions {seen}"
            # every other agent process descends from the session (a request's fork, the
            # fetch it execs, a hook's agent call): none was started beside it
            strays = {p: c for p, (_, c) in seen.items()
                      if not descends_from(p, sessions[0], seen)}
            assert strays == {}, f"h{i}: agent processes outside the session: {strays} {seen}"


def test_killing_the_operator_mid_fetch_makes_the_agent_clean_up(
        fleet: Fleet, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(24 * 2**20))
    argv = deploy_argv(fleet, src, [h.address for h in fleet.hosts], "--tag", "v-killed",
                       "--download-rate", "2mbit", "--upload-rate", "2mbit")
    # SIGKILL leaves the deploy's local scratch dir: in tmp_path, which pytest removes
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, "TMPDIR": str(scratch)})
    try:
        deadline = time.monotonic() + 60
        while not all(fleet.fetching(i) for i in range(N)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None and all(fleet.fetching(i) for i in range(N)), \
            "the deploy did not reach the fetch on every host"
        proc.send_signal(signal.SIGKILL)  # no cleanup of its own: the hosts must do it
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for i in range(N):
        deadline = time.monotonic() + 30
        while (left := agent_processes(fleet, i)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left == {}, f"h{i}: agent processes left: {left}"
        out = fleet.ssh(i, f"cat {fleet.dest}/.roost/deploy.lock; echo; "
                           f"ls -A {fleet.dest}/.roost/deploys; echo ==; "
                           f"cat {fleet.dest}/.roost/state.json")
        lock, _, state = out.stdout.partition("==\n")
        assert lock.strip() == "", f"h{i}: the lock is still held or stale: {lock}"
        last = json.loads(state)["deploys"][-1]
        assert last["tag"] == "v-killed" and last["result"] == "lost", last
    # and the next deploy goes ahead without --break-lock
    code, report, err = run_roost(deploy_argv(
        fleet, tmp_path / "big.bin", [h.address for h in fleet.hosts], "--tag", "v-after"))
    assert code == 0, (report.get("message"), err[-2000:])


def test_a_sudo_refusal_is_named_though_the_session_never_started(tmp_path: Path) -> None:
    """The probe that would exec the session runs through sudo; when sudo refuses,
    the host fails as `sudo` with sudo's reason, not as a missing python."""
    require_fleet_tools()
    src = tmp_path / "app.bin"
    src.write_bytes(b"x" * 1024)
    with Fleet(1, dest_size="16m", users=True) as users:
        argv = deploy_argv(users, src, [f"{DEPLOY_USER}@{users.hosts[0].address}"],
                           "--tag", "s1", "--sudo-user", "nosuchuser")
        argv.remove("--user")
        argv.remove("root")
        code, report, err = run_roost(argv)
    row = report["hosts"][0]
    assert code != 0 and row["kind"] == "sudo", (row, err[-2000:])
    assert "unknown user" in row["reason"], row
