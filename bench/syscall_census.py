"""Syscall census of a lab receiver: attach perf to one host's fetch process.

Run as root beside a `bench.efficiency` run (started first, in the background):

    python -m bench.efficiency --n 32 ... --tools roost --no-selfcheck & B=$!
    python -m bench.syscall_census --bench-pid $B --hosts h5,h20 --tool roost --out DIR

It waits for the lab of that bench process (namespaces ``rl<B>x<k>-h<i>``) to
start the tool's receiver on each host given, then attaches to it, for the
process's whole life (the receivers run until the run's end):

* ``perf trace -s`` : calls, errors and time per syscall and thread;
* ``perf record`` of the exits of the read/write family (their return values:
  bytes per call);
* ``perf record -g`` at ``--freq`` Hz: user and kernel call stacks;
* the host namespace's eth0 byte counters and the process's CPU ticks, sampled
  every 0.5 s (the last sample stands for the total).

Then ``--summarize DIR`` prints per host, per GiB received: calls per
syscall, bytes per call of the read/write family, and (with ``prof``) the CPU
seconds by place: the user library, or the syscall or interrupt under which
the kernel ran (the process's CPU from /proc times each place's share of the
samples; aria2c's completion hook, a child, left out).
Nothing is signalled: perf ends when the process it watches ends.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from bench.lab.procs import NETNS_DIR, pids_in_netns

IO_CALLS = ["read", "recvfrom", "recvmsg", "readv", "write", "writev", "sendto",
            "sendmsg", "sendfile64", "pwrite64", "pwritev", "pread64", "preadv"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _is_receiver(pid: int, tool: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    words = [a.decode(errors="replace") for a in argv if a]
    if tool == "aria2c":
        return bool(words) and words[0].endswith("aria2c")
    # roost: the `roost fetch` process, not its roost_peer.py wrapper
    return "roost" in words and "fetch" in words and not any(
        w.endswith("roost_peer.py") for w in words)


def _netns_of(bench_pid: int, host: str) -> str | None:
    pat = re.compile(rf"^rl{bench_pid}x\d+-{re.escape(host)}$")
    for p in NETNS_DIR.glob(f"rl{bench_pid}x*-{host}"):
        if pat.match(p.name):
            return p.name
    return None


def _sample(pid: int) -> dict[str, float] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        dev = Path(f"/proc/{pid}/net/dev").read_text()
    except OSError:
        return None
    out = {"utime_s": int(stat[11]) / CLK_TCK, "stime_s": int(stat[12]) / CLK_TCK}
    for line in dev.splitlines():
        if line.strip().startswith("eth0:"):
            f = line.split(":", 1)[1].split()
            out["rx_bytes"] = int(f[0])
            out["tx_bytes"] = int(f[8])
    return out


def watch(a: argparse.Namespace) -> int:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / a.tool).write_text("")  # which tool: the summary leaves aria2c's hook out
    hosts = a.hosts.split(",")
    attached: dict[str, tuple[int, list[subprocess.Popen[bytes]]]] = {}
    last: dict[str, dict[str, float]] = {}
    first: dict[str, dict[str, float]] = {}
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        for h in hosts:
            if h in attached:
                continue
            ns = _netns_of(a.bench_pid, h)
            if ns is None:
                continue
            for pid in pids_in_netns([ns]):
                if _is_receiver(pid, a.tool):
                    base = str(out / h)
                    exits = ",".join(f"syscalls:sys_exit_{c}" for c in IO_CALLS)
                    argvs = {
                        "trace": ["perf", "trace", "-s", "-p", str(pid), "-o", base + ".trace.txt"],
                        "io": ["perf", "record", "-q", "-e", exits, "-p", str(pid),
                               "-o", base + ".io.data"],
                        "prof": ["perf", "record", "-q", "-g", "-F", str(a.freq), "-p", str(pid),
                                 "-o", base + ".prof.data"],
                    }
                    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL)
                             for what, argv in argvs.items() if what in a.what]
                    attached[h] = (pid, procs)
                    first[h] = _sample(pid) or {}
                    (out / f"{h}.pid").write_text(f"{pid}\n")
                    print(f"attached {h} pid {pid}", flush=True)
                    break
        for h, (pid, _) in attached.items():
            s = _sample(pid)
            if s is not None:
                last[h] = s
        (out / "samples.json").write_text(json.dumps(
            {h: {k: v - first.get(h, {}).get(k, 0) for k, v in s.items()}
             for h, s in last.items()}))
        if len(attached) == len(hosts) and all(
                p.poll() is not None for _, ps in attached.values() for p in ps):
            return 0
        time.sleep(0.5)
    print("timeout", file=sys.stderr)
    return 1


def _io_sizes(data: Path) -> dict[str, list[int]]:
    """Return values of the read/write family per syscall, this process's own
    threads only (children such as a completion hook are left out)."""
    r = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,event,trace"],
                       capture_output=True, text=True, check=False)
    sizes: dict[str, list[int]] = defaultdict(list)
    for line in r.stdout.splitlines():
        m = re.search(r"(\S+)\s+syscalls:sys_exit_(\w+):.*?(0x[0-9a-f]+|-?\d+)\s*$", line)
        if m is None:
            continue
        comm, call, ret = m.group(1), m.group(2), m.group(3)
        if comm in ("sh", "dash") or comm.startswith("verify"):
            continue
        val = int(ret, 16) if ret.startswith("0x") else int(ret)
        if val >= 1 << 63:
            val -= 1 << 64
        sizes[call].append(val)
    return sizes


def _trace_counts(txt: Path) -> dict[str, dict[str, float]]:
    """Per syscall calls and total ms, summed over the threads of perf trace -s."""
    calls: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "ms": 0.0})
    for line in txt.read_text(errors="replace").splitlines():
        f = line.split()
        if len(f) >= 5 and re.match(r"^[a-z_0-9]+$", f[0]) and f[1].isdigit():
            calls[f[0]]["calls"] += int(f[1])
            calls[f[0]]["ms"] += float(f[3])
    return calls


ENTRY_RE = re.compile(r"\s(__x64_sys_\w+|ksys_\w+|__sys_\w+|do_writev|do_readv|do_sendfile|"
                      r"do_epoll_wait|asm_sysvec_\w+|asm_exc_\w+)")


def profile_split(data: Path, skip_comms: set[str]) -> dict[str, float]:
    """Share of a `--what prof` profile's samples by where they were: the user
    library (``user:<dso>``), or the system call or interrupt the kernel frames
    sit under. Samples of threads named in `skip_comms` (a completion hook, say)
    are left out."""
    r = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,ip,sym,dso"],
                       capture_output=True, text=True, check=False)
    cats: dict[str, int] = defaultdict(int)
    total = 0
    for block in r.stdout.split("\n\n"):
        lines = [x.strip() for x in block.strip().splitlines()]
        if not lines or lines[0].split()[0] in skip_comms:
            continue
        total += 1
        frames = lines[1:]
        if not frames or "kernel.kallsyms" not in frames[0]:
            m = re.search(r"\(([^)]*)\)\s*$", frames[0]) if frames else None
            cats["user:" + (m.group(1).rsplit("/", 1)[-1] if m else "?")] += 1
            continue
        key = "kernel:other"
        for fr in frames:
            m = ENTRY_RE.search(fr)
            if m is not None:
                key = m.group(1)
                break
        for prefix in ("__x64_sys_", "ksys_", "__sys_", "do_"):
            if key.startswith(prefix):
                key = "sys_" + key[len(prefix):]
        cats[key] += 1
    return {k: v / total for k, v in cats.items()} if total else {}


def summarize(d: Path) -> int:
    samples = json.loads((d / "samples.json").read_text())
    rows = {}
    for pidf in sorted(d.glob("*.pid")):
        h = pidf.stem
        s = samples.get(h, {})
        gib_rx = s.get("rx_bytes", 0) / 2**30
        trace, iodata = d / f"{h}.trace.txt", d / f"{h}.io.data"
        counts = _trace_counts(trace) if trace.exists() else {}
        sizes = _io_sizes(iodata) if iodata.exists() else {}
        per = {k: v["calls"] / gib_rx for k, v in counts.items()} if gib_rx else {}
        io = {k: {"calls": len(v), "ok": sum(1 for x in v if x > 0),
                  "eagain": sum(1 for x in v if x < 0),
                  "mean_bytes": (sum(x for x in v if x > 0) / max(1, sum(1 for x in v if x > 0)))}
              for k, v in sizes.items()}
        rows[h] = {"sample": s, "per_gib_rx": per, "io": io,
                   "total_calls_per_gib": sum(per.values())}
        prof = d / f"{h}.prof.data"
        if prof.exists() and gib_rx:
            cpu_per_gib = (s.get("utime_s", 0) + s.get("stime_s", 0)) / gib_rx
            shares = profile_split(prof, {"python3", "sh", "date", "aria2-complete."}
                                   if (d / "aria2c").exists() else set())
            rows[h]["cpu_s_per_gib"] = cpu_per_gib
            rows[h]["cpu_s_per_gib_by_place"] = {
                k: round(v * cpu_per_gib, 3) for k, v in shares.items()}
    print(json.dumps(rows, indent=1, sort_keys=True))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench-pid", type=int)
    ap.add_argument("--hosts", default="h5")
    ap.add_argument("--tool", choices=["roost", "aria2c"], default="roost")
    ap.add_argument("--out", default="/tmp/census")
    ap.add_argument("--freq", type=int, default=299)
    ap.add_argument("--what", default="trace,io,prof",
                    help="which perf sessions: trace (perf trace -s), io (return values of "
                         "the read/write family), prof (perf record -g); the profile alone "
                         "is not skewed by the others' tracepoints")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--summarize", metavar="DIR")
    a = ap.parse_args()
    if a.summarize:
        return summarize(Path(a.summarize))
    if a.bench_pid is None:
        ap.error("--bench-pid is required")
    return watch(a)


if __name__ == "__main__":
    sys.exit(main())
