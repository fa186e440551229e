"""The fleet lab itself: bring-up/teardown without leaks, rates, fairness, loss.

Needs root (skips locally without it, fails under CI). About 40 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.lab import Lab, LabError, NotRun, selfcheck
from bench.lab.cleanup import find_leftovers, list_netns, remove
from bench.lab.procs import pid_alive
from tests.conftest import require_tool
from tests.lab.conftest import require_lab

pytestmark = [pytest.mark.root]
REPO = Path(__file__).resolve().parents[2]


def root_links() -> str:
    """Interfaces and addresses of the root namespace (must never change)."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    return "\n".join(sorted(line.split("\\")[0] for line in (links + addrs).splitlines()))


def assert_gone(lab: Lab, pids: list[int]) -> None:
    assert not [n for n in list_netns() if n.startswith(lab.prefix + "-")]
    assert lab.tmpdir is not None and not lab.tmpdir.exists()
    assert not [p for p in pids if pid_alive(p)]
    assert find_leftovers(prefix=lab.prefix).empty()


def test_bring_up_and_tear_down_leave_nothing(make_lab: Callable[..., Lab]) -> None:
    before = root_links()
    lab = make_lab(3, 20.0, loss_pct=1.0)
    names = set(list_netns())
    assert {f"{lab.prefix}-sw", *(h.netns for h in lab.hosts)} <= names
    assert root_links() == before, "the lab touched the root namespace"
    # each host sees exactly lo and its eth0 with its lab address
    r = lab.run(lab.hosts[1], ["ip", "-o", "-4", "addr"], check=True)
    assert [line.split()[1] for line in r.stdout.splitlines()] == ["lo", "eth0"]
    assert f"{lab.hosts[1].ip}/16" in r.stdout
    sleeper = lab.spawn(lab.hosts[2], ["sleep", "300"])
    # a grandchild in its own session, escaping the process group
    escaped = lab.run(lab.hosts[1], ["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!"])
    escaped_pid = int(escaped.stdout.strip())
    assert pid_alive(sleeper.pid) and pid_alive(escaped_pid)
    lab.close()
    lab.close()  # idempotent
    assert_gone(lab, [sleeper.pid, escaped_pid])
    assert root_links() == before


def test_failed_bring_up_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    require_lab()
    lab = Lab(3, 20.0)
    from bench.lab import core

    calls = {"n": 0}
    real = core._sh

    def flaky(argv: list[str], input_text: str | None = None, timeout: float = 60) -> None:
        calls["n"] += 1
        if calls["n"] == 20:  # in the middle of the second host
            raise LabError("injected failure")
        real(argv, input_text, timeout)

    monkeypatch.setattr(core, "_sh", flaky)
    with pytest.raises(LabError, match="injected"):
        lab.open()
    assert lab.closed
    assert_gone(lab, [])


def test_latency_is_not_run_not_faked() -> None:
    with pytest.raises(NotRun, match="netem"):
        Lab(2, 10.0, latency_ms=20)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_tears_the_lab_down(sig: signal.Signals, tmp_path: Path) -> None:
    require_lab()
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from bench.lab import Lab
        with Lab(2, 10.0) as lab:
            p = lab.spawn(lab.hosts[1], ["sleep", "300"])
            print(lab.prefix, lab.tmpdir, p.pid, flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        prefix, tmpdir, child = proc.stdout.readline().split()
        assert Path(tmpdir).exists() and pid_alive(int(child))
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            # its lab never ran its teardown: remove what it left (a lab whose owner is dead)
            remove(find_leftovers())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(int(child)):
        time.sleep(0.05)
    assert not pid_alive(int(child))
    assert not Path(tmpdir).exists()
    assert find_leftovers(prefix=prefix).empty()


def test_lab_cleanup_command_removes_orphans() -> None:
    require_lab()
    dead = subprocess.Popen(["true"])
    dead.wait()
    lab = Lab(2, 10.0, prefix=f"rl{dead.pid}x0")
    lab.open()
    sleeper = lab.spawn(lab.hosts[1], ["sleep", "300"])
    # Forget the lab as if its owner had crashed (no teardown ran).
    from bench.lab import core

    core._live_labs.pop(lab.prefix)
    lab._procs.clear()
    lab._closed = True
    assert not find_leftovers(prefix=lab.prefix).empty()
    out = subprocess.run([sys.executable, "-m", "bench.lab_cleanup"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert lab.prefix in out.stdout
    sleeper.wait(timeout=5)
    assert_gone(lab, [sleeper.pid])


def test_single_flow_reaches_configured_rate(lab4: Lab) -> None:
    require_tool("iperf3")
    h = lab4.hosts
    up = selfcheck.single_flow_mbit(lab4, h[0], h[1], seconds=3)
    # TCP payload over 1514-byte frames is 1448/1514 = 0.956 of the link.
    assert 0.90 * lab4.rate_mbit <= up <= 1.0 * lab4.rate_mbit, up
    down = selfcheck.single_flow_mbit(lab4, h[2], h[0], seconds=3)
    assert 0.90 * lab4.rate_mbit <= down <= 1.0 * lab4.rate_mbit, down


def test_two_flows_from_one_origin_share_fairly(lab4: Lab) -> None:
    require_tool("iperf3")
    h = lab4.hosts
    split = selfcheck.parallel_flows_mbit(lab4, [(h[0], h[1]), (h[0], h[2])], seconds=4)
    assert split.total >= 0.85 * lab4.rate_mbit, split
    assert split.min_share_of(lab4.rate_mbit) >= 0.35, split


def test_two_flows_into_one_host_share_fairly(lab4: Lab) -> None:
    require_tool("iperf3")
    h = lab4.hosts
    split = selfcheck.parallel_flows_mbit(lab4, [(h[1], h[0]), (h[2], h[0])], seconds=4)
    assert split.total >= 0.85 * lab4.rate_mbit, split
    assert split.min_share_of(lab4.rate_mbit) >= 0.35, split


def test_loss_rule_drops_about_the_configured_share(make_lab: Callable[..., Lab]) -> None:
    require_tool("iperf3")
    require_tool("nft")
    lab = make_lab(2, 40.0, loss_pct=10.0)
    lost = selfcheck.udp_loss_fraction(lab, lab.hosts[0], lab.hosts[1], datagrams=2000)
    # 2000 datagrams: 10 % +- 4 standard deviations (0.67 % each)
    assert 0.073 <= lost <= 0.127, lost
    assert lab.nft_drop_count(lab.hosts[1]) > 100


def test_no_loss_without_rule(lab4: Lab) -> None:
    require_tool("iperf3")
    lost = selfcheck.udp_loss_fraction(lab4, lab4.hosts[0], lab4.hosts[3])
    assert lost < 0.01, lost


ALL_PAIRS = textwrap.dedent(
    """
    import os, socket, sys, threading, time
    me, ready, total, others = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((me, 7000))
    server.listen(128)
    def accept():
        while True:
            server.accept()[0].close()
    threading.Thread(target=accept, daemon=True).start()
    open(os.path.join(ready, me), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(ready)) < total and time.monotonic() < deadline:
        time.sleep(0.05)  # every host dials at once, once all listen, as a swarm starts
    failed = []
    def dial(ip):
        sock = socket.socket()
        sock.bind((me, 0))
        sock.settimeout(4)
        try:
            sock.connect((ip, 7000))
        except OSError as exc:
            failed.append(f"{ip}: {exc}")
        finally:
            sock.close()
    threads = [threading.Thread(target=dial, args=(ip,)) for ip in others]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(" ".join(failed), flush=True)
    open(os.path.join(ready, me + ".done"), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(ready)) < 2 * total and time.monotonic() < deadline:
        time.sleep(0.05)  # keep listening until every host has dialled
    """
)


def test_every_host_reaches_every_other_in_a_33_host_lab(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    # 33 hosts x 32 learned ARP entries overflowed the kernel's shared
    # neighbour table (gc_thresh3 = 1024): some pairs could never connect,
    # and a 32-receiver benchmark had a host with only 16 peers
    lab = make_lab(33, 40.0)
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = [
        (host, lab.spawn(host, [sys.executable, "-c", ALL_PAIRS, host.ip, str(ready),
                                str(len(lab.hosts)), *(o.ip for o in lab.hosts if o is not host)],
                         stdout=subprocess.PIPE))
        for host in lab.hosts
    ]
    unreachable = {}
    for host, proc in procs:
        out, _ = proc.communicate(timeout=90)
        if out.strip():
            unreachable[host.name] = out.decode().strip()
    assert len(list(ready.iterdir())) == 2 * len(lab.hosts), "not every host listened and dialled"
    assert not unreachable, unreachable
