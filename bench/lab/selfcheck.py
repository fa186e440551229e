"""Lab self-checks with iperf3: single-flow ceiling, two-flow fairness, loss."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.lab.core import Host, Lab, LabError

IPERF_PORT = 5201


def _require_iperf3() -> str:
    path = shutil.which("iperf3")
    if path is None:
        raise LabError("iperf3 is not installed")
    return path


def _server(lab: Lab, host: Host, port: int) -> subprocess.Popen[bytes]:
    proc = lab.spawn(
        host,
        [_require_iperf3(), "-s", "-1", "-B", host.ip, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lab.wait_listen(host, port)
    return proc


def _client_argv(dst: Host, port: int, seconds: float, omit: int, udp_mbit: float = 0) -> list[str]:
    argv = [_require_iperf3(), "-c", dst.ip, "-p", str(port), "-t", str(seconds), "-J"]
    if omit:
        argv += ["-O", str(omit)]
    if udp_mbit:
        argv += ["-u", "-b", f"{udp_mbit}M", "-l", "1000"]
    return argv


def _received_mbit(result: dict[str, object]) -> float:
    end = result["end"]
    assert isinstance(end, dict)
    summary = end.get("sum_received") or end.get("sum")
    assert isinstance(summary, dict)
    return float(summary["bits_per_second"]) / 1e6


def single_flow_mbit(
    lab: Lab, src: Host, dst: Host, seconds: float = 4, omit: int = 1
) -> float:
    """Throughput (Mbit/s, receiver side) of one TCP flow from src to dst."""
    server = _server(lab, dst, IPERF_PORT)
    try:
        r = lab.run(src, _client_argv(dst, IPERF_PORT, seconds, omit), timeout=seconds + omit + 20)
        if r.returncode != 0:
            raise LabError(f"iperf3 client failed: {r.stdout[-300:]} {r.stderr[-300:]}")
        return _received_mbit(json.loads(r.stdout))
    finally:
        lab.stop(server)


@dataclass(frozen=True)
class FlowSplit:
    mbit: tuple[float, ...]

    @property
    def total(self) -> float:
        return sum(self.mbit)

    def min_share_of(self, rate_mbit: float) -> float:
        return min(self.mbit) / rate_mbit


def parallel_flows_mbit(
    lab: Lab,
    pairs: list[tuple[Host, Host]],
    seconds: float = 4,
    omit: int = 1,
    stagger_s: float = 0.0,
) -> FlowSplit:
    """Simultaneous TCP flows, one per (src, dst) pair; Mbit/s per flow.

    `stagger_s` starts each flow that much after the previous one (the later
    flows then run `stagger_s` less long), the case where a FIFO starves.
    """
    servers = [_server(lab, d, IPERF_PORT + k) for k, (_, d) in enumerate(pairs)]
    clients = []
    try:
        for k, (src, dst) in enumerate(pairs):
            if k and stagger_s:
                time.sleep(stagger_s)
            t = max(1.0, seconds - k * stagger_s)
            clients.append(
                lab.spawn(
                    src,
                    _client_argv(dst, IPERF_PORT + k, t, omit),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        rates = []
        for c in clients:
            out, err = c.communicate(timeout=seconds + omit + 20)
            if c.returncode != 0:
                raise LabError(f"iperf3 client failed: {out[-300:]!r} {err[-300:]!r}")
            rates.append(_received_mbit(json.loads(out)))
        return FlowSplit(tuple(rates))
    finally:
        for p in clients + servers:
            lab.stop(p)


_UDP_RECV = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(1.0)
print("ready", flush=True)
seen = set()
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        data = s.recv(2048)
    except socket.timeout:
        if seen:
            break
        continue
    if data == b"end":
        break
    seen.add(data[:8])
print(len(seen), flush=True)
"""

_UDP_SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n = int(sys.argv[3])
for i in range(n):
    s.sendto(i.to_bytes(8, "big") + bytes(192), (sys.argv[1], int(sys.argv[2])))
    if i % 20 == 19:
        time.sleep(0.01)
"""


def udp_loss_fraction(lab: Lab, src: Host, dst: Host, datagrams: int = 2000) -> float:
    """Share of `datagrams` small UDP datagrams from src that dst did not receive.

    Plain sockets rather than iperf3: iperf3's UDP test hangs for good when
    its one-shot UDP handshake datagram is itself dropped by the loss rule.
    """
    port = IPERF_PORT + 100
    recv = lab.spawn(dst, [sys.executable, "-c", _UDP_RECV, dst.ip, str(port), "60"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert recv.stdout is not None
        if recv.stdout.readline().strip() != b"ready":
            raise LabError("UDP receiver did not start")
        lab.run(src, [sys.executable, "-c", _UDP_SEND, dst.ip, str(port), str(datagrams)],
                timeout=60, check=True)
        out, _ = recv.communicate(timeout=30)
        return 1 - int(out.strip()) / datagrams
    finally:
        lab.stop(recv)
