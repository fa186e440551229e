"""Faults during a real `roost deploy` over SSH to namespace hosts (root; see
tests/fleet/fleet.py): the origin seeder killed before the payload spread, the
tracker restarted.

The deploy runs as a subprocess, exactly as an operator runs it. The test
watches the hosts' staging files through /proc/<sshd pid>/root (each host has
a private mount namespace) and checks which pieces pass their SHA-1, so it
knows, not guesses, whether every piece existed among the hosts when it
killed the origin. Processes are killed by PID only: the origin is found as
the child of the deploy process this test started.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roost.core.metainfo import Metainfo, parse
from tests.deploy.trees import make_sample_tree
from tests.faults.figures import record
from tests.faults.harness import verified_pieces
from tests.fleet.fleet import Fleet
from tests.fleet.helpers import ROOT, by_host, deploy_argv, local_tree_digest, remote_tree_digest

pytestmark = [pytest.mark.root, pytest.mark.slow]
HOSTS = range(5)


# -- helpers -------------------------------------------------------------------------------


def addresses(fleet: Fleet) -> list[str]:
    return [fleet.hosts[i].address for i in HOSTS]


def current_of(fleet: Fleet, i: int) -> str:
    out = fleet.ssh(i, f"readlink {fleet.dest}/current || true")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def releases_of(fleet: Fleet, i: int) -> list[str]:
    out = fleet.ssh(i, f"ls -A {fleet.dest}/releases 2>/dev/null || true")
    return out.stdout.split()


def assert_nothing_left(fleet: Fleet) -> None:
    for i in HOSTS:
        assert fleet.leftover_pids(i) == [], f"processes left on h{i}"
        out = fleet.ssh(i, f"ls -A {fleet.dest}/.roost/deploys 2>/dev/null || true")
        assert out.stdout.strip() == "", f"deploy files left on h{i}: {out.stdout}"


def host_root(fleet: Fleet, i: int) -> Path:
    """Host i's file system as its sshd sees it (its own tmpfs mounts)."""
    pid = fleet.hosts[i].sshd_pid
    assert pid is not None
    return Path(f"/proc/{pid}/root")


def staging(fleet: Fleet, i: int, tag: str) -> tuple[Path, Metainfo] | None:
    deploys = host_root(fleet, i) / str(fleet.dest).lstrip("/") / ".roost" / "deploys"
    for work in deploys.glob("*"):
        data, torrent = work / "staging" / f"{tag}.tar", work / "payload.torrent"
        if data.is_file() and torrent.is_file():
            return data, parse(torrent.read_bytes())
    return None


class PieceWatch:
    """Verified pieces per host for one deploy, re-reading only pieces not seen yet
    (so a poll is cheap and the test reacts within a fraction of a second)."""

    def __init__(self, fleet: Fleet, tag: str) -> None:
        self.fleet, self.tag = fleet, tag
        self.have: dict[int, set[int]] = {}
        self.total = 0

    def poll(self) -> PieceWatch:
        for i in HOSTS:
            found = staging(self.fleet, i, self.tag)
            if found is not None:
                data, meta = found
                self.total = meta.info.num_pieces
                self.have[i] = verified_pieces(data, meta, self.have.get(i))
        return self

    @property
    def union(self) -> set[int]:
        return set().union(*self.have.values()) if self.have else set()

    def fractions(self) -> dict[str, float]:
        return {f"h{i}": round(len(p) / self.total, 3) for i, p in self.have.items()}


def child_pids(parent: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                kids.append(int(entry.name))
    return kids


def origin_pid(deploy: subprocess.Popen[str]) -> int:
    """The deploy's origin child (roost.deploy.originproc, which runs `roost seed`);
    ours, since we started the deploy."""
    for pid in child_pids(deploy.pid):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"roost.deploy.originproc" in cmd or (b"seed" in cmd and b"roost" in cmd):
            return pid
    raise AssertionError("the deploy has no origin seeder child")


@pytest.fixture
def shaped(fleet5: Fleet) -> Iterator[Fleet]:
    """Hosts at 20 Mbit/s: a 24 MB release takes about 10 s, time to act mid-transfer."""
    fleet5.shape(20, hosts=list(HOSTS), origin=False)
    try:
        yield fleet5
    finally:
        fleet5.unshape(list(HOSTS))


def deploy_small(fleet: Fleet, tmp: Path) -> str:
    """Make a new small release current on every host (the one a fault must keep)."""
    tag = f"keep-{secrets.token_hex(3)}"
    src = make_sample_tree(tmp / tag, big=100_000)
    proc = subprocess.run(
        deploy_argv(fleet, src, addresses(fleet), "--tag", tag, "--keep", "2"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return tag


def start_deploy(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, dict[str, Any], str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the deploy cleans up on Ctrl-C
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        raise AssertionError(f"the deploy took over {timeout} s: {err[-2000:]}") from None
    try:
        return proc.returncode, json.loads(out), err
    except ValueError:
        raise AssertionError(f"no JSON report (exit {proc.returncode}): {err[-2000:]}") from None


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def wait_for(pred: Any, timeout: float, what: str, step: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


# -- 1. the origin dies --------------------------------------------------------------------


def test_origin_killed_before_every_piece_spread_nothing_is_activated(
    shaped: Fleet, tmp_path: Path
) -> None:
    """Branch 2: the origin dies while some pieces exist nowhere else: every host
    fails with its reason, the deploy exits 3, and no host switches anything.
    (Branch 1, every piece among the peers, is test_lab_faults.py::
    test_origin_killed_when_every_piece_is_among_peers_the_swarm_completes.)"""
    fleet = shaped
    keep = deploy_small(fleet, tmp_path)
    src = make_sample_tree(tmp_path / "app", big=24_000_000)
    proc = start_deploy(
        deploy_argv(
            fleet, src, addresses(fleet), "--tag", "o-lost", "--timeout", "600", "--keep", "2",
            "--format", "tar",  # PieceWatch reads the staged tarball's pieces
        )
    )
    watch = PieceWatch(fleet, "o-lost")
    try:
        wait_for(
            lambda: len(watch.poll().union) >= watch.total // 10 > 0,
            90,
            "a tenth of the pieces to reach the hosts",
            step=0.1,
        )
        os.kill(origin_pid(proc), signal.SIGKILL)
        time.sleep(5)  # pieces in flight at the kill land; after that nothing new can
        union = len(watch.poll().union)
        code, report, err = finish(proc, 180)
    finally:
        stop(proc)
    # the branch under test: some pieces existed nowhere once the origin was gone
    assert union < watch.total, "every piece had spread: this is the other branch"
    assert code == 3, (report["message"], err[-2000:])
    assert "nothing was switched" in report["message"]
    rows = by_host(report)
    for i in HOSTS:
        row = rows[fleet.hosts[i].address]
        assert row["status"] == "failed" and row["kind"] == "fetch", row
        # the clear reason: not a bare timeout, the origin's death is named
        assert "the pieces only it had are gone" in row["reason"], row
        assert "the origin seeder was killed by signal 9" in row["reason"], row
        assert current_of(fleet, i) == f"releases/{keep}"
        assert "o-lost" not in releases_of(fleet, i)
    assert_nothing_left(fleet)
    # it gave up once the swarm had no source (ORPHAN_GRACE), not after --timeout
    assert report["timings"]["total"] < 300, report["timings"]
    record(
        "origin_killed_lost",
        pieces=watch.total,
        pieces_among_hosts=union,
        exit_code=code,
        message=report["message"],
        reasons=sorted({r["reason"] for r in report["hosts"]}),
        total_s=report["timings"].get("total"),
    )


# -- 2. the tracker restarts mid-deploy ----------------------------------------------------


class ExternalTracker:
    """`roost tracker` with a state file, in the root namespace on the fleet's gateway."""

    def __init__(self, fleet: Fleet, state: Path, token: str) -> None:
        self.fleet, self.state, self.token = fleet, state, token
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "roost",
            "tracker",
            "--host",
            self.fleet.gateway,
            "--port",
            str(self.port),
            "--state",
            str(self.state),
            "--admin-token",
            self.token,
            "--interval",
            "2",
            "--min-interval",
            "1",
            "--json",
        ]
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once listening (or EOF on failure)
        assert line, "the tracker did not start"
        self.port = int(json.loads(line)["port"])

    @property
    def url(self) -> str:
        return f"http://{self.fleet.gateway}:{self.port}"

    def admin(self, path: str) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def test_tracker_restarted_mid_deploy_the_deploy_completes(shaped: Fleet, tmp_path: Path) -> None:
    fleet = shaped
    src = make_sample_tree(tmp_path / "app", big=24_000_000)
    token = "faults-admin-token-0123456789"
    tracker = ExternalTracker(fleet, tmp_path / "tracker.json", token)
    tracker.start()
    proc = start_deploy(
        deploy_argv(
            fleet,
            src,
            addresses(fleet),
            "--tag",
            "t-restart",
            "--format",
            "tar",  # PieceWatch reads the staged tarball's pieces
            "--timeout",
            "150",
            "--keep",
            "2",
            "--tracker",
            tracker.url,
        ),
        env={**os.environ, "ROOST_TRACKER_TOKEN": token},
    )
    watch = PieceWatch(fleet, "t-restart")
    try:

        def mid_transfer() -> bool:
            have = watch.poll().have
            return (
                len(have) == len(HOSTS)
                and all(len(p) < watch.total for p in have.values())
                and sum(map(len, have.values())) >= watch.total
            )

        wait_for(mid_transfer, 90, "the transfer to be under way", step=0.1)
        tracker.kill()  # SIGKILL: no graceful state write
        at_kill = watch.fractions()
        time.sleep(3)
        tracker.start()  # same port, same state file
        assert proc.poll() is None, "the deploy ended while the tracker was down"

        def everyone_back() -> dict[str, Any] | None:
            swarms = tracker.admin("/admin/swarms")["swarms"]
            if not swarms:
                return None
            status = tracker.admin(f"/admin/swarms/{swarms[0]['info_hash']}")
            return status if len(status["peers"]) == len(HOSTS) + 1 else None

        # live peers are not persisted: every host and the origin must re-announce
        status = wait_for(everyone_back, 30, "every peer to announce to the new tracker")
        code, report, err = finish(proc, 240)
    finally:
        stop(proc)
        tracker.stop()
    assert code == 0, (report["message"], report["hosts"], err[-2000:])
    want = local_tree_digest(src)
    for i in HOSTS:
        assert current_of(fleet, i) == "releases/t-restart"
        assert remote_tree_digest(fleet, i, f"{fleet.dest}/releases/t-restart") == want
    assert_nothing_left(fleet)
    record(
        "tracker_restart",
        pieces=watch.total,
        host_fraction_at_kill=at_kill,
        tracker_down_s=3,
        peers_after_restart=len(status["peers"]),
        transfer_s=report["timings"].get("transfer"),
    )


# -- 7. a hook fails on some hosts ---------------------------------------------------------


def test_failing_hooks_keep_the_previous_release_current(fleet5: Fleet, tmp_path: Path) -> None:
    """A pre hook fails on h1 (never switched), a post hook on h3 (switched back);
    the others switch. tests/fleet/test_deploy_ssh.py::
    test_a_failing_hook_fails_its_host_only_and_switches_back covers the post hook
    alone, with a deploy that needs every host."""
    fleet = fleet5
    keep = deploy_small(fleet, tmp_path)
    assert fleet.ssh(1, "touch /root/fail-pre").returncode == 0
    assert fleet.ssh(3, "touch /root/fail-post").returncode == 0
    try:
        src = make_sample_tree(tmp_path / "app", big=1_000_000)
        proc = start_deploy(
            deploy_argv(
                fleet,
                src,
                addresses(fleet),
                "--tag",
                "hooked",
                "--keep",
                "2",
                "--min-success",
                "3",
                "--pre",
                "test ! -e /root/fail-pre",
                "--post",
                "test ! -e /root/fail-post",
            )
        )
        try:
            code, report, err = finish(proc, 180)
        finally:
            stop(proc)
    finally:
        fleet.ssh(1, "rm -f /root/fail-pre")
        fleet.ssh(3, "rm -f /root/fail-post")
    assert code == 0, (report["message"], err[-2000:])  # 3 of 5 needed, 3 switched
    rows = by_host(report)
    for i in HOSTS:
        row = rows[fleet.hosts[i].address]
        if i in (1, 3):
            assert row["status"] == "failed" and row["kind"] == "hook", row
            assert current_of(fleet, i) == f"releases/{keep}", f"h{i} lost its release"
        else:
            assert row["status"] == "ok", row
            assert current_of(fleet, i) == "releases/hooked"
    assert f"switched back to {keep}" in rows[fleet.hosts[3].address]["reason"]
    assert_nothing_left(fleet)
    record(
        "failing_hooks",
        hosts=len(HOSTS),
        failed_pre="h1",
        failed_post="h3",
        exit_code=code,
        reasons={f"h{i}": rows[fleet.hosts[i].address]["reason"] for i in (1, 3)},
    )
