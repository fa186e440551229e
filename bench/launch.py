"""Launch at fleet scale: what the operator's SSH work costs per host, on real sshd hosts.

    sudo python -m bench.launch --hosts 8,32,64,128
    sudo python -m bench.launch --hosts 8,32 --roost-src /var/tmp/roost-before
    sudo python -m bench.launch --hosts 64 --again       # + a second deploy, agent cached
    sudo python -m bench.launch --hosts 64 --profile /tmp/prof   # cProfile (CPU time)
                                       # (with --again, the cached deploy's: launch-64-again)
    sudo python -m bench.launch --hosts 64 --wrap 'py-spy record --gil -f raw -o /tmp/s-{n}.txt --'

For each N, one fresh fleet (tests/fleet: a network namespace and a real
sshd per host, private tmpfs for the destination, /tmp and ~, so every host
starts with no agent cached) and one `roost deploy` of a small file, run as
a child process of this bench through a thin wrapper that

- counts SSH connections (asyncssh.connect) and channels (every exec request
  goes through SSHClientConnection.create_session), without changing roost:
  the same wrapper measures any checkout (--roost-src), before and after;
- writes the deploy process's own CPU time (RUSAGE_SELF: asyncssh, the
  coordinator; the tracker too in checkouts that ran it in-process) when the
  last host's fetch starts and when it exits, its reaped children's
  (RUSAGE_CHILDREN: the origin seeder, and the tracker where it has a process
  of its own), and that tracker process's own CPU (`cpu_tracker_s`, None when
  the tracker ran inside the deploy process).

Reported per N: `launch` (the deploy's own report: first SSH connect to
the last host's fetch started, i.e. every host fetching), `to_fetching`
(command start to every host fetching: interpreter start, pack, tracker and
origin included), the whole deploy's wall time, operator CPU per host, and
SSH connections and channels per host; `cpu_to_fetching` is the deploy
process's CPU until every host is fetching, `cpu_at` its CPU at the end of
each of the deploy's phases (reached: connected, agent session and lock on
every host; prepared; fetched; activated; end), `sys_*` the kernel's part.
A linear fit over the N values separates the fixed part from the per-host
part. The machine is shared and its hosts run on the same two cores as the
operator: compare within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fleet.fleet import Fleet
from tests.fleet.helpers import deploy_argv

ROOT = Path(__file__).resolve().parent.parent

#: runs `python -m roost ...` with SSH counters and rusage written at exit
WRAPPER = r"""
import atexit, json, os, resource, runpy, sys
import roost.deploy.sshlib
from roost.deploy.sshlib import asyncssh
counts = {"connections": 0, "channels": 0}
_connect = asyncssh.connect
async def connect(*a, **k):
    counts["connections"] += 1
    return await _connect(*a, **k)
asyncssh.connect = connect
_session = asyncssh.SSHClientConnection.create_session
async def create_session(self, *a, **k):
    counts["channels"] += 1
    return await _session(self, *a, **k)
asyncssh.SSHClientConnection.create_session = create_session
def cpu():
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime
from roost.deploy.host import HostRun
_mark = HostRun.mark
def mark(self, name):
    _mark(self, name)
    if name == "fetch_started":  # the last one: every host fetching
        counts["cpu_to_fetching"] = cpu()
        counts["sys_to_fetching"] = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        counts["channels_to_fetching"] = counts["channels"]
HostRun.mark = mark
from roost.deploy.state import Deploy
_deploy_mark = Deploy.mark
counts["cpu_at"] = {}
def deploy_mark(self, name):  # the deploy's phases: packed, origin_started, fetched, ...
    _deploy_mark(self, name)
    counts["cpu_at"][name] = round(cpu(), 3)
Deploy.mark = deploy_mark
from roost.target.protocol import FetchEvent
counts["fetch_events"] = {}
_from_json = FetchEvent.from_json.__func__
def from_json(cls, line):  # what the fetches sent the deploy process, by event
    event = _from_json(cls, line)
    if event is not None:
        name = getattr(event.event, "value", str(event.event))
        counts["fetch_events"][name] = counts["fetch_events"].get(name, 0) + 1
    return event
FetchEvent.from_json = classmethod(from_json)
import roost.deploy.swarm as _swarm
_swarm_stop = _swarm.Swarm.stop
async def swarm_stop(self):  # the tracker in its own process reports its CPU (None: in ours)
    await _swarm_stop(self)
    counts["cpu_tracker"] = getattr(self, "cpu_s", None)
_swarm.Swarm.stop = swarm_stop
_profile = os.environ.get("ROOST_BENCH_PROFILE")
if _profile:
    import cProfile
    import time
    _prof = cProfile.Profile(time.process_time)  # CPU, not wall: the machine is shared
    _prof.enable()
def dump():
    if _profile:
        _prof.disable()
        _prof.dump_stats(_profile)
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(os.environ["ROOST_BENCH_OUT"], "w") as f:
        json.dump({**counts, "cpu_self": me.ru_utime + me.ru_stime, "sys_self": me.ru_stime,
                   "cpu_children": kids.ru_utime + kids.ru_stime}, f)
atexit.register(dump)
sys.argv = ["roost", *sys.argv[1:]]
runpy.run_module("roost", run_name="__main__", alter_sys=True)
"""


def one_run(n: int, src: Path, roost_src: Path, concurrency: int, timeout: float,
            profile: Path | None = None, wrap: list[str] | None = None,
            again: bool = False) -> dict[str, Any]:
    """One fresh fleet, one first deploy (every host gets the agent pushed); with
    `again`, a second deploy on the same fleet (the agent cached), as "again"."""
    with Fleet(n, dest_size="16m") as fleet, tempfile.TemporaryDirectory() as tmp:
        row = _deploy(fleet, n, "v1", src, roost_src, concurrency, timeout, Path(tmp),
                      profile, wrap)
        if again:
            second = _deploy(fleet, n, "v2", src, roost_src, concurrency, timeout, Path(tmp),
                             profile, None, suffix="-again")
            row["again"] = {k: second[k] for k in (
                "launch_s", "deploy_wall_s", "cpu_to_fetching_s", "cpu_self_s",
                "cpu_ms_per_host", "cpu_tracker_s", "cpu_at", "channels_per_host",
                "fetch_events_per_host")}
        return row


def _deploy(fleet: Fleet, n: int, tag: str, src: Path, roost_src: Path, concurrency: int,
            timeout: float, tmp: Path, profile: Path | None, wrap: list[str] | None,
            suffix: str = "") -> dict[str, Any]:
    out = tmp / f"counts-{tag}.json"
    argv = deploy_argv(fleet, src, [h.address for h in fleet.hosts], "--tag", tag,
                       "--timeout", f"{timeout:g}", "--connect-timeout", "60",
                       "--concurrency", str(concurrency))
    argv[1:3] = ["-c", WRAPPER]  # python -m roost -> python -c WRAPPER
    argv[:0] = [part.replace("{n}", str(n)) for part in wrap or []]
    env = {**os.environ, "PYTHONPATH": str(roost_src), "ROOST_BENCH_OUT": str(out)}
    if profile is not None:  # cProfile over the whole deploy process, one file per N
        env["ROOST_BENCH_PROFILE"] = str(profile.resolve() / f"launch-{n}{suffix}.pstats")
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=roost_src, env=env,
                          timeout=timeout + 120)
    wall = time.monotonic() - started
    # the report is the one JSON object on stdout (a --wrap tool may print around it)
    lines = proc.stdout.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("{")), 0)
    last = max((i for i, line in enumerate(lines) if line.startswith("}")), default=-1)
    try:
        report = json.loads("\n".join(lines[first:last + 1]))
    except ValueError:
        raise SystemExit(f"N={n}: no JSON report (exit {proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}") from None
    failed = [(h["host"], h.get("kind"), h.get("reason")) for h in report.get("hosts", [])
              if h.get("status") == "failed"]
    if proc.returncode != 0 or failed:
        raise SystemExit(f"N={n}: deploy failed (exit {proc.returncode}): "
                         f"{report.get('message')}\n{failed[:5]}\n{proc.stderr[-2000:]}")
    counts = json.loads(out.read_text())
    t = report.get("timings", {})
    # command start to every host fetching: interpreter start (wall - total), pack,
    # then the launch (the reach phase follows the pack at once)
    before_launch = wall - float(t.get("total") or wall)
    return {
        "hosts": n,
        "launch_s": t.get("launch"),
        "to_fetching_s": round(before_launch + float(t.get("pack_and_hash") or 0)
                               + float(t.get("launch") or 0), 3),
        "deploy_wall_s": round(wall, 3),
        "cpu_to_fetching_s": round(counts.get("cpu_to_fetching", 0.0), 3),
        "cpu_self_s": round(counts["cpu_self"], 3),
        # of which the kernel's: on this lab's veths a send() also runs the
        # receiving namespace's network stack, billed to the sender
        "sys_to_fetching_s": round(counts.get("sys_to_fetching", 0.0), 3),
        "sys_self_s": round(counts["sys_self"], 3),
        # reaped children: the origin seeder, and the tracker where it has its own process
        "cpu_children_s": round(counts["cpu_children"], 3),
        # the tracker's own CPU when it runs in a process of its own; None: it ran
        # inside the deploy process (older checkouts), its CPU is in cpu_self_s
        "cpu_tracker_s": counts.get("cpu_tracker"),
        "cpu_ms_per_host": round(1000 * counts["cpu_self"] / n, 2),
        "cpu_at": counts.get("cpu_at"),  # the deploy process's CPU at each phase's end
        "connections_per_host": round(counts["connections"] / n, 2),
        "fetch_events_per_host": {k: round(v / n, 1) for k, v in
                                  sorted(counts.get("fetch_events", {}).items())},
        "channels_per_host": round(counts["channels"] / n, 2),
        "timings": t,
    }


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b·x."""
    if len(xs) < 2:
        return 0.0, ys[0] / xs[0] if xs else 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


def summary(rows: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    xs = [float(r["hosts"]) for r in rows]
    a_l, b_l = fit(xs, [float(r["launch_s"] or 0) for r in rows])
    a_c, b_c = fit(xs, [float(r["cpu_self_s"]) for r in rows])
    a_f, b_f = fit(xs, [float(r["cpu_to_fetching_s"]) for r in rows])
    out: dict[str, Any] = {
        "launch_cpu_fit": {"fixed_s": round(a_f, 3), "per_host_ms": round(1000 * b_f, 2)},
        "launch_fit": {"c0_s": round(a_l, 3), "per_host_ms": round(1000 * b_l, 2)},
        "cpu_fit": {"fixed_s": round(a_c, 3), "per_host_ms": round(1000 * b_c, 2)},
        "model": "launch(N) = c0 + N * per_host (the fit over the measured N, at "
                 f"concurrency {concurrency}); CPU(N) = fixed + N * per_host",
    }
    if all("again" in r for r in rows):  # the agent cached: what most deploys cost
        a_g, b_g = fit(xs, [float(r["again"]["cpu_to_fetching_s"]) for r in rows])
        a_w, b_w = fit(xs, [float(r["again"]["cpu_self_s"]) for r in rows])
        out["again_launch_cpu_fit"] = {"fixed_s": round(a_g, 3),
                                       "per_host_ms": round(1000 * b_g, 2)}
        out["again_cpu_fit"] = {"fixed_s": round(a_w, 3), "per_host_ms": round(1000 * b_w, 2)}
    if all(r.get("cpu_tracker_s") is not None for r in rows):  # the tracker's own process
        a_t, b_t = fit(xs, [float(r["cpu_tracker_s"]) for r in rows])
        out["tracker_cpu_fit"] = {"fixed_s": round(a_t, 3), "per_host_ms": round(1000 * b_t, 2)}
    for n in (1000, 10000):
        out[f"projected_launch_{n}_s"] = round(a_l + n * b_l, 1)
        # the deploy process is one asyncio thread: its CPU to every host fetching is a
        # floor on the launch wherever the hosts run
        out[f"projected_launch_cpu_floor_{n}_s"] = round(a_f + n * b_f, 1)
        out[f"projected_cpu_{n}_s"] = round(a_c + n * b_c, 1)
    return out


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(f"bench.launch: stopped by signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", default="8,32,64,128", help="comma-separated N values")
    parser.add_argument("--roost-src", type=Path, default=ROOT,
                        help="the roost checkout to measure (default: this one)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--size-kib", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", type=Path, help="append the JSON result here")
    parser.add_argument("--again", action="store_true",
                        help="deploy a second time on each fleet, the agent cached")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="cProfile the deploy process: DIR/launch-<N>.pstats (slows it)")
    parser.add_argument("--wrap", default="", metavar="CMD",
                        help="run the deploy process under CMD ({n} is N), e.g. a sampling "
                             "profiler: 'py-spy record -f raw -o /tmp/launch-{n}.txt --'")
    ns = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench.launch needs root (network namespaces, sshd)")
    # SIGTERM (and SIGINT, ignored in background jobs) unwinds: every fleet is torn down
    signal.signal(signal.SIGTERM, _stop)
    try:
        sizes = [int(v) for v in ns.hosts.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--hosts: expected numbers like 8,32,64, not {ns.hosts!r}") from None
    if not sizes or not all(1 <= n <= 200 for n in sizes):
        raise SystemExit("--hosts: each N must be 1 to 200")
    rows = []
    with tempfile.TemporaryDirectory(prefix="roost-launch-", dir="/var/tmp") as tmp:
        src = Path(tmp) / "payload.bin"
        src.write_bytes(os.urandom(ns.size_kib * 1024))
        for n in sizes:
            row = one_run(n, src, ns.roost_src.resolve(), ns.concurrency, ns.timeout,
                          ns.profile, shlex.split(ns.wrap), ns.again)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "timings"}), flush=True)
    result = {"roost_src": str(ns.roost_src), "concurrency": ns.concurrency,
              "size_kib": ns.size_kib, "rows": rows, **summary(rows, ns.concurrency)}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if ns.out:
        with ns.out.open("a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
