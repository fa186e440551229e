"""A fleet of SSH hosts in network namespaces, for end-to-end deploy tests (root).

Layout of one run (`tag` is unique per run, e.g. "rf3a9c"):

    netns <tag>-sw     a bridge br0 joining every link
    netns <tag>-h<i>   host i: eth0 = 10.78.<k>.<10+i>/24, a real
                       `/usr/sbin/sshd -D` inside `unshare --mount`, with tmpfs
                       mounts on the destination, /tmp and /root, so hosts share
                       no files a real fleet would not share
    root ns <tag>-r    10.78.<k>.1/24, a veth into the bridge: the deploy
                       process (tracker, origin) runs in the root namespace

`k` is picked so no interface on the machine already uses 10.78.<k>.0/24.
The hosts' python3 is /usr/bin/python3, which cannot import roost: it must
be pushed as a zipapp. Teardown kills every process left in the run's
namespaces by pid (`ip netns pids`), deletes the namespaces (which removes
the veths and, with the last process, the tmpfs mounts) and the run dir.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
DEPLOY_USER = "deployer"  # a non-root login with passwordless sudo (Fleet(users=True))
APP_USER = "appowner"  # owns the application's destination
BASE = Path("/var/tmp")  # not /tmp: hosts get a private tmpfs on /tmp
START_TIMEOUT = 20.0
#: fleets started and not yet stopped, by id: the session's last teardown stops them all
LIVE: dict[int, Fleet] = {}


def sh(*args: str, input: str | None = None, check: bool = True) -> str:
    result = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def in_ns(ns: str, *args: str, check: bool = True, input: str | None = None) -> str:
    return sh("ip", "netns", "exec", ns, *args, check=check, input=input)


@dataclass
class Host:
    name: str
    ns: str
    address: str
    dest_size: str
    address6: str = ""
    proc: subprocess.Popen[bytes] | None = None
    rate_mbit: float | None = None

    @property
    def sshd_pid(self) -> int | None:
        return self.proc.pid if self.proc else None


@dataclass
class Fleet:
    n: int
    dest_size: str = "256m"
    sizes: dict[int, str] = field(default_factory=dict)  # host index -> tmpfs size
    tag: str = field(default_factory=lambda: f"rf{random.getrandbits(16):04x}")
    hosts: list[Host] = field(default_factory=list)
    subnet: int = 0
    run_dir: Path = Path()
    started: bool = False
    users: bool = False  # add DEPLOY_USER (passwordless sudo) and APP_USER on every host
    log_level: str = "ERROR"  # sshd's; VERBOSE logs each connection and each command
    # the destination's filesystem: "tmpfs", or "xfs" (reflink=1, as mkfs.xfs makes it
    # by default, in an image file in /dev/shm mounted by loop device in the host's
    # mount namespace): where a reused file is placed by FICLONE, as on real hosts
    dest_fs: str = "tmpfs"

    # --- naming ---------------------------------------------------------------------

    @property
    def switch_ns(self) -> str:
        return f"{self.tag}-sw"

    @property
    def gateway(self) -> str:
        return f"10.78.{self.subnet}.1"

    @property
    def gateway6(self) -> str:
        return f"fd78:{self.subnet:x}::1"

    @property
    def dest(self) -> Path:
        return self.run_dir / "dest"

    @property
    def key(self) -> Path:
        return self.run_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.run_dir / "known_hosts"

    def unused_address6(self) -> str:
        return f"fd78:{self.subnet:x}::fa"

    def unused_address(self) -> str:
        """An address in the fleet's subnet where nothing answers."""
        return f"10.78.{self.subnet}.250"

    # --- setup -----------------------------------------------------------------------

    def start(self) -> Fleet:
        self.started = True
        LIVE[id(self)] = self
        self.subnet = _free_subnet()
        self.run_dir = BASE / f"roost-fleet-{self.tag}"
        self.run_dir.mkdir(mode=0o711 if self.users else 0o700)  # users' sshd reads keys here
        self.dest.mkdir()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privsep dir
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.run_dir / "hostkey"))
        shutil.copy(self.key.with_suffix(".pub"), self.run_dir / "authorized_keys")
        (self.run_dir / "authorized_keys").chmod(0o644)
        if self.users:
            self._write_user_db()
        self._make_switch()
        for i in range(self.n):
            self._make_host(i)
        hostkey = (self.run_dir / "hostkey.pub").read_text().split()
        self.known_hosts.write_text(
            "".join(f"{a} {hostkey[0]} {hostkey[1]}\n"
                    for h in self.hosts for a in (h.address, h.address6)))
        self._wait_ready()
        return self

    def _make_switch(self) -> None:
        ns = self.switch_ns
        sh("ip", "netns", "add", ns)
        in_ns(ns, "ip", "link", "set", "lo", "up")
        in_ns(ns, "ip", "link", "add", "br0", "type", "bridge")
        in_ns(ns, "ip", "link", "set", "br0", "up")
        root_if = f"{self.tag}-r"
        sh("ip", "link", "add", root_if, "type", "veth", "peer", "name", "up0", "netns", ns)
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", root_if)
        sh("ip", "-6", "addr", "add", f"{self.gateway6}/64", "dev", root_if, "nodad")
        sh("ip", "link", "set", root_if, "up")
        in_ns(ns, "ip", "link", "set", "up0", "master", "br0", "up")

    def _make_host(self, i: int) -> None:
        ns = f"{self.tag}-h{i}"
        address = f"10.78.{self.subnet}.{10 + i}"
        host = Host(f"h{i}", ns, address, self.sizes.get(i, self.dest_size),
                    f"fd78:{self.subnet:x}::{10 + i:x}")
        self.hosts.append(host)
        sh("ip", "netns", "add", ns)
        in_ns(ns, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth",
           "peer", "name", f"v{i}", "netns", self.switch_ns)
        in_ns(ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        in_ns(ns, "ip", "-6", "addr", "add", f"{host.address6}/64", "dev", "eth0", "nodad")
        in_ns(ns, "ip", "link", "set", "eth0", "up")
        in_ns(self.switch_ns, "ip", "link", "set", f"v{i}", "master", "br0", "up")
        self._start_sshd(host)

    def _start_sshd(self, host: Host) -> None:
        config = self.run_dir / f"sshd-{host.name}.conf"
        config.write_text("\n".join([
            f"ListenAddress {host.address}", f"ListenAddress {host.address6}", "Port 22",
            f"HostKey {self.run_dir / 'hostkey'}",
            f"AuthorizedKeysFile {self.run_dir / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "PidFile none", f"LogLevel {self.log_level}", "MaxStartups 200", "MaxSessions 100",
            "UseDNS no", "",
        ]))
        # mounts are private to this host's mount namespace: dest, /tmp and
        # /root (so ~/.cache, where the zipapp is cached, is per host)
        if self.dest_fs == "xfs":
            image = self._dest_image(host)
            with image.open("wb") as f:  # sparse: memory is used only as blocks are written
                f.truncate(_size_bytes(host.dest_size))
            sh("mkfs.xfs", "-q", "-m", "reflink=1", str(image))
            mount_dest = (f"mount -o loop {shlex.quote(str(image))} {self.dest} && "
                          f"chmod 0755 {self.dest} && ")
        elif self.dest_fs == "tmpfs":
            mount_dest = (f"mount -t tmpfs -o size={host.dest_size},mode=0755 roost-dest "
                          f"{self.dest} && ")
        else:
            raise ValueError(f"dest_fs must be tmpfs or xfs, not {self.dest_fs!r}")
        script = (
            "mount --make-rprivate / && "
            + mount_dest +
            "mount -t tmpfs -o size=64m,mode=1777 roost-tmp /tmp && "
            "mount -t tmpfs -o size=64m,mode=0700 roost-home /root && "
            + (self._user_mounts() if self.users else "")
            + f"exec {SSHD} -D -e -f {config}"
        )
        log = (self.run_dir / f"sshd-{host.name}.log").open("wb")
        host.proc = subprocess.Popen(
            ["ip", "netns", "exec", host.ns, "unshare", "--mount", "sh", "-c", script],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def _dest_image(self, host: Host) -> Path:
        return Path("/dev/shm") / f"roost-fleet-{self.tag}-{host.name}.xfs"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(self.hosts)
        while pending and time.monotonic() < deadline:
            pending = [h for h in pending if not self._listening(h)]
            for h in pending:
                if h.proc and h.proc.poll() is not None:
                    log = (self.run_dir / f"sshd-{h.name}.log").read_text()
                    raise RuntimeError(f"sshd on {h.name} exited: {log.strip()}")
            if pending:
                time.sleep(0.1)
        if pending:
            raise RuntimeError(f"sshd did not start on {[h.name for h in pending]}")

    def _listening(self, host: Host) -> bool:
        out = in_ns(host.ns, "ss", "-Htln", check=False)
        return f"{host.address}:22" in out and f"[{host.address6}]:22" in out

    # --- shaping, faults ---------------------------------------------------------------

    def shape(self, rate_mbit: float, hosts: list[int] | None = None, origin: bool = True,
              origin_mbit: float | None = None) -> None:
        """Cap each host link (both directions) and the deploy host's link at `rate_mbit`
        (the deploy host's at `origin_mbit` when given: a narrow operator uplink)."""
        from bench.lab.shaping import shaping_batch

        peers = [h.address for h in self.hosts] + [self.gateway]
        for i in hosts if hosts is not None else range(self.n):
            host = self.hosts[i]
            host.rate_mbit = rate_mbit
            others = [p for p in peers if p != host.address]
            in_ns(host.ns, "tc", "-batch", "-",
                  input=shaping_batch("htb", "eth0", rate_mbit, others, "dst"))
            in_ns(self.switch_ns, "tc", "-batch", "-",
                  input=shaping_batch("htb", f"v{i}", rate_mbit, others, "src"))
        if origin:
            others = [h.address for h in self.hosts]
            rate = origin_mbit or rate_mbit
            sh("tc", "-batch", "-",
               input=shaping_batch("htb", f"{self.tag}-r", rate, others, "dst"))
            in_ns(self.switch_ns, "tc", "-batch", "-",
                  input=shaping_batch("htb", "up0", rate, others, "src"))

    def unshape(self, hosts: list[int]) -> None:
        for i in hosts:
            in_ns(self.hosts[i].ns, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
            in_ns(self.switch_ns, "tc", "qdisc", "del", "dev", f"v{i}", "root", check=False)
            self.hosts[i].rate_mbit = None

    def tx_bytes(self, i: int | None = None) -> int:
        """Bytes sent so far on host i's link (None: the deploy host's), as the kernel
        counts them: independent of what roost reports."""
        if i is None:
            return int(Path(f"/sys/class/net/{self.tag}-r/statistics/tx_bytes").read_text())
        return int(in_ns(self.hosts[i].ns, "cat", "/sys/class/net/eth0/statistics/tx_bytes"))

    def put(self, i: int, path: str, data: bytes) -> None:
        """Write `data` to `path` on host i (OpenSSH, not roost)."""
        folder, target = shlex.quote(os.path.dirname(path)), shlex.quote(path)
        subprocess.run(self.ssh_argv(i, f"mkdir -p -- {folder} && cat > {target}"),
                       input=data, check=True, capture_output=True, timeout=60)

    def pids(self, i: int) -> list[int]:
        out = sh("ip", "netns", "pids", self.hosts[i].ns, check=False)
        return [int(p) for p in out.split()]

    def extra_pids(self, i: int) -> list[int]:
        """Processes in host i other than its sshd listener (what a deploy left)."""
        return [p for p in self.pids(i) if p != self.hosts[i].sshd_pid]

    def leftover_pids(self, i: int, grace: float = 5.0) -> list[int]:
        """extra_pids, once they had `grace` seconds to go: a process told to stop, and
        the sshd child serving the test's own last `ssh` command, exit a moment later."""
        deadline = time.monotonic() + grace
        while (left := self.extra_pids(i)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left

    def fetching(self, i: int) -> bool:
        """A `roost fetch` runs on host i (not merely the deploy's lock holder)."""
        for pid in self.extra_pids(i):
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"fetch" in argv and any(a.endswith(b".pyz") for a in argv):
                    return True
        return False

    def kill_host(self, i: int) -> None:
        """The host dies: every process in it is killed and its link goes down."""
        in_ns(self.switch_ns, "ip", "link", "set", f"v{i}", "down", check=False)
        for pid in self.pids(i):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def ssh_argv(self, i: int, command: str, user: str = "root") -> list[str]:
        return ["ssh", "-i", str(self.key), "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=5", f"{user}@{self.hosts[i].address}", command]

    def ssh(self, i: int, command: str, timeout: float = 30, user: str = "root"
            ) -> subprocess.CompletedProcess[str]:
        """Run a command on host i with the OpenSSH client (independent of roost)."""
        return subprocess.run(self.ssh_argv(i, command, user), capture_output=True, text=True,
                              timeout=timeout)

    # --- users and firewalls -----------------------------------------------------------

    def _write_user_db(self) -> None:
        """Copies of passwd/group/shadow/sudoers with the test users, bind-mounted over
        /etc inside each host's mount namespace only: the machine's own files stay as
        they are."""
        extra = {DEPLOY_USER: 4242, APP_USER: 4243}
        passwd = Path("/etc/passwd").read_text() + "".join(
            f"{u}:x:{uid}:{uid}::/home/{u}:/bin/sh\n" for u, uid in extra.items())
        group = Path("/etc/group").read_text() + "".join(
            f"{u}:x:{uid}:\n" for u, uid in extra.items())
        shadow = Path("/etc/shadow").read_text() + "".join(
            f"{u}:*:19000:0:99999:7:::\n" for u in extra)
        sudoers = (f"Defaults env_reset\nroot ALL=(ALL:ALL) ALL\n"
                   f"{DEPLOY_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n")
        for name, text, mode in (("passwd", passwd, 0o644), ("group", group, 0o644),
                                 ("shadow", shadow, 0o640), ("sudoers", sudoers, 0o440)):
            path = self.run_dir / f"etc-{name}"
            path.write_text(text)
            path.chmod(mode)

    def _user_mounts(self) -> str:
        binds = "".join(f"mount --bind {self.run_dir}/etc-{n} /etc/{n} && "
                        for n in ("passwd", "group", "shadow", "sudoers"))
        homes = " && ".join(f"mkdir -m 0750 /home/{u} && chown {u}:{u} /home/{u}"
                            for u in (DEPLOY_USER, APP_USER))
        return f"{binds}mount -t tmpfs -o size=64m,mode=0755 roost-homes /home && {homes} && "

    def block(self, i: int, ports: str, source: str | None = None) -> None:
        """Drop TCP to `ports` (e.g. "22" or "6881-6999") on host i from `source`
        (default: the deploy host), with nftables inside the host's namespace."""
        src = source or self.gateway
        rules = ("table inet rooststest {\n chain input {\n"
                 "  type filter hook input priority 0; policy accept;\n"
                 f"  ip saddr {src} tcp dport {{ {ports} }} drop\n }}\n}}\n")
        in_ns(self.hosts[i].ns, "nft", "-f", "-", input=rules)

    def unblock(self, i: int) -> None:
        in_ns(self.hosts[i].ns, "nft", "delete", "table", "inet", "rooststest", check=False)

    # --- teardown ----------------------------------------------------------------------

    def stop(self) -> None:
        if not self.started:
            return
        if self.run_dir == Path():
            # start() failed before it made its run dir: never rmtree(".") below
            self.run_dir = BASE / f"roost-fleet-{self.tag}"
        for host in self.hosts:
            for pid in self.pids(self.hosts.index(host)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if host.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    host.proc.wait(timeout=5)
        for host in self.hosts:
            sh("ip", "netns", "del", host.ns, check=False)
        sh("ip", "netns", "del", self.switch_ns, check=False)
        sh("ip", "link", "del", f"{self.tag}-r", check=False)
        for host in self.hosts:  # the loop mount went with the namespace's last process
            self._dest_image(host).unlink(missing_ok=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.started = False
        LIVE.pop(id(self), None)

    def __enter__(self) -> Fleet:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _size_bytes(text: str) -> int:
    """A tmpfs-style size ("768m", "2g", "1048576") in bytes."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    unit = units.get(text[-1:].lower(), 1)
    return int(text[:-1] if unit != 1 else text) * unit


def _free_subnet() -> int:
    used = sh("ip", "-4", "-o", "addr", "show")
    routes = sh("ip", "-4", "route", "show")
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    for k in candidates:
        if f"10.78.{k}." not in used and f"10.78.{k}." not in routes:
            return k
    raise RuntimeError("no free 10.78.<k>.0/24 subnet")
