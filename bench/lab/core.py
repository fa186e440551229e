"""The fleet lab: N emulated hosts as network namespaces on one bridge.

Theory of operation
-------------------
A lab builds, all named with its unique prefix ``rl<pid>x<k>``:

* a switch namespace ``<prefix>-sw`` holding bridge ``br0``;
* per host i a namespace ``<prefix>-h<i>`` with interface ``eth0`` (address
  10.77.<i div 250>.<i mod 250 + 1>/16) whose veth peer ``p<i>`` is plugged
  into the bridge. The veth pair is created directly inside the two
  namespaces, so nothing ever appears in the root namespace;
* shaping on both ends of each veth (see ``shaping``) and, optionally, an
  nftables loss rule in each host namespace;
* a temp dir ``<prefix>-*`` on /dev/shm for payloads and per-host files.

Host 0 is the origin by convention. Processes run inside a host with
``ip netns exec`` in a new session and are tracked; teardown stops them by
process group, then sweeps any process still inside the lab's namespaces,
deletes the namespaces (which removes every veth) and the temp dir. Teardown
is idempotent and runs from ``__exit__``, ``atexit`` and on SIGTERM/SIGHUP;
Ctrl-C arrives as KeyboardInterrupt and unwinds through ``__exit__``.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from bench.lab import cleanup, shaping
from bench.lab.cgroup import CpuGroup
from bench.lab.procs import stop_popen

SUBNET_PREFIXLEN = 16
MAX_HOSTS = 250 * 16
_counter = itertools.count()
_live_labs: dict[str, Lab] = {}
_handlers_installed = False


class LabError(RuntimeError):
    """The lab could not be brought up or a command in it failed."""


class NotRun(Exception):
    """A scenario or tool that cannot run here; report it as not run, never as passed."""


@dataclass(frozen=True)
class Host:
    index: int
    name: str  # short label, "h0"
    netns: str  # namespace name, "<prefix>-h0"
    ip: str
    up_mbit: float
    down_mbit: float
    workdir: Path


def host_ip(index: int) -> str:
    return f"10.77.{index // 250}.{index % 250 + 1}"


def host_mac(index: int) -> str:
    """A fixed, locally administered MAC per host, so neighbours can be static."""
    return "02:52:4c:" + ":".join(f"{(index >> shift) & 0xFF:02x}" for shift in (16, 8, 0))


def neighbor_batch(hosts: Sequence[tuple[str, str]], own_ip: str) -> str:
    """`ip -batch` text making every other host a permanent neighbour of eth0.

    The kernel's ARP table is shared by all namespaces and capped (gc_thresh3,
    1024 by default) for learned entries only: 33 hosts x 32 neighbours
    overflowed it, and pairs of hosts silently could not reach each other
    (a 32-receiver run had a host with only 16 peers). Permanent entries are
    not counted, and ARP plays no part in what the lab measures."""
    return "".join(
        f"neigh replace {ip} lladdr {mac} dev eth0 nud permanent\n"
        for ip, mac in hosts
        if ip != own_ip
    )


def _sh(argv: Sequence[str], input_text: str | None = None, timeout: float = 60) -> None:
    r = subprocess.run(
        list(argv), input=input_text, capture_output=True, text=True, timeout=timeout
    )
    if r.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")


def _on_signal(signum: int, frame: FrameType | None) -> None:
    teardown_all()
    raise SystemExit(128 + signum)


def _install_handlers() -> None:
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(teardown_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_signal)


def teardown_all() -> None:
    for lab in list(_live_labs.values()):
        lab.close()


class Lab:
    """N hosts on one bridge, each link shaped to `rate_mbit` both ways.

    `slow_hosts` maps host index to its own rate (both directions);
    `loss_pct` drops that share of every host's incoming packets.
    """

    def __init__(
        self,
        n_hosts: int,
        rate_mbit: float,
        loss_pct: float = 0.0,
        slow_hosts: Mapping[int, float] | None = None,
        shaper: str = "htb",
        latency_ms: float = 0.0,
        prefix: str | None = None,
    ) -> None:
        if not 2 <= n_hosts <= MAX_HOSTS:
            raise ValueError(f"n_hosts must be in 2..{MAX_HOSTS}")
        if shaper not in shaping.SHAPERS:
            raise ValueError(f"unknown shaper {shaper!r}")
        if latency_ms:
            raise NotRun("latency emulation needs netem, which this kernel lacks")
        if not 0 <= loss_pct < 100:
            raise ValueError("loss_pct must be in [0, 100)")
        self.n_hosts = n_hosts
        self.rate_mbit = rate_mbit
        self.loss_pct = loss_pct
        self.slow_hosts = dict(slow_hosts or {})
        self.shaper = shaper
        self.prefix = prefix or f"rl{os.getpid()}x{next(_counter)}"
        if cleanup.PREFIX_RE.match(self.prefix + "-") is None:
            raise ValueError("prefix must look like rl<pid>x<k>")
        self.switch_ns = f"{self.prefix}-sw"
        self.hosts: list[Host] = []
        self.tmpdir: Path | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._closed = True

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> Lab:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Bring the lab up (a no-op when it is already up)."""
        if not self._closed:
            return
        if self.hosts:
            raise LabError("a closed lab cannot be reopened; make a new Lab")
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, tc)")
        for tool in ("ip", "tc") + (("nft",) if self.loss_pct else ()):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} is not installed")
        _install_handlers()
        self._closed = False
        _live_labs[self.prefix] = self
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() else None
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-", dir=base))
        _sh(["ip", "netns", "add", self.switch_ns])
        sw = ["ip", "-n", self.switch_ns]
        _sh([*sw, "link", "add", "br0", "type", "bridge"])
        _sh([*sw, "link", "set", "br0", "up"])
        _sh([*sw, "link", "set", "lo", "up"])
        ips = [host_ip(i) for i in range(self.n_hosts)]
        for i in range(self.n_hosts):
            rate = self.slow_hosts.get(i, self.rate_mbit)
            ns = f"{self.prefix}-h{i}"
            workdir = self.tmpdir / f"h{i}"
            workdir.mkdir()
            host = Host(i, f"h{i}", ns, ips[i], rate, rate, workdir)
            self.hosts.append(host)
            _sh(["ip", "netns", "add", ns])
            hn = ["ip", "-n", ns]
            _sh(["ip", "-n", ns, "link", "add", "eth0", "address", host_mac(i), "type", "veth",
                 "peer", "name", f"p{i}", "netns", self.switch_ns])
            _sh([*hn, "addr", "add", f"{ips[i]}/{SUBNET_PREFIXLEN}", "dev", "eth0"])
            _sh([*hn, "link", "set", "lo", "up"])
            _sh([*hn, "link", "set", "eth0", "up"])
            _sh([*sw, "link", "set", f"p{i}", "master", "br0"])
            _sh([*sw, "link", "set", f"p{i}", "up"])
            peers = [ip for j, ip in enumerate(ips) if j != i]
            _sh(["tc", "-n", ns, "-batch", "-"],
                shaping.shaping_batch(self.shaper, "eth0", rate, peers, "dst"))
            _sh(["tc", "-n", self.switch_ns, "-batch", "-"],
                shaping.shaping_batch(self.shaper, f"p{i}", rate, peers, "src"))
            if self.loss_pct:
                _sh(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                    shaping.loss_ruleset(self.loss_pct))
        macs = [(ip, host_mac(i)) for i, ip in enumerate(ips)]
        for host in self.hosts:
            _sh(["ip", "-n", host.netns, "-batch", "-"], neighbor_batch(macs, host.ip))

    def close(self) -> None:
        """Tear everything down. Idempotent; safe after a partial bring-up."""
        if self._closed:
            return
        errors: list[str] = []
        for proc in self._procs:
            with contextlib.suppress(Exception):
                stop_popen(proc)
        self._procs.clear()
        try:
            found = cleanup.find_leftovers(prefix=self.prefix)
            if self.tmpdir is not None and self.tmpdir not in found.tempdirs:
                found.tempdirs.append(self.tmpdir)
            errors = cleanup.remove(found)
        finally:
            self._closed = True
            _live_labs.pop(self.prefix, None)
        if errors:
            print(f"lab {self.prefix} teardown: " + "; ".join(errors), file=sys.stderr)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- running things in hosts -------------------------------------------
    def _argv(self, host: Host, argv: Sequence[str]) -> list[str]:
        if self._closed:
            raise LabError("the lab is not up")
        return ["ip", "netns", "exec", host.netns, *map(str, argv)]

    def spawn(self, host: Host, argv: Sequence[str], cpu_group: CpuGroup | None = None,
              **popen_kw: Any) -> subprocess.Popen[bytes]:
        """Start `argv` inside `host` in its own session; stopped at teardown.
        With `cpu_group`, the process joins that cgroup before it enters the
        namespace (``ip netns exec`` hides /sys/fs/cgroup)."""
        popen_kw.setdefault("stdin", subprocess.DEVNULL)
        full = self._argv(host, argv)
        if cpu_group is not None:
            full = cpu_group.enter_argv(full)
        proc: subprocess.Popen[bytes] = subprocess.Popen(
            full, start_new_session=True, **popen_kw
        )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 2.0) -> None:
        stop_popen(proc, grace_s)
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)

    def run(
        self, host: Host, argv: Sequence[str], timeout: float = 60, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in `host` to completion (killed, whole group, after `timeout`)."""
        proc = self.spawn(host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            raise LabError(f"timed out after {timeout}s: {' '.join(map(str, argv))}") from None
        finally:
            with contextlib.suppress(ValueError):
                self._procs.remove(proc)
        res = subprocess.CompletedProcess(
            list(map(str, argv)), proc.returncode, out.decode(errors="replace"),
            err.decode(errors="replace"),
        )
        if check and res.returncode != 0:
            raise LabError(f"{' '.join(res.args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def wait_listen(self, host: Host, port: int, timeout: float = 15) -> None:
        """Wait until something in `host` listens on TCP `port` (no connection made)."""
        code = (
            "import sys,time\n"
            f"end=time.monotonic()+{timeout}\n"
            "while time.monotonic()<end:\n"
            "    for f in ('/proc/net/tcp','/proc/net/tcp6'):\n"
            "        for line in open(f).readlines()[1:]:\n"
            "            p=line.split()\n"
            f"            if p[3]=='0A' and int(p[1].split(':')[1],16)=={port}: sys.exit(0)\n"
            "    time.sleep(0.05)\n"
            "sys.exit(1)\n"
        )
        r = self.run(host, [sys.executable, "-c", code], timeout=timeout + 10)
        if r.returncode != 0:
            raise LabError(f"nothing listens on port {port} in {host.name} after {timeout}s")

    @property
    def origin(self) -> Host:
        return self.hosts[0]

    @property
    def receivers(self) -> list[Host]:
        return self.hosts[1:]

    def nft_drop_count(self, host: Host) -> int:
        """Packets dropped so far by `host`'s loss rule (0 without one)."""
        if not self.loss_pct:
            return 0
        r = self.run(host, ["nft", "list", "table", "ip", shaping.NFT_TABLE], check=True)
        for line in r.stdout.splitlines():
            if "counter packets" in line:
                return int(line.split("counter packets")[1].split()[0])
        return 0

    def settle(self, seconds: float = 0.5) -> None:
        time.sleep(seconds)
