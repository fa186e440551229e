"""CPU of the Python processes a deploy starts on each host, per checkout (issue 16).

    python -m bench.agent_startup --roost-src /tmp/before --roost-src . [--runs 20]

Each checkout's agent is built as a lab host gets it: its sources pushed and
unpacked by roost.deploy.host.RECEIVE_AGENT, which compiles the bytecode with
the host's Python and stores the zip uncompressed. Then, in turns (A B A B ...,
so a drift of the shared machine's speed hits both), RUNS runs of each process
a host starts, as the deploy starts it, each run's CPU (user + system) read from
getrusage of the finished child:

* probe: the version check before the session (`python3 [-S] -c ...`; the
  command line is the checkout's HostRun.probe_command);
* session: `roost session` (interpreter, imports, the commands' modules it
  loads once for its forks), told `bye` as soon as it starts;
* fetch: the fetch of a next release, exec'd by the session: every file is
  held by the release before it (the sample tree of tests/deploy/trees.py), so
  it places them, checks the pieces and stages the release with no peer
  (--no-tracker --no-seed: the deploy's fetch would go on seeding).

Prints, per process and checkout, the median CPU seconds of one run, and the
median of the pairwise ratios (later checkout / first). The hosts' Python is
/usr/bin/python3, as in the namespace lab (tests/fleet/fleet.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: run in each checkout (PYTHONPATH=SRC): the agent as a host gets it, and the
#: command lines that checkout's deploy sends (the probe, and how it starts the session)
BUILD = r"""
import json, re, shlex, subprocess, sys
from roost.deploy.host import PUSH_CAP, PUSH_HEADER, RECEIVE_AGENT, Agent, HostRun
from roost.deploy.hosts import HostSpec
from roost.deploy.zipapp import build_source_zip
from roost.target.protocol import EXIT_CODES, ErrorKind
python, out = sys.argv[1], sys.argv[2]
agent = Agent("agent.pyz", python, build_source_zip())
script = RECEIVE_AGENT % {"header": PUSH_HEADER, "cap": PUSH_CAP,
                          "full": EXIT_CODES[ErrorKind.DISK_FULL]}
done = subprocess.run([python, "-I", "-c", script, out, agent.push_sha256, "session"],
                      input=(agent.push_text + '{"op": "bye"}\n').encode(), capture_output=True)
assert done.returncode == 0, done.stderr
command = HostRun(HostSpec("h", "h")).probe_command(agent, then="session")
probe = re.search(r"\}; (.*?) && fit=1", command).group(1)
session = command.split("exec ", 1)[1].split(";", 1)[0]
print(json.dumps({"probe": shlex.split(probe), "session": shlex.split(session)}))
"""


def build(src: Path, python: str, out: Path) -> dict[str, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", BUILD, python, str(out)], env=env,
                          capture_output=True, text=True, check=True, cwd=src)
    argv: dict[str, list[str]] = json.loads(done.stdout)
    # the session's command line names the cached agent as $HOME/.cache/roost/...
    argv["session"] = [str(out) if "agent.pyz" in a else a for a in argv["session"]]
    return argv


def make_case(work: Path) -> list[str]:
    """A host's next release, all held: v1 released (seeded, fetched, activated),
    v2 (the same tree) prepared. The fetch's argv without the agent in front."""
    sys.path.insert(0, str(ROOT))
    from tests.deploy.test_tree import _prepare, release
    from tests.deploy.trees import make_sample_tree
    from tests.swarm.harness import Procs

    src = make_sample_tree(work / "src", big=1_500_000)
    dest = work / "dest"
    procs = Procs()
    try:
        release(work, procs, src, dest, "v1")
    finally:
        procs.close()
    prepared, torrent, staging = _prepare(work, src, dest, "v2")
    return ["fetch", str(torrent), "--tree-manifest", str(prepared / "manifest.json"),
            "--dest", str(dest), "--reuse", "copy", "--stage", "-d", str(staging), "--json",
            "--no-tracker", "--no-seed", "--timeout", "60", "--port", "0",
            "--bind", "127.0.0.1"]


def cpu_of(argv: list[str], stdin: bytes = b"") -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, input=stdin, capture_output=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} exited {done.returncode}: {done.stderr[-500:]!r}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--roost-src", action="append", type=Path, required=True,
                    help="a checkout to measure (give two or more; the first is the base)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--python", default="/usr/bin/python3", help="the hosts' Python")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="roost-agent-startup-"))
    try:
        fetch = make_case(work / "case")
        staging, final = Path(fetch[fetch.index("-d") + 1]), Path(fetch[fetch.index("--dest") + 1])
        agents = []
        for i, src in enumerate(args.roost_src):
            argv = build(src.resolve(), args.python, work / f"agent{i}.pyz")
            # as the session execs it (roost.target.session._self_argv): -I, never -S
            argv["fetch"] = [a for a in argv["session"][:-1] if a != "-S"] + fetch
            agents.append(argv)
        cpu: dict[str, list[list[float]]] = {k: [[] for _ in agents]
                                             for k in ("probe", "session", "fetch")}
        load = [os.getloadavg()[0]]
        for _ in range(args.runs):
            for i, argv in enumerate(agents):
                cpu["probe"][i].append(cpu_of(argv["probe"]))
                cpu["session"][i].append(cpu_of(argv["session"], b'{"op": "bye"}\n'))
                shutil.rmtree(staging, ignore_errors=True)
                shutil.rmtree(final / "releases" / "v2", ignore_errors=True)
                cpu["fetch"][i].append(cpu_of(argv["fetch"]))
        load.append(os.getloadavg()[0])
        print(f"{args.runs} runs of each, in turns; load average {load[0]:.1f} -> {load[1]:.1f}")
        for i, argv in enumerate(agents):
            print(f"[{i}] {args.roost_src[i]}: session {shlex.join(argv['session'])}")
        print(f"{'process':8} " + " ".join(f"[{i}] CPU s (median)" for i in range(len(agents)))
              + "   ratio to [0] (median of pairs)")
        for name, runs in cpu.items():
            medians = " ".join(f"{statistics.median(r):19.4f}" for r in runs)
            pairs = [[b / a for a, b in zip(runs[0], r, strict=True)] for r in runs[1:]]
            ratios = " ".join(f"{statistics.median(p):.3f}" for p in pairs)
            print(f"{name:8} {medians}   {ratios}")
        total = [sum(statistics.median(cpu[k][i]) for k in cpu) for i in range(len(agents))]
        print(f"{'per host':8} " + " ".join(f"{t:19.4f}" for t in total)
              + "   " + " ".join(f"{t / total[0]:.3f}" for t in total[1:]))
        if args.json:
            record: dict[str, Any] = {"srcs": [str(s) for s in args.roost_src], "cpu": cpu,
                                      "load": load, "python": args.python}
            args.json.write_text(json.dumps(record) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
