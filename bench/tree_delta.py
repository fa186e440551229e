"""Tree releases on a real SSH fleet: a full release, then the next one, against rsync.

    sudo python -m bench.tree_delta --hosts 16 --size-mib 256 --rate-mbit 100

One run, one fleet (tests/fleet: a network namespace and a real sshd per
host, every link htb-shaped to the rate both ways, the deploy host's too):

1. full: `roost deploy` of a ~2,000-file tree (a few large files, many
   small ones, symlinks, empty directories, an executable), timed from
   command start to exit, against the bound S·8/R;
2. next: the same tree with 5 % of its files' bytes rewritten, 20 files
   added, 20 removed and 10 renamed, deployed with `roost deploy` from the
   same build directory, brought up to date in place (as a build does);
3. rsync: every host gets a copy of the full release (host-local, no
   network), then parallel `rsync -a --delete` over SSH brings it to the
   next release, the strategy many teams use.

Bytes on the wire are read from the kernel's tc counters (`tc -s qdisc`,
root qdisc of each switch-side veth: what each host and the deploy host
received), not from roost. After each step every host's tree is compared
with the source (content, modes, symlinks, empty directories) over SSH.
The machine is shared: timings are noisy; compare ratios within one run.

Before/after: `--roost-src DIR` (repeatable) runs the full and next release
once per checkout on the same fleet, interleaved over `--rounds`, each
starting from empty hosts and an empty operator cache, so two versions are
measured back to back under the same load:

    git archive main | tar -x -C /tmp/before
    sudo python -m bench.tree_delta --roost-src /tmp/before --roost-src . --rounds 2

`--dest-fs xfs` puts each host's destination on XFS (reflink=1, a loop
device backed by a sparse file in /dev/shm) instead of tmpfs: reused files
are then placed by FICLONE, as on hosts whose releases live on XFS or btrfs,
instead of being copied byte for byte.

Each deploy's `timeline` (from `roost deploy --json`: the deploy's marks and,
per mark of the hosts, min/median/max, in seconds since the command's own
start) says where the wall time went.

Each deploy's `cpu` says what CPU it took, from two cgroup v2 groups under
`roost-bench-<pid>` (bench.lab.cgroup; counting only, no controller): the
operator side (`roost deploy` and everything it starts: tracker, origin, its
ssh clients) and the hosts (every sshd of the fleet, moved into the group as
soon as the fleet is up, so every session, agent and fetch it starts is
counted), user and system seconds each, read from cpu.stat before and after
the deploy. `busy` is their sum over (cores x the command's seconds),
`vs_bound` their sum over (cores x the bound), `floor_seconds` their sum over
the cores: no deploy on this machine can be faster while it needs that CPU.
`machine` is every process of the machine in that time (/proc/stat), other
users' work included. Without a writable cgroup v2 hierarchy this is said
and the figures are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.lab.cgroup import CpuGroup, read_cpu_stat, unified_root
from tests.fleet.fleet import Fleet, in_ns
from tests.fleet.helpers import ROOT, deploy_argv, local_tree_digest, remote_tree_digest, run_roost

MIB = 2**20


def make_tree(root: Path, size_mib: int, files: int, rng: random.Random) -> Path:
    """A few large files (75 % of the bytes), many small ones, links, empty dirs."""
    (root / "bin").mkdir(parents=True)
    (root / "var" / "cache" / "empty").mkdir(parents=True)
    (root / "logs").mkdir()
    big = size_mib * MIB * 3 // 4
    for i in range(6):
        (root / "lib").mkdir(exist_ok=True)
        (root / "lib" / f"blob{i}.so").write_bytes(os.urandom(big // 6))
    left = size_mib * MIB - big
    small = files - 6
    for i in range(small):
        d = root / "static" / f"d{i % 40:02d}"
        d.mkdir(parents=True, exist_ok=True)
        n = max(1, int(rng.expovariate(1 / (left / small))))
        (d / f"asset{i:04d}.js").write_bytes(os.urandom(min(n, 4 * MIB)))
    run = root / "bin" / "server"
    run.write_text("#!/bin/sh\necho serving\n")
    run.chmod(0o755)
    os.symlink("bin/server", root / "run")
    os.symlink("../lib", root / "bin" / "lib")
    return root


def next_release(src: Path, dst: Path, rng: random.Random) -> dict[str, int]:
    """5 % of the bytes rewritten, 20 added, 20 removed, 10 renamed."""
    shutil.copytree(src, dst, symlinks=True)
    small = sorted(p for p in (dst / "static").rglob("*.js"))
    rng.shuffle(small)
    total = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file() and not p.is_symlink())
    changed = 0
    picked = 0
    for p in small[:]:
        if changed >= total * 0.05:
            break
        n = p.stat().st_size
        if n > 2 * MIB:
            continue
        old = p.stat()
        p.write_bytes(os.urandom(n))
        # a later build writes later: rsync's quick check (size + mtime) would
        # otherwise skip a same-size file rewritten within the same second
        os.utime(p, ns=(old.st_atime_ns, old.st_mtime_ns + 60 * 10**9))
        changed += n
        picked += 1
        small.remove(p)
    for p in small[:20]:
        p.unlink()
    for i, p in enumerate(small[20:30]):
        p.rename(p.with_name(f"renamed{i}-{p.name}"))
    for i in range(20):
        (dst / "static" / "d00" / f"new{i:02d}.js").write_bytes(os.urandom(32 * 1024))
    return {"changed_bytes": changed, "changed_files": picked, "total_bytes": total}


def wire_bytes(fleet: Fleet) -> int:
    """Bytes the switch sent to every host and to the deploy host (tc root qdisc)."""
    total = 0
    devs = [f"v{i}" for i in range(fleet.n)] + ["up0"]
    for dev in devs:
        out = in_ns(fleet.switch_ns, "tc", "-s", "-j", "qdisc", "show", "dev", dev)
        for q in json.loads(out):
            if q.get("root"):
                total += int(q.get("bytes", 0))
    return total


class CpuBudget:
    """CPU of the operator side and of the hosts, each in a cgroup of its own.

    `roost-bench-<pid>/operator` holds each `roost deploy` (it joins before it
    execs, so its tracker, origin and ssh clients are born in it);
    `roost-bench-<pid>/hosts` holds every host's sshd (moved in by `add_fleet`
    before any session), so everything the hosts run for a deploy is in it.
    The kernel keeps the CPU of exited members in the group's cpu.stat."""

    def __init__(self) -> None:
        root = unified_root()
        if root is None:
            raise OSError("no writable cgroup v2 hierarchy under /sys/fs/cgroup")
        self.parent = root / f"roost-bench-{os.getpid()}"
        self.parent.mkdir()
        self.groups: dict[str, CpuGroup] = {}
        try:
            for side in ("operator", "hosts"):
                self.groups[side] = CpuGroup(f"{self.parent.name}/{side}")
            for group in self.groups.values():
                if "user_usec" not in read_cpu_stat(group.path):
                    raise OSError(f"{group.path}/cpu.stat has no user_usec")
        except BaseException:
            self.close()
            raise

    def add_fleet(self, fleet: Fleet) -> None:
        """Every host's sshd into `hosts`; refused if a host runs anything else yet."""
        for i, host in enumerate(fleet.hosts):
            others = [p for p in fleet.pids(i) if p != host.sshd_pid]
            if host.sshd_pid is None or others:
                raise OSError(f"host {host.name}: sshd {host.sshd_pid}, others {others}")
            (self.groups["hosts"].path / "cgroup.procs").write_text(str(host.sshd_pid))

    def wrap(self, argv: list[str]) -> list[str]:
        return self.groups["operator"].enter_argv(argv)

    def sample(self) -> dict[str, tuple[float, float]]:
        """Per side, (user, system) CPU seconds so far; `machine`: all of it (/proc/stat)."""
        out = {side: g.user_system_s() for side, g in self.groups.items()}
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        # user nice system idle iowait irq softirq (steal...): busy = user nice system irq softirq
        out["machine"] = ((cpu[0] + cpu[1]) / ticks, (cpu[2] + cpu[5] + cpu[6]) / ticks)
        return out

    @staticmethod
    def figures(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]],
                seconds: float, bound: float) -> dict[str, Any]:
        cores = os.cpu_count() or 1
        out: dict[str, Any] = {"cores": cores}
        for side in ("operator", "hosts", "machine"):
            user = after[side][0] - before[side][0]
            system = after[side][1] - before[side][1]
            out[side] = {"user": round(user, 2), "system": round(system, 2),
                         "total": round(user + system, 2)}
        tool = out["operator"]["total"] + out["hosts"]["total"]
        out["total"] = round(tool, 2)
        out["busy"] = round(tool / (cores * seconds), 3)
        out["vs_bound"] = round(tool / (cores * bound), 3)
        out["floor_seconds"] = round(tool / cores, 2)
        out["machine_busy"] = round(out["machine"]["total"] / (cores * seconds), 3)
        return out

    def close(self) -> None:
        """Kill what is left in the groups (only the bench's processes) and remove them."""
        for group in self.groups.values():
            group.close()
        for _ in range(100):
            try:
                self.parent.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)


def check_trees(fleet: Fleet, path: str, src: Path) -> bool:
    want = local_tree_digest(src)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: remote_tree_digest(fleet, i, path), range(fleet.n)))
    return all(g == want for g in got)


def deploy(fleet: Fleet, src: Path, tag: str, rate: float, extra: list[str],
           roost_src: Path | None = None, cache: Path | None = None,
           budget: CpuBudget | None = None
           ) -> tuple[float, int, dict[str, Any], dict[str, Any]]:
    """Seconds, wire bytes, the deploy's report and its CPU (before, after samples)."""
    argv = deploy_argv(
        fleet, src, [h.address for h in fleet.hosts], "--tag", tag,
        "--link-rate", f"{rate:g}mbit", "--timeout", "1800", "--connect-timeout", "30",
        *extra)
    before = wire_bytes(fleet)
    cpu: dict[str, Any] = {}
    if budget is not None:
        argv = budget.wrap(argv)
        cpu["before"] = budget.sample()
    started = time.monotonic()
    code, report, err = run_roost(argv, timeout=2400, src=roost_src,
                                  env={"XDG_CACHE_HOME": str(cache)} if cache is not None
                                  else None)
    seconds = time.monotonic() - started
    if budget is not None:
        cpu["after"] = budget.sample()
    if code != 0:
        failed = [(h["host"], h["kind"], h["reason"]) for h in report.get("hosts", [])
                  if h.get("status") == "failed"]
        raise SystemExit(f"deploy {tag} failed (exit {code}): {report.get('message')}\n"
                         f"{failed}\n{err[-2000:]}")
    return seconds, wire_bytes(fleet) - before, report, cpu


def timeline(report: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The deploy's marks, and each host mark's min/median/max over the hosts
    (seconds since the deploy's start); `process` is the command's whole wall time."""
    out: dict[str, Any] = {"process": round(seconds, 2), "deploy": report.get("timeline")}
    marks: dict[str, list[float]] = {}
    for row in report.get("hosts", []):
        for name, t in (row.get("timeline") or {}).items():
            marks.setdefault(name, []).append(t)
    out["hosts"] = {name: [round(min(v), 2), round(statistics.median(v), 2), round(max(v), 2)]
                    for name, v in sorted(marks.items(), key=lambda kv: statistics.median(kv[1]))}
    return out


def wipe(fleet: Fleet) -> None:
    """Every host back to an empty destination (releases, records, locks)."""
    for i in range(fleet.n):
        fleet.ssh(i, f"rm -rf {fleet.dest}/* {fleet.dest}/.[!.]*", timeout=120)


def releases(fleet: Fleet, work: Path, v1: Path, v2: Path, rate: float, extra: list[str],
             roost_src: Path | None, cache: Path | None, budget: CpuBudget | None = None
             ) -> dict[str, Any]:
    """The full release, then the next, from empty hosts; checked on every host.

    Both are deployed from one build directory, as an operator deploys a build
    output: a fresh copy of v1 (new files, as a clean build makes), then brought
    to v2 in place by `rsync -a --delete` (changed, added and renamed files are
    written, unchanged ones left alone, as an incremental build does)."""
    build = work / "build"
    shutil.rmtree(build, ignore_errors=True)
    subprocess.run(["cp", "-a", f"{v1}/.", str(build)], check=True, timeout=600)
    copied = time.monotonic()
    wipe(fleet)
    # a build finished seconds ago: past the hash cache's racy window (3 s), as a
    # real build usually is by the time its deploy reads it
    time.sleep(max(0.0, 4.0 - (time.monotonic() - copied)))
    seconds, wire, report, cpu = deploy(fleet, build, "v1", rate, extra, roost_src, cache,
                                        budget)
    size = report["payload"]["size"]
    bound = size * 8 / (rate * 1e6)
    full = {"seconds": round(seconds, 2), "wire_bytes": wire, "size": size,
            "padding": report["payload"].get("padding"),
            "bound_seconds": round(bound, 2),
            "efficiency": round(bound / seconds, 3),
            "timings": report["timings"], "bytes": report["bytes"],
            "timeline": timeline(report, seconds),
            "identical": check_trees(fleet, f"{fleet.dest}/current", v1)}
    if cpu:
        full["cpu"] = CpuBudget.figures(cpu["before"], cpu["after"], seconds, bound)
    subprocess.run(["rsync", "-a", "--delete", f"{v2}/", f"{build}/"], check=True, timeout=600)
    seconds2, wire2, report2, cpu2 = deploy(fleet, build, "v2", rate, extra, roost_src, cache,
                                            budget)
    nxt = {"seconds": round(seconds2, 2), "wire_bytes": wire2,
           "timings": report2["timings"], "bytes": report2["bytes"],
           "timeline": timeline(report2, seconds2),
           # kept files a host hashed afresh / refused (an older roost reports neither)
           "files_rehashed": sum(h.get("files_rehashed") or 0 for h in report2["hosts"]),
           "files_refused": sum(h.get("files_refused") or 0 for h in report2["hosts"]),
           "wire_vs_full": round(wire2 / wire, 3),
           "time_vs_full": round(seconds2 / seconds, 3),
           "identical": check_trees(fleet, f"{fleet.dest}/current", v2)}
    if cpu2:
        nxt["cpu"] = CpuBudget.figures(cpu2["before"], cpu2["after"], seconds2, bound)
    return {"src": str(roost_src or ROOT), "full": full, "next": nxt}


def rsync_all(fleet: Fleet, src: Path, target: str) -> float:
    ssh = (f"ssh -i {fleet.key} -o UserKnownHostsFile={fleet.known_hosts} "
           "-o StrictHostKeyChecking=yes -o BatchMode=yes")

    def one(i: int) -> int:
        return subprocess.run(["rsync", "-a", "--delete", "-e", ssh, f"{src}/",
                               f"root@{fleet.hosts[i].address}:{target}/"],
                              capture_output=True, timeout=3600).returncode

    started = time.monotonic()
    with ThreadPoolExecutor(fleet.n) as pool:
        codes = list(pool.map(one, range(fleet.n)))
    if any(codes):
        raise SystemExit(f"rsync failed: {codes}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rate-mbit", type=float, default=100)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--no-rsync", action="store_true")
    parser.add_argument("--extra", default="", help="more `roost deploy` flags")
    parser.add_argument("--roost-src", type=Path, action="append", default=[],
                        help="a roost checkout to measure (repeatable: interleaved, "
                        "back to back); default this one")
    parser.add_argument("--rounds", type=int, default=1, help="full + next per checkout")
    parser.add_argument("--dest-fs", choices=("tmpfs", "xfs"), default="tmpfs",
                        help="each host's destination: tmpfs (a reused file is a full "
                        "copy) or XFS with reflink=1 on a loop device backed by /dev/shm "
                        "(a reused file is a reflink, as on XFS or btrfs hosts; needs "
                        "mkfs.xfs, and at least 300 MiB: --size-mib 22 or more)")
    ns = parser.parse_args()
    rng = random.Random(ns.seed)
    work = Path(tempfile.mkdtemp(prefix="roost-tree-delta-", dir="/var/tmp"))
    out: dict[str, Any] = {"hosts": ns.hosts, "rate_mbit": ns.rate_mbit, "dest_fs": ns.dest_fs,
                           "load_before": os.getloadavg()}
    srcs: list[Path | None] = [p.resolve() for p in ns.roost_src] or [None]
    runs: list[dict[str, Any]] = []
    budget: CpuBudget | None = None
    try:
        budget = CpuBudget()
    except OSError as e:
        print(f"no CPU figures (cgroup v2 unavailable: {e})", file=sys.stderr, flush=True)
        out["cpu_unavailable"] = str(e)
    try:
        v1 = make_tree(work / "v1", ns.size_mib, ns.files, rng)
        v2 = work / "v2"
        out["change"] = next_release(v1, v2, rng)
        with Fleet(ns.hosts, dest_size=f"{ns.size_mib * 2 + 256}m",
                   dest_fs=ns.dest_fs) as fleet:
            fleet.shape(ns.rate_mbit)
            if budget is not None:
                budget.add_fleet(fleet)
            extra = ns.extra.split()
            out["runs"] = runs  # printed even when a later step fails (see finally)
            for _ in range(ns.rounds):
                for src in srcs:
                    wipe(fleet)
                    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
                    runs.append(releases(fleet, work, v1, v2, ns.rate_mbit, extra, src, cache,
                                         budget))
                    shutil.rmtree(cache, ignore_errors=True)
                    print(json.dumps({k: runs[-1][k] for k in ("src",)} | {
                        r: {k: runs[-1][r][k] for k in ("seconds", "wire_bytes", "identical")}
                        for r in ("full", "next")}), file=sys.stderr, flush=True)
            out["runs"] = runs
            if not ns.no_rsync:
                target = f"{fleet.dest}/rsync"
                for i in range(fleet.n):  # the full release, copied on the host itself
                    fleet.ssh(i, f"rm -rf {target} {fleet.dest}/releases/v2 && "
                                 f"cp -a {fleet.dest}/releases/v1 {target}",
                              timeout=300)
                before = wire_bytes(fleet)
                rsync_s = rsync_all(fleet, v2, target)
                out["rsync"] = {"seconds": round(rsync_s, 2),
                                "wire_bytes": wire_bytes(fleet) - before,
                                "identical": check_trees(fleet, target, v2)}
                for run in runs:
                    run["next"]["time_vs_rsync"] = round(run["next"]["seconds"] / rsync_s, 3)
                if not out["rsync"]["identical"]:  # say what differs on host 0
                    ssh = (f"ssh -i {fleet.key} -o UserKnownHostsFile={fleet.known_hosts}")
                    diff = subprocess.run(
                        ["rsync", "-n", "-aci", "--delete", "-e", ssh, f"{v2}/",
                         f"root@{fleet.hosts[0].address}:{target}/"],
                        capture_output=True, text=True, timeout=300)
                    out["rsync"]["differs"] = diff.stdout.splitlines()[:20]
    finally:
        # what was measured is kept when a later step fails (an ssh timeout under load,
        # a host's rsync error): the runs done so far, and what failed
        failed = sys.exc_info()[1]
        if failed is not None:
            out["failed"] = f"{type(failed).__name__}: {str(failed)[:300]}"
        out["load_after"] = os.getloadavg()
        if budget is not None:
            budget.close()
        print(json.dumps(out, indent=1))
        print(table(runs), file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


def table(runs: list[dict[str, Any]]) -> str:
    """One line per deploy: seconds, efficiency, and the CPU each side used
    (`bound` and `vs bound` are the full release's bound, for both lines)."""
    lines = ["release  seconds  bound  eff.   operator u+s   hosts u+s       CPU  busy  "
             "vs bound  floor s  machine busy"]
    for run in runs:
        bound = run["full"]["bound_seconds"]
        for name in ("full", "next"):
            r = run[name]
            eff = f"{bound / r['seconds']:5.3f}" if name == "full" else "    -"
            line = f"{name:7}  {r['seconds']:7.2f}  {bound:5.1f}  {eff}"
            c = r.get("cpu")
            if c:
                op, ho = c["operator"], c["hosts"]
                line += (f"  {op['user']:6.1f}+{op['system']:5.1f}  {ho['user']:6.1f}+"
                         f"{ho['system']:5.1f}  {c['total']:6.1f}  {c['busy']:4.2f}  "
                         f"{c['vs_bound']:8.2f}  {c['floor_seconds']:7.1f}  "
                         f"{c['machine_busy']:12.2f}")
            lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
