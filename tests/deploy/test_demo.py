"""`roost demo` (deploy's own code path, local peers) and host-side agent commands."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roost.deploy.zipapp import build_zipapp
from roost.target.hostops import route_source

ROOT = Path(__file__).resolve().parents[2]


def _origin_workdir(parent: int) -> str:
    """The working directory of the deploy's origin (roost.deploy.originproc): the
    deploy's scratch directory."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if ppid == parent and b"roost.deploy.originproc" in cmd:
                    return os.readlink(f"/proc/{pid}/cwd")
            except (OSError, ValueError, IndexError):
                continue
    return ""


def _roost_children(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd:
                found.append(cmd)
    return found


def _own_tmpdir(tmp_path: Path) -> dict[str, str]:
    """An environment whose TMPDIR is this test's own, so the demo's scratch and peer
    directories (and so its processes' command lines) are told apart from any other
    demo running on the machine."""
    return {**os.environ, "TMPDIR": str(tmp_path)}


@pytest.mark.slow
def test_demo_deploys_to_local_peers_and_reports_efficiency(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "roost", "demo", "--peers", "3", "--size", "4M", "--rate", "100mbit",
         "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT,
        env=_own_tmpdir(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert [h["status"] for h in report["hosts"]] == ["ok"] * 3
    assert report["bound"]["bound_seconds"] > 0
    assert 0 < report["bound"]["efficiency_total"] <= 1.0
    assert report["payload"]["format"] == "tree"  # a directory is sent as itself
    assert _roost_children(f"{tmp_path}/roost-") == []  # every local peer and the origin stopped


def test_demo_bad_input_is_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "roost", "demo", "--size", "lots"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_deploy_bad_input_is_one_line(tmp_path: Path) -> None:
    for argv in (["deploy", str(tmp_path), "--hosts", "a", "--dest", "relative"],
                 ["deploy", str(tmp_path / "missing"), "--hosts", "127.0.0.1", "--dest", "/x"],
                 ["deploy", str(tmp_path)],
                 ["deploy", str(tmp_path), "--hosts", "a", "--dest", "/x", "--min-success",
                  "9"]):
        result = subprocess.run([sys.executable, "-m", "roost", *argv], capture_output=True,
                                text=True, timeout=60, cwd=tmp_path)
        assert result.returncode == 2, (argv, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr


def _agent(pyz: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", "-S", str(pyz), *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_host_clean_stops_recorded_fetch_and_is_idempotent(tmp_path: Path) -> None:
    """A stand-in for a long fetch: a real process whose command line is roost's."""
    pyz = build_zipapp(tmp_path / "roost.pyz")
    work = tmp_path / "dest" / ".roost" / "deploys" / "d1"
    work.mkdir(parents=True)
    # a real `roost fetch` that will wait forever for a tracker that is not there
    (work / "t.torrent").write_bytes(b"d4:infod6:lengthi1e4:name1:x12:piece lengthi16384e"
                                     b"6:pieces20:" + b"\0" * 20 + b"ee")
    proc = subprocess.Popen(
        ["/bin/sh", "-c", f"echo $$ > {work}/fetch.pid && exec {sys.executable} -I -S {pyz} "
         f"fetch {work}/t.torrent -d {work}/staging --port 0 --no-tracker --quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (work / "fetch.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        status = json.loads(_agent(pyz, "host-status", "--dest", str(tmp_path / "dest"),
                                   "--json").stdout)
        assert [p["pid"] for p in status["running"]] == [proc.pid]
        out = _agent(pyz, "host-clean", "--dest", str(tmp_path / "dest"), "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["stopped"] == [proc.pid]
        assert proc.wait(timeout=10) is not None
        assert not work.exists()
        again = _agent(pyz, "host-clean", "--dest", str(tmp_path / "dest"), "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["stopped"] == []
        nothing = _agent(pyz, "host-clean", "--dest", str(tmp_path / "never"), "--json")
        assert nothing.returncode == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_route_source_v4_and_v6() -> None:
    assert route_source("127.0.0.1", 80) == "127.0.0.1"
    if socket.has_ipv6:
        try:
            assert route_source("::1", 80) == "::1"
        except OSError:
            pytest.skip("no IPv6 loopback here")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_a_demo_cleans_up(sig: signal.Signals, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "roost", "demo", "--peers", "3", "--size", "48M", "--rate", "40mbit",
         "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=_own_tmpdir(tmp_path))
    base = ""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not base:
            fetches = [c for c in _roost_children(f"{tmp_path}/roost-demo-") if " fetch " in c]
            # this demo's own directory, from its peers' command lines
            mine = [re.search(r"(/\S+/roost-demo-[^/\s]+)/hosts/", c) for c in fetches]
            base = next((m.group(1) for m in mine if m), "")
            time.sleep(0.2)
        time.sleep(1.0)
        assert base and proc.poll() is None, "the demo ended before it could be interrupted"
        scratch = _origin_workdir(proc.pid)
        assert re.fullmatch(r"/\S+/roost-deploy-[^/\s]+", scratch), scratch
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    report = json.loads(out)
    assert report["interrupted"] is True
    assert _roost_children(base) == []
    assert not Path(base).exists()
    assert not Path(scratch).exists()  # the deploy's local scratch dir
