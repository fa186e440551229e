"""Rollout control over real sshd (root; see fleet.py): canary + health check, the deploy
lock and history, --dry-run, a non-root user with sudo, a bastion via ProxyJump.

Five hosts: h0-h3 take the rollouts, h4 has a 2 MiB destination (the full disk of
the dry run). Tests share the fleet and run in order; each states what it expects
to find there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.conftest import require_fleet_tools
from tests.fleet.fleet import APP_USER, DEPLOY_USER, Fleet
from tests.fleet.helpers import ROOT, by_host, deploy_argv, run_roost
from tests.fleet.test_deploy_ssh import assert_nothing_left, current_of

pytestmark = [pytest.mark.root, pytest.mark.slow]
FOUR = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    require_fleet_tools()
    with Fleet(5, dest_size="48m", sizes={4: "2m"}, users=True) as f:
        yield f


def release(base: Path, name: str, healthy: bool) -> Path:
    """A small release whose ./check.sh is its health check."""
    root = base / name
    root.mkdir(parents=True)
    (root / "VERSION").write_text(name + "\n")
    (root / "data.bin").write_bytes(os.urandom(3_000_000))  # more than h4's 2 MiB disk
    check = root / "check.sh"
    check.write_text("#!/bin/sh\necho \"checking $ROOST_TAG on $(hostname -s)\"\n"
                     + ("exit 0\n" if healthy else
                        "echo 'FATAL: $ROOST_TAG cannot reach its database' >&2\nexit 1\n"))
    check.chmod(0o755)
    return root


def addresses(fleet: Fleet, hosts: list[int]) -> list[str]:
    return [fleet.hosts[i].address for i in hosts]


def state_of(fleet: Fleet, i: int, dest: str | None = None) -> dict[str, Any]:
    out = fleet.ssh(i, f"cat {dest or fleet.dest}/.roost/state.json")
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def test_canary_failing_its_health_check_stops_the_rollout(fleet: Fleet,
                                                          tmp_path: Path) -> None:
    hosts = addresses(fleet, FOUR)
    code, report, err = run_roost(deploy_argv(fleet, release(tmp_path, "v1", True), hosts,
                                              "--tag", "v1"))
    assert code == 0, (report["message"], err)

    bad = release(tmp_path, "v2", healthy=False)
    code, report, err = run_roost(deploy_argv(
        fleet, bad, hosts, "--tag", "v2", "--canary", "1", "--batch", "2",
        "--health-check", "./check.sh", "--health-timeout", "20"))
    assert code == 5, (report["message"], err)
    rows = by_host(report)
    canary = rows[hosts[0]]
    assert (canary["batch"], canary["status"], canary["kind"]) == (0, "failed", "health")
    assert canary["current"] == "v1" and "cannot reach its database" in canary["health"]["output"]
    for address in hosts[1:]:
        assert rows[address]["status"] == "not-activated", rows[address]
        assert rows[address]["current"] == "v1"
        assert rows[address]["health"] is None  # never checked: never switched
    assert report["placement"] == {"v1": hosts}
    assert "rollout stopped: the canary failed" in report["message"]
    for i in FOUR:  # what the hosts themselves say, over OpenSSH
        assert current_of(fleet, i) == "releases/v1"
    last = state_of(fleet, 0)["deploys"][-1]
    assert (last["tag"], last["result"], last["current"]) == ("v2", "failed", "v1")
    assert_nothing_left(fleet, FOUR)


def test_redeploying_the_live_tag_with_a_failing_check_keeps_it_current(
        fleet: Fleet, tmp_path: Path) -> None:
    # the tag was live before this deploy: stopping the rollout must not take it away
    hosts = addresses(fleet, [0, 1])
    src = release(tmp_path, "r1", healthy=True)
    other = f"{fleet.dest}/again"  # its own destination: the other tests' hosts stay on v1
    code, report, err = run_roost(deploy_argv(fleet, src, hosts, "--tag", "r1", "--dest", other))
    assert code == 0, (report["message"], err)
    code, report, err = run_roost(deploy_argv(
        fleet, src, hosts, "--tag", "r1", "--dest", other, "--canary", "1",
        "--health-check", "exit 1"))
    assert code == 5, (report["message"], err)
    for i in (0, 1):
        out = fleet.ssh(i, f"readlink {other}/current || true")
        assert out.stdout.strip() == "releases/r1", out
    assert report["placement"] == {"r1": hosts}
    fleet.ssh(0, f"rm -rf {other}")
    fleet.ssh(1, f"rm -rf {other}")


def test_batches_go_through_when_healthy_and_hooks_see_their_environment(
        fleet: Fleet, tmp_path: Path) -> None:
    hosts = addresses(fleet, FOUR)
    code, report, err = run_roost(deploy_argv(
        fleet, release(tmp_path, "v3", True), hosts, "--tag", "v3", "--canary", "1",
        "--batch", "50%", "--health-check", "./check.sh",
        "--post", 'echo "tag=$ROOST_TAG previous=$ROOST_PREVIOUS '
                  'release=$ROOST_RELEASE hook=$ROOST_HOOK"'))
    assert code == 0, (report["message"], err)
    rows = by_host(report)
    assert [rows[a]["batch"] for a in hosts] == [0, 1, 1, 2]
    for address in hosts:
        row = rows[address]
        assert (row["status"], row["current"]) == ("ok", "v3")
        assert row["hooks"][0]["output"].strip() == (
            f"tag=v3 previous=v1 release={fleet.dest}/releases/v3 hook=post")
        assert row["health"]["ok"] and "checking v3" in row["health"]["output"]
    assert_nothing_left(fleet, FOUR)


def _no_processes_within(fleet: Fleet, i: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while fleet.extra_pids(i) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {}
    for pid in fleet.extra_pids(i):
        with contextlib.suppress(OSError):
            left[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    assert left == {}, f"still running on h{i}: {left}"


def test_a_second_deploy_is_refused_by_the_lock(fleet: Fleet, tmp_path: Path) -> None:
    hosts = addresses(fleet, [0, 1])
    slow = deploy_argv(fleet, release(tmp_path, "v4", True), hosts, "--tag", "v4",
                       "--health-check", "sleep 8")
    first = subprocess.Popen(slow, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the first deploy holds h0's lock
            if "v4" in fleet.ssh(0, f"cat {fleet.dest}/.roost/deploy.lock 2>/dev/null").stdout:
                break
            time.sleep(0.3)
        code, report, err = run_roost(deploy_argv(
            fleet, release(tmp_path, "v5", True), hosts, "--tag", "v5"))
        _, first_err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGINT)
            first.communicate(timeout=60)
    assert code == 6, (report["message"], err)
    assert "refused" in report["message"] and "nothing was changed" in report["message"]
    locked = [r for r in report["hosts"] if r["kind"] == "locked"]
    assert locked and all("locked by a running deploy" in r["reason"] for r in locked)
    assert "v4" in locked[0]["reason"]
    assert first.returncode == 0, first_err[-2000:]
    for i in (0, 1):
        assert current_of(fleet, i) == "releases/v4"  # the first deploy, untouched by v5
    status = subprocess.run(deploy_argv(fleet, Path(), hosts, command="status"),
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    rows = by_host(json.loads(status.stdout))
    history = rows[hosts[0]]["history"]
    assert history[-1]["tag"] == "v4" and history[-1]["result"] == "ok"
    assert history[-1]["who"] and history[-1]["started"] <= history[-1]["ended"]
    assert rows[hosts[0]]["lock"] == {"state": "free"}
    assert_nothing_left(fleet, [0, 1])


def test_a_stale_lock_is_reported_then_broken_with_the_flag(fleet: Fleet,
                                                            tmp_path: Path) -> None:
    # a deploy that dies holding h0's lock: our own host-lock, its SSH client killed
    pyz = fleet.ssh(0, "ls -t ~/.cache/roost/*.pyz | head -1").stdout.strip()
    dead = subprocess.Popen(
        fleet.ssh_argv(0, f"python3 -I {pyz} host-lock --dest {fleet.dest} --deploy-id "
                          "dead-deploy --who ghost@gone --tag v9 --json"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert dead.stdout is not None
        assert json.loads(dead.stdout.readline())["locked"] is True
    finally:
        dead.kill()
        dead.wait()
    _no_processes_within(fleet, 0)  # the dead deploy's holder saw EOF and exited
    hosts = addresses(fleet, [0, 1])
    src = release(tmp_path, "v6", True)
    code, report, err = run_roost(deploy_argv(fleet, src, hosts, "--tag", "v6"))
    assert code == 6, (report["message"], err)
    row = by_host(report)[hosts[0]]
    assert row["kind"] == "locked" and "stale lock" in row["reason"]
    assert "dead-deploy" in row["reason"] and "--break-lock" in row["reason"]
    assert current_of(fleet, 0) == current_of(fleet, 1) == "releases/v4"

    code, report, err = run_roost(deploy_argv(fleet, src, hosts, "--tag", "v6",
                                              "--break-lock"))
    assert code == 0, (report["message"], err)
    assert current_of(fleet, 0) == "releases/v6"
    deploys = state_of(fleet, 0)["deploys"]
    died = [d for d in deploys if d.get("deploy_id") == "dead-deploy"]
    assert died and died[0]["result"] == "died" and died[0]["broken_by"]
    assert deploys[-1]["tag"] == "v6" and deploys[-1]["result"] == "ok"
    assert_nothing_left(fleet, [0, 1])


def test_dry_run_reports_a_full_disk_and_an_unreachable_port_and_changes_nothing(
        fleet: Fleet, tmp_path: Path) -> None:
    hosts = addresses(fleet, [0, 1, 2, 4])
    before = {i: fleet.ssh(i, f"find {fleet.dest} ~/.cache -printf '%p %s %T@\\n' "
                              "2>/dev/null | sort").stdout for i in (0, 1, 2, 4)}
    fleet.block(2, "6881-6999")
    try:
        code, report, err = run_roost(deploy_argv(
            fleet, release(tmp_path, "v7", True), hosts, "--tag", "v7", "--dry-run"))
    finally:
        fleet.unblock(2)
    assert code == 7, (report["message"], err)
    rows = by_host(report)
    full, closed = rows[fleet.hosts[4].address], rows[fleet.hosts[2].address]
    assert full["status"] == "failed" and full["kind"] == "preflight"
    assert full["health"]["checks"]["disk"]["verdict"] == "fail"
    assert "need" in full["reason"] and "disk" in full["reason"]
    assert closed["status"] == "failed"
    assert closed["health"]["checks"]["port"]["verdict"] == "fail"
    assert "not reachable" in closed["reason"]
    for address in addresses(fleet, [0, 1]):
        assert rows[address]["status"] == "would-deploy", rows[address]
        checks = rows[address]["health"]["checks"]
        assert {c["verdict"] for c in checks.values()} == {"ok"}, checks
    assert report["dry_run"] is True and "nothing was changed" in report["message"]
    for i in (0, 1, 2, 4):  # not one file, size or mtime changed; no agent pushed to h4
        after = fleet.ssh(i, f"find {fleet.dest} ~/.cache -printf '%p %s %T@\\n' "
                             "2>/dev/null | sort").stdout
        assert after == before[i], f"h{i} changed"
    assert_nothing_left(fleet, [0, 1, 2, 4])


def test_a_non_root_user_deploys_through_sudo_as_the_destination_owner(
        fleet: Fleet, tmp_path: Path) -> None:
    dest = f"{fleet.dest}/svc"
    for i in (1, 2):
        assert fleet.ssh(i, f"install -d -o {APP_USER} -g {APP_USER} {dest}").returncode == 0
    hosts = [f"{DEPLOY_USER}@{a}" for a in addresses(fleet, [1, 2])]
    argv = [sys.executable, "-m", "roost", "deploy", str(release(tmp_path, "s1", True)),
            "--hosts", ",".join(hosts), "--dest", dest, "--key", str(fleet.key),
            "--known-hosts", str(fleet.known_hosts), "--connect-timeout", "5", "--json",
            "--tag", "s1"]
    code, report, err = run_roost(argv)  # without sudo: the login cannot write there
    assert code == 3, (report["message"], err)
    for row in report["hosts"]:
        assert row["status"] == "failed" and "Permission denied" in row["reason"], row
    code, report, err = run_roost([*argv, "--sudo-user", APP_USER])
    assert code == 0, (report["message"], err)
    for i in (1, 2):
        owners = fleet.ssh(i, f"stat -c %U {dest}/releases/s1 {dest}/releases/s1/VERSION "
                              f"{dest}/.roost/state.json").stdout.split()
        assert owners == [APP_USER] * 3
        assert fleet.ssh(i, f"readlink {dest}/current").stdout.strip() == "releases/s1"
        # the agent ran as the owner: it was pushed to the owner's home, not the login's
        agent = fleet.ssh(i, f"stat -c %U /home/{APP_USER}/.cache/roost/*.pyz").stdout.split()
        assert agent == [APP_USER]
    assert_nothing_left(fleet, [1, 2])


@contextlib.contextmanager
def ssh_agent(tmp_path: Path, key: Path) -> Iterator[str]:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                       check=True, capture_output=True, timeout=10)
        yield str(sock)
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_a_host_behind_a_bastion_through_proxyjump_in_ssh_config(fleet: Fleet,
                                                                 tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host bastion\n  HostName {fleet.hosts[0].address}\n\n"
        f"Host app-behind\n  HostName {fleet.hosts[3].address}\n  ProxyJump bastion\n\n"
        f"Host *\n  User root\n  UserKnownHostsFile {fleet.known_hosts}\n")
    env = {**os.environ, "HOME": str(home)}
    fleet.block(3, "22")  # h3 answers SSH only from inside: through the bastion
    try:
        direct = subprocess.run(
            fleet.ssh_argv(3, "true"), capture_output=True, text=True, timeout=30)
        assert direct.returncode != 0
        with ssh_agent(tmp_path, fleet.key) as sock:  # the key comes from ssh-agent
            argv = [sys.executable, "-m", "roost", "deploy", str(release(tmp_path, "j1", True)),
                    "--hosts", "app-behind", "--dest", fleet.dest.as_posix(), "--tag", "j1",
                    "--connect-timeout", "5", "--json"]
            proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300,
                                  env={**env, "SSH_AUTH_SOCK": sock})
        report = json.loads(proc.stdout)
        assert proc.returncode == 0, (report["message"], proc.stderr[-2000:])
        assert report["hosts"][0]["host"] == "app-behind"
    finally:
        fleet.unblock(3)
    assert current_of(fleet, 3) == "releases/j1"
    last = state_of(fleet, 3)["deploys"][-1]  # the lock was released over the tunnel too
    assert (last["tag"], last["result"]) == ("j1", "ok")
    # the tunnelled SSH session ends on h3 only once the bastion closes its side
    _no_processes_within(fleet, 3)
    assert_nothing_left(fleet, [3])
