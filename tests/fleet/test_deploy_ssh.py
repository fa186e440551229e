"""End-to-end `roost deploy` over real SSH to namespace hosts (root; see fleet.py).

Each host runs Debian's sshd in its own network and mount namespace with its
own tmpfs destination, /tmp and /root; its python3 cannot import roost, so
the deploy must push the zipapp. Tests run in order and share the fleet:
the failure test kills a host, so it runs last.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploy.trees import make_sample_tree
from tests.fleet.fleet import Fleet
from tests.fleet.helpers import (
    ROOT,
    by_host,
    deploy_argv,
    local_tree_digest,
    remote_tree_digest,
    run_roost,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]
EIGHT = range(8)


def addresses(fleet: Fleet, indexes: range | list[int]) -> list[str]:
    return [fleet.hosts[i].address for i in indexes]


def current_of(fleet: Fleet, i: int) -> str:
    out = fleet.ssh(i, f"readlink {fleet.dest}/current || true")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def assert_nothing_left(fleet: Fleet, hosts: range | list[int]) -> None:
    for i in hosts:
        assert fleet.extra_pids(i) == [], f"processes left on h{i}"
        out = fleet.ssh(i, f"ls -A {fleet.dest}/.roost/deploys 2>/dev/null; "
                           f"ls -A {fleet.dest}/releases | grep -e '^\\.' || true")
        assert out.stdout.strip() == "", f"files left on h{i}: {out.stdout}"
    # an origin of ours binds this fleet's gateway (other runs may deploy at the same time)
    leftovers = [p for p in _our_processes() if "roost-deploy-" in p
                 and (f"--bind {fleet.gateway} " in p or f"--bind {fleet.gateway6} " in p)]
    assert leftovers == [], leftovers


def _our_processes() -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return out


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_tree(tmp_path_factory.mktemp("release") / "app", big=3_000_000)


def test_hosts_cannot_import_roost_before_the_deploy(fleet8: Fleet) -> None:
    out = fleet8.ssh(0, "python3 -c 'import roost'")
    assert out.returncode != 0 and "No module named 'roost'" in out.stderr
    assert fleet8.ssh(0, "ls ~/.cache/roost 2>/dev/null | wc -l").stdout.strip() == "0"


def test_deploy_a_directory_to_eight_hosts(fleet8: Fleet, src: Path) -> None:
    before = set(Path("/tmp").glob("roost-deploy-*"))
    code, report, stderr = run_roost(deploy_argv(fleet8, src, addresses(fleet8, EIGHT),
                                                 "--tag", "v1", "--keep", "2"))
    assert code == 0, (report["message"], stderr[-2000:])
    rows = by_host(report)
    assert all(r["status"] == "ok" and r["pushed_agent"] for r in rows.values()), rows
    want = local_tree_digest(src)
    for i in EIGHT:
        assert remote_tree_digest(fleet8, i, f"{fleet8.dest}/releases/v1") == want
        assert current_of(fleet8, i) == "releases/v1"
        assert fleet8.ssh(i, "ls ~/.cache/roost").stdout.strip().endswith(".pyz")
    assert_nothing_left(fleet8, EIGHT)
    assert not set(Path("/tmp").glob("roost-deploy-*")) - before  # none of ours left


def test_second_deploy_redeploy_and_rollback(fleet8: Fleet, src: Path) -> None:
    (src / "version").write_text("2")
    code, report, stderr = run_roost(deploy_argv(fleet8, src, addresses(fleet8, EIGHT),
                                                 "--tag", "v2", "--keep", "2", "--compress"))
    assert code == 0, (report["message"], stderr[-2000:])
    assert report["payload"]["format"] == "tar.zst"
    rows = by_host(report).values()
    assert all(r["status"] == "ok" for r in rows), rows
    assert not any(r["pushed_agent"] for r in rows), "the cached agent was not reused"
    assert all(r["previous"] == "v1" for r in rows)
    for i in EIGHT:
        assert current_of(fleet8, i) == "releases/v2"
        assert fleet8.ssh(i, f"cat {fleet8.dest}/current/version").stdout == "2"
    # the same tag again: a no-op on every host, checked by hash
    code, report, _ = run_roost(deploy_argv(fleet8, src, addresses(fleet8, EIGHT),
                                            "--tag", "v2", "--compress"))
    assert code == 0 and all(r["already_had"] for r in report["hosts"])
    code, report, stderr = run_roost(deploy_argv(fleet8, src, addresses(fleet8, EIGHT),
                                                 command="rollback"))
    assert code == 0, stderr
    for i in EIGHT:
        assert current_of(fleet8, i) == "releases/v1"
    code, report, stderr = run_roost(deploy_argv(fleet8, src, addresses(fleet8, EIGHT),
                                                 command="status"))
    assert code == 0, stderr
    assert all(r["current"] == "v1" and r["running"] == [] for r in report["hosts"])
    code, report, stderr = run_roost(deploy_argv(fleet8, src, addresses(fleet8, EIGHT),
                                                 command="clean"))
    assert code == 0 and all(r["stopped"] == [] for r in report["hosts"]), stderr
    assert_nothing_left(fleet8, EIGHT)


def test_below_min_success_switches_nothing(fleet8: Fleet, src: Path) -> None:
    hosts = [*addresses(fleet8, [0, 1]), fleet8.unused_address()]
    code, report, _ = run_roost(deploy_argv(fleet8, src, hosts, "--tag", "v3"))
    assert code == 3, report["message"]
    rows = by_host(report)
    assert rows[fleet8.unused_address()]["kind"] == "unreachable"
    assert rows[fleet8.hosts[0].address]["status"] == "not-activated"
    assert current_of(fleet8, 0) == "releases/v1"
    assert_nothing_left(fleet8, [0, 1])


def test_a_failing_hook_fails_its_host_only_and_switches_back(fleet8: Fleet, src: Path) -> None:
    assert fleet8.ssh(2, "touch /root/fail-hook").returncode == 0
    hosts = addresses(fleet8, [0, 1, 2])
    code, report, _ = run_roost(deploy_argv(fleet8, src, hosts, "--tag", "v5", "--keep", "2",
                                            "--post", "test ! -e /root/fail-hook"))
    assert code == 4, report["message"]  # activation left 2 of 3 (need 3)
    rows = by_host(report)
    assert rows[hosts[2]]["kind"] == "hook" and "switched back to v1" in rows[hosts[2]]["reason"]
    assert [current_of(fleet8, i) for i in (0, 1, 2)] == ["releases/v5", "releases/v5",
                                                          "releases/v1"]
    assert_nothing_left(fleet8, [0, 1, 2])


def test_auth_hostkey_and_python_failures_are_named(fleet8: Fleet, src: Path,
                                                   tmp_path: Path) -> None:
    wrong_key = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)],
                   check=True)
    empty_known = tmp_path / "known_hosts"
    empty_known.write_text("")
    host = addresses(fleet8, [0])
    before = current_of(fleet8, 0)
    cases = [(["--key", str(wrong_key)], "auth"),
             (["--known-hosts", str(empty_known)], "hostkey"),
             (["--python", "python3-not-installed"], "python")]
    for extra, kind in cases:
        code, report, _ = run_roost(deploy_argv(fleet8, src, host, "--tag", "vx", *extra))
        assert code == 3 and report["hosts"][0]["kind"] == kind, report["hosts"]
    assert current_of(fleet8, 0) == before
    assert_nothing_left(fleet8, [0])


def test_deploy_over_ipv6(fleet8: Fleet, src: Path) -> None:
    """SSH, tracker, origin and peers all on IPv6; addresses from routes, not DNS."""
    hosts = [f"[{fleet8.hosts[i].address6}]" for i in (4, 5, 6)]
    code, report, stderr = run_roost(deploy_argv(fleet8, src, hosts, "--tag", "v6",
                                                 "--keep", "2"))
    assert code == 0, (report["message"], stderr[-2000:])
    assert [r["announce"] for r in report["hosts"]] == [fleet8.hosts[i].address6
                                                        for i in (4, 5, 6)]
    for i in (4, 5, 6):
        assert current_of(fleet8, i) == "releases/v6"
    assert_nothing_left(fleet8, [4, 5, 6])


def test_ctrl_c_during_a_deploy_cleans_up(fleet8: Fleet, tmp_path: Path) -> None:
    big = make_sample_tree(tmp_path / "big", big=16_000_000)
    before = [current_of(fleet8, i) for i in range(4)]
    fleet8.shape(4, hosts=[3], origin=False)  # host 3 is slow: the deploy is mid-way
    argv = deploy_argv(fleet8, big, addresses(fleet8, range(4)), "--tag", "v-int")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while not fleet8.fetching(3) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)
        assert proc.poll() is None, "the deploy finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        fleet8.unshape([3])
    assert proc.returncode == 130, err[-2000:]
    assert [current_of(fleet8, i) for i in range(4)] == before
    assert_nothing_left(fleet8, range(4))


def test_failures_stay_on_their_hosts(fleet8: Fleet, tmp_path: Path) -> None:
    """Unreachable, disk full (host 8) and killed mid-transfer (host 7); the rest succeed."""
    big = make_sample_tree(tmp_path / "big", big=12_000_000)
    fleet8.shape(8, hosts=[7], origin=False)
    hosts = [*addresses(fleet8, range(9)), fleet8.unused_address()]
    argv = deploy_argv(fleet8, big, hosts, "--tag", "v4", "--min-success", "0.7",
                       "--keep", "2", "--timeout", "150")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while not fleet8.fetching(7) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)
        fleet8.kill_host(7)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    import json

    report = json.loads(out)
    why = [(h["address"], h["status"], h.get("kind"), h.get("reason")) for h in report["hosts"]]
    assert proc.returncode == 0, (report["message"], why, err[-2000:])
    rows = by_host(report)
    assert rows[fleet8.unused_address()]["kind"] == "unreachable"
    assert rows[fleet8.hosts[8].address]["kind"] == "disk-full"
    assert rows[fleet8.hosts[7].address]["status"] == "failed"
    assert rows[fleet8.hosts[7].address]["kind"] in ("lost", "timeout", "fetch")
    for i in range(7):
        assert rows[fleet8.hosts[i].address]["status"] == "ok"
        assert current_of(fleet8, i) == "releases/v4"
    assert current_of(fleet8, 8) == ""  # never got a release at all
    assert_nothing_left(fleet8, [*range(7), 8])
