"""`roost deploy --origin HOST:PATH` over real SSH to namespace hosts (root; see fleet.py).

h0-h3 are the targets. h4 is a build host that holds the artifact under another
name, with a wide link; h5 holds a corrupt copy. The operator's own link is a
tenth of the hosts': the deploy must still finish, because h4 carries it.
Bytes are counted by the kernel at the links, not taken from roost's report.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.conftest import require_fleet_tools
from tests.fleet.fleet import Fleet
from tests.fleet.helpers import ROOT, deploy_argv, run_roost

pytestmark = [pytest.mark.root, pytest.mark.slow]
TARGETS = [0, 1, 2, 3]
WIDE, CORRUPT = 4, 5
RATE = 80  # Mbit/s, every host's link
NARROW = RATE / 10  # the operator's uplink
SIZE = 8 * 2**20
GOOD_PATH = "/tmp/build/app-build-42.bin"  # not the payload's own name
BAD_PATH = "/tmp/build/app.bin"


@pytest.fixture(scope="module")
def fleet6() -> Iterator[Fleet]:
    require_fleet_tools()
    with Fleet(6, dest_size="64m") as fleet:
        yield fleet


@pytest.fixture(scope="module")
def payload(fleet6: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The artifact here, the same bytes on h4, and one flipped byte on h5."""
    src = tmp_path_factory.mktemp("artifact") / "app.bin"
    data = os.urandom(SIZE)
    src.write_bytes(data)
    fleet6.put(WIDE, GOOD_PATH, data)
    fleet6.put(CORRUPT, BAD_PATH, data[:SIZE // 2] + bytes([data[SIZE // 2] ^ 1])
               + data[SIZE // 2 + 1:])
    return src


def origin(fleet: Fleet, i: int, path: str) -> str:
    return f"{fleet.hosts[i].address}:{path}"


def targets(fleet: Fleet) -> list[str]:
    return [fleet.hosts[i].address for i in TARGETS]


def remote_sha256(fleet: Fleet, i: int, path: str) -> str:
    out = fleet.ssh(i, f"sha256sum {path}")
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0]


def assert_no_process(fleet: Fleet, i: int) -> None:
    deadline = time.monotonic() + 15  # a stopped process gets a moment to exit
    while (left := fleet.extra_pids(i)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"processes left on h{i}"


def assert_origin_gone(fleet: Fleet, i: int) -> None:
    """No host-origin left on an origin host, and none of its files."""
    assert_no_process(fleet, i)
    files = fleet.ssh(i, "ls -d /tmp/roost-origin-* 2>/dev/null || true").stdout.strip()
    assert files == "", f"files left on h{i}: {files}"


def test_a_wide_origin_host_carries_a_deploy_and_a_corrupt_copy_is_refused(
        fleet6: Fleet, payload: Path) -> None:
    fleet6.shape(RATE, origin_mbit=NARROW)
    try:
        sent_here, sent_wide = fleet6.tx_bytes(), fleet6.tx_bytes(WIDE)
        code, report, stderr = run_roost(deploy_argv(
            fleet6, payload, targets(fleet6), "--tag", "t1", "--link-rate", f"{RATE}mbit",
            "--origin", origin(fleet6, WIDE, GOOD_PATH),
            "--origin", origin(fleet6, CORRUPT, BAD_PATH)))
        sent_here = fleet6.tx_bytes() - sent_here
        sent_wide = fleet6.tx_bytes(WIDE) - sent_wide
    finally:
        fleet6.unshape(list(range(6)))
    assert code == 0, (report["message"], stderr[-2000:])
    want = hashlib.sha256(payload.read_bytes()).hexdigest()
    for i in TARGETS:
        assert remote_sha256(fleet6, i, f"{fleet6.dest}/releases/t1/app.bin") == want
    rows = {row["host"]: row for row in report["origins"]}
    wide, bad = rows[fleet6.hosts[WIDE].address], rows[fleet6.hosts[CORRUPT].address]
    assert wide["status"] == "stopped" and wide["reason"] is None, (wide["reason"], wide)
    assert wide["announce"] == fleet6.hosts[WIDE].address, wide
    assert bad["status"] == "failed" and bad["kind"] == "origin", bad
    assert "is not this payload: 1 of" in bad["reason"], bad["reason"]
    # the kernel's count: the wide origin host sent more than the whole payload, and
    # far more than the narrow link here sent (payload, SSH and tracker together)
    assert sent_wide > SIZE and sent_wide > 2 * sent_here, (sent_wide, sent_here)
    assert wide["uploaded"] is not None and wide["uploaded"] >= SIZE // 2, wide
    print(f"transfer {report['timings']['transfer']} s, bound {report['bound']}; "
          f"sent: wide origin {sent_wide}, operator {sent_here}")
    for i in (WIDE, CORRUPT):
        assert_origin_gone(fleet6, i)


def test_origins_alone_seed_a_deploy_over_peer_tls(fleet6: Fleet, payload: Path) -> None:
    """--no-local-origin: the operator sends no payload byte; the origin's certificate
    is the deploy CA's, so the hosts' TLS admits it."""
    sent_here = fleet6.tx_bytes()
    code, report, stderr = run_roost(deploy_argv(
        fleet6, payload, targets(fleet6)[:2], "--tag", "t2", "--peer-tls",
        "--no-local-origin", "--origin", origin(fleet6, WIDE, GOOD_PATH)))
    sent_here = fleet6.tx_bytes() - sent_here
    assert code == 0, (report["message"], stderr[-2000:])
    want = hashlib.sha256(payload.read_bytes()).hexdigest()
    for i in TARGETS[:2]:
        assert remote_sha256(fleet6, i, f"{fleet6.dest}/releases/t2/app.bin") == want
    assert report["local_origin"] is False
    assert report["origins"][0]["uploaded"] >= SIZE, report["origins"]
    assert sent_here < SIZE // 2, sent_here  # SSH and the tracker only
    assert_origin_gone(fleet6, WIDE)


def test_bad_origin_input_is_one_line_and_changes_nothing(
        fleet6: Fleet, payload: Path) -> None:
    # no path: refused before any host is touched
    argv = deploy_argv(fleet6, payload, targets(fleet6), "--tag", "t3",
                       "--origin", fleet6.hosts[WIDE].address)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "--origin" in lines[0] and "HOST:/absolute/path" in lines[0], lines
    # no origin can seed: one unreachable, one without the file
    before = [fleet6.ssh(i, f"readlink {fleet6.dest}/current").stdout for i in TARGETS]
    code, report, stderr = run_roost(deploy_argv(
        fleet6, payload, targets(fleet6), "--tag", "t3", "--no-local-origin",
        "--origin", f"{fleet6.unused_address()}:/srv/app.bin",
        "--origin", origin(fleet6, WIDE, "/tmp/build/missing.bin")))
    assert code == 1, (report["message"], stderr[-2000:])
    assert report["message"].startswith("no origin can seed the payload"), report["message"]
    reasons = {row["host"]: (row["kind"], row["reason"]) for row in report["origins"]}
    assert reasons[fleet6.unused_address()][0] == "unreachable", reasons
    assert reasons[fleet6.hosts[WIDE].address] == (
        "origin", "/tmp/build/missing.bin does not exist on this host"), reasons
    for i in TARGETS:  # still on their release, nothing of t3 left anywhere
        current = fleet6.ssh(i, f"readlink {fleet6.dest}/current").stdout
        assert current == before[i] and current.strip(), (current, before[i])
        left = fleet6.ssh(i, f"ls -A {fleet6.dest}/.roost/deploys; "
                             f"ls -A {fleet6.dest}/releases | grep t3 || true")
        assert left.stdout.strip() == "", left.stdout
        assert_no_process(fleet6, i)
    assert_origin_gone(fleet6, WIDE)


def test_dry_run_looks_at_every_origin(fleet6: Fleet, payload: Path) -> None:
    code, report, stderr = run_roost(deploy_argv(
        fleet6, payload, targets(fleet6)[:1], "--tag", "t4", "--dry-run",
        "--origin", origin(fleet6, WIDE, GOOD_PATH),
        "--origin", origin(fleet6, CORRUPT, "/tmp/build")))
    assert code == 7, (report["message"], stderr[-2000:])
    rows = {row["host"]: row for row in report["origins"]}
    good, bad = rows[fleet6.hosts[WIDE].address], rows[fleet6.hosts[CORRUPT].address]
    assert good["status"] == "checked" and good["reason"] is None, good
    assert bad["kind"] == "origin" and "is not a file" in bad["reason"], bad
    assert "1 of 2 origins could not seed" in report["message"], report["message"]


def test_an_origin_cleans_up_when_the_operator_dies(fleet6: Fleet, payload: Path) -> None:
    """SIGKILL the deploy mid-transfer: the origin host's session sees its channel close,
    stops host-origin, and host-origin removes its files."""
    fleet6.shape(8, hosts=TARGETS[:1], origin=False)  # h0 is slow: the deploy is mid-way
    try:
        proc = subprocess.Popen(deploy_argv(
            fleet6, payload, targets(fleet6)[:1], "--tag", "t5",
            "--origin", origin(fleet6, WIDE, GOOD_PATH)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                    fleet6.fetching(0) and _origin_seeding(fleet6, WIDE)):
                time.sleep(0.2)
            assert fleet6.fetching(0) and _origin_seeding(fleet6, WIDE)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        assert_origin_gone(fleet6, WIDE)
    finally:
        fleet6.unshape(TARGETS[:1])


def _origin_seeding(fleet: Fleet, i: int) -> bool:
    """A seeder listens on host i's peer ports (host-origin runs in a fork of the
    agent session, so its command line is the session's)."""
    out = subprocess.run(["ip", "netns", "exec", fleet.hosts[i].ns, "ss", "-Htln"],
                         capture_output=True, text=True, timeout=10).stdout
    ports = [line.split()[3].rpartition(":")[2] for line in out.splitlines() if line.split()]
    return any(p.isdigit() and 6881 <= int(p) <= 6999 for p in ports)
