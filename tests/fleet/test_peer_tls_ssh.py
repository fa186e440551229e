"""`roost deploy --peer-tls` over real SSH to namespace hosts (root; see fleet.py).

Hosts h0-h2 are in the deploy; h3 is on the same network but outside it.
Mid-transfer (links shaped so the transfer lasts a few seconds) we look at
h0 through OpenSSH: its `roost fetch` runs with --tls-* files that are 0600
in the deploy directory, and from h3 neither a plain BitTorrent handshake
nor a TLS client without a deploy certificate gets a byte back from h0's
peer port. Afterwards the release is identical on h0-h2 and nothing (files,
processes) is left.
"""

from __future__ import annotations

import re
import shlex
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.trees import make_sample_tree
from tests.fleet.conftest import require_fleet_tools
from tests.fleet.fleet import Fleet, in_ns
from tests.fleet.helpers import deploy_argv, local_tree_digest, remote_tree_digest, run_roost

pytestmark = [pytest.mark.root, pytest.mark.slow]

# run on the stranger h3: a plain BitTorrent handshake, then a TLS client without a
# certificate; prints what came back from each (nothing is expected)
STRANGER = r"""
import socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
hs = b"\x13BitTorrent protocol" + bytes(8) + b"\x11" * 20 + b"-XX0001-" + b"s" * 12
def drain(sock):
    got = b""
    try:
        while len(got) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    except (OSError, ssl.SSLError):
        pass
    return got
with socket.create_connection((host, port), timeout=5) as s:
    s.sendall(hs)
    got = drain(s)
    print("plain", len(got), b"BitTorrent" in got)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with socket.create_connection((host, port), timeout=5) as raw:
    try:
        with ctx.wrap_socket(raw) as s:
            s.sendall(hs)
            print("tls", len(drain(s)))
    except (OSError, ssl.SSLError) as exc:
        print("tls", 0, type(exc).__name__)
"""


@pytest.fixture(scope="module")
def fleet4() -> Iterator[Fleet]:
    require_fleet_tools()
    with Fleet(4, dest_size="96m") as fleet:
        yield fleet


def fetch_cmdline(fleet: Fleet, i: int) -> str:
    out = fleet.ssh(i, "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; "
                       "echo; done | grep -e ' fetch .*--tls-ca' | grep -v grep || true")
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""


def test_deploy_with_peer_tls_keeps_strangers_out(fleet4: Fleet, tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "app", big=12_000_000)
    fleet4.shape(20)  # about 5 s of transfer: time to look at h0 mid-way
    members = [h.address for h in fleet4.hosts[:3]]
    result: dict[str, Any] = {}

    def deploy() -> None:
        result["out"] = run_roost(deploy_argv(fleet4, src, members, "--tag", "t1",
                                              "--peer-tls"))

    thread = threading.Thread(target=deploy)
    thread.start()
    try:
        cmdline = ""
        deadline = time.monotonic() + 60
        while not cmdline and time.monotonic() < deadline and thread.is_alive():
            cmdline = fetch_cmdline(fleet4, 0)
            time.sleep(0.2)
        assert cmdline, "no `roost fetch --tls-*` seen on h0"
        argv = shlex.split(cmdline)
        files = [argv[argv.index(f"--tls-{f}") + 1] for f in ("cert", "key", "ca")]
        modes = fleet4.ssh(0, "stat -c %a " + " ".join(map(shlex.quote, files))).stdout.split()
        assert modes == ["600", "600", "600"], (files, modes)
        assert all(f.startswith(f"{fleet4.dest}/.roost/deploys/") for f in files), files
        listening = in_ns(fleet4.hosts[0].ns, "ss", "-Htln", check=False)
        ports = [int(p) for p in re.findall(rf"{re.escape(fleet4.hosts[0].address)}:(\d+)",
                                            listening) if 6881 <= int(p) <= 6999]
        assert ports, listening
        probe = fleet4.ssh(3, f"python3 -I -c {shlex.quote(STRANGER)} "
                              f"{fleet4.hosts[0].address} {ports[0]}")
        assert probe.returncode == 0, probe.stderr
        lines = probe.stdout.splitlines()
        plain = lines[0].split()
        # at most one TLS alert record (7 bytes), never a BitTorrent byte
        assert plain[0] == "plain" and int(plain[1]) <= 7 and plain[2] == "False", lines
        assert lines[1].split()[:2] == ["tls", "0"], lines
        print("stranger h3 ->", lines)
    finally:
        thread.join(300)
    code, report, stderr = result["out"]
    assert code == 0, (report["message"], stderr[-2000:])
    want = local_tree_digest(src)
    for i in range(3):
        assert remote_tree_digest(fleet4, i, f"{fleet4.dest}/releases/t1") == want
        assert fleet4.leftover_pids(i) == [], f"processes left on h{i}"
        left = fleet4.ssh(i, f"ls -A {fleet4.dest}/.roost/deploys; "
                             f"find {fleet4.dest} /tmp /root -name 'peer-*.pem'")
        assert left.stdout.strip() == "", f"left on h{i}: {left.stdout}"
