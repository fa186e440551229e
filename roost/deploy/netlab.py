"""Network-namespace hosts for `roost demo --netns` (root only).

Each host is a network namespace with one veth link into a bridge that
lives in its own namespace; the root namespace gets one veth into the
bridge too, so the deploy process (tracker, origin) reaches the hosts.
Links are capped in both directions with tbf at the demo's rate, so the
hosts sit behind real, rate-limited links. Addresses are 10.78.<k>.0/24
with k chosen unused on this machine, names carry a per-run tag, and
stop() kills only processes inside the run's own namespaces, by pid.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
from dataclasses import dataclass, field

from roost.errors import UsageError


def _ip(*args: str, ns: str | None = None, check: bool = True, input: str | None = None
        ) -> str:
    argv = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, input=input)
    if check and result.returncode != 0:
        raise UsageError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


@dataclass
class NetLab:
    n: int
    rate_mbit: float | None = None
    tag: str = field(default_factory=lambda: f"rd{random.getrandbits(16):04x}")
    subnet: int = 0
    namespaces: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    @property
    def gateway(self) -> str:
        return f"10.78.{self.subnet}.1"

    def address(self, i: int) -> str:
        return f"10.78.{self.subnet}.{10 + i}"

    def host_ns(self, i: int) -> str:
        return f"{self.tag}-h{i}"

    def start(self) -> NetLab:
        if os.geteuid() != 0:
            raise UsageError("--netns needs root (network namespaces and tc)")
        if not 1 <= self.n <= 200:
            raise UsageError("--netns supports 1 to 200 hosts")
        self.subnet = _free_subnet()
        try:
            self._build()
        except BaseException:
            self.stop()
            raise
        return self

    def _build(self) -> None:
        _ip("ip", "netns", "add", self.switch)
        self.namespaces.append(self.switch)
        _ip("ip", "link", "add", "br0", "type", "bridge", ns=self.switch)
        _ip("ip", "link", "set", "br0", "up", ns=self.switch)
        root_if = f"{self.tag}-r"
        _ip("ip", "link", "add", root_if, "type", "veth", "peer", "name", "up0",
            "netns", self.switch)
        _ip("ip", "addr", "add", f"{self.gateway}/24", "dev", root_if)
        _ip("ip", "link", "set", root_if, "up")
        _ip("ip", "link", "set", "up0", "master", "br0", "up", ns=self.switch)
        self._shape(root_if, None)
        self._shape("up0", self.switch)
        for i in range(self.n):
            ns = self.host_ns(i)
            _ip("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            _ip("ip", "link", "set", "lo", "up", ns=ns)
            _ip("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name",
                f"v{i}", "netns", self.switch)
            _ip("ip", "addr", "add", f"{self.address(i)}/24", "dev", "eth0", ns=ns)
            _ip("ip", "link", "set", "eth0", "up", ns=ns)
            _ip("ip", "link", "set", f"v{i}", "master", "br0", "up", ns=self.switch)
            self._shape("eth0", ns)
            self._shape(f"v{i}", self.switch)

    def _shape(self, dev: str, ns: str | None) -> None:
        if not self.rate_mbit:
            return
        kbit = max(8, round(self.rate_mbit * 1000))
        burst = max(4 * 1514, int(self.rate_mbit * 1e6 / 8 * 0.002))
        _ip("tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{kbit}kbit",
            "burst", str(burst), "limit", str(burst + 100 * 1514), ns=ns)

    def stop(self) -> None:
        for ns in self.namespaces:
            for pid in _ip("ip", "netns", "pids", ns, check=False).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self.namespaces):
            _ip("ip", "netns", "del", ns, check=False)
        _ip("ip", "link", "del", f"{self.tag}-r", check=False)
        self.namespaces.clear()


def _free_subnet() -> int:
    used = _ip("ip", "-4", "-o", "addr", "show") + _ip("ip", "-4", "route", "show")
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    for k in candidates:
        if f"10.78.{k}." not in used:
            return k
    raise UsageError("no free 10.78.<k>.0/24 subnet for the demo")
