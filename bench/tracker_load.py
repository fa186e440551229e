"""Announce load benchmark: roost tracker vs opentracker, same load, same run.

    python bench/tracker_load.py [--duration 10] [--connections 50] [--out FILE]

The load generator is wrk (C, Debian) with bench/tracker_load.lua, pinned to
one core with taskset while the tracker under test has the other. Each run is
bounded by time (wrk -d) and by count (LOAD_MAX responses per wrk thread).
Both trackers serve the same registered swarms (roost: admin API + secret
URLs; opentracker: its whitelist), get a short unreported warm-up that fills
the peer tables, then two measured runs: keep-alive connections, and a new
connection per announce (Connection: close). Reported: announces/s, p50/p99
latency, failure counts, and roost/opentracker ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LUA = HERE / "tracker_load.lua"
ROOT = HERE.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int | None, args: list[str]) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return args
    return ["taskset", "-c", str(core), *args]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout} s")


def end(proc: subprocess.Popen[Any]) -> None:
    """End a process we started, by its PID."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def roost_tracker(core: int | None, hashes: list[str], workdir: Path) -> Iterator[list[str]]:
    """Start `roost tracker`, register the swarms; yields swarm lines for the Lua script."""
    admin = secrets.token_urlsafe(24)
    args = [sys.executable, "-m", "roost", "tracker", "--port", "0", "--json",
            "--admin-token", admin, "--max-numwant", "50"]
    proc = subprocess.Popen(pinned(core, args), stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            stderr=(workdir / "roost.log").open("w"))
    try:
        assert proc.stdout is not None
        if not select.select([proc.stdout], [], [], 30)[0]:
            raise RuntimeError("roost tracker did not start")
        port = json.loads(proc.stdout.readline())["port"]
        lines = []
        for ih in hashes:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/admin/swarms", body=json.dumps({"info_hash": ih}),
                         headers={"Authorization": f"Bearer {admin}"})
            reg = json.loads(conn.getresponse().read())
            conn.close()
            lines.append(f"{ih} /announce/{reg['token']}")
        yield [f"http://127.0.0.1:{port}", *lines]
    finally:
        end(proc)


@contextlib.contextmanager
def opentracker(core: int | None, hashes: list[str], workdir: Path) -> Iterator[list[str]]:
    """Start Debian's opentracker with the same swarms in its whitelist."""
    exe = shutil.which("opentracker") or "/usr/bin/opentracker"
    chroot = workdir / "opentracker"
    chroot.mkdir()
    (chroot / "whitelist").write_text("".join(f"{ih}\n" for ih in hashes))
    os.chmod(chroot, 0o755)
    os.chmod(chroot / "whitelist", 0o644)
    port, udp = free_port(), free_port()
    args = [exe, "-i", "127.0.0.1", "-p", str(port), "-P", str(udp), "-d", str(chroot),
            "-w", "/whitelist"]
    proc = subprocess.Popen(pinned(core, args), stdout=subprocess.DEVNULL,
                            stderr=(workdir / "opentracker.log").open("w"))
    try:
        wait_port(port)
        yield [f"http://127.0.0.1:{port}", *(f"{ih} /announce" for ih in hashes)]
    finally:
        end(proc)


def run_wrk(url: str, swarms_file: Path, opts: argparse.Namespace, close: bool,
            duration: float) -> dict[str, Any]:
    env = dict(os.environ, LOAD_SWARMS=str(swarms_file), LOAD_PEERS=str(opts.peers),
               LOAD_MAX=str(opts.max_requests), LOAD_CLOSE="1" if close else "0")
    args = ["wrk", "-t1", f"-c{opts.connections}", f"-d{max(1, round(duration))}s", "--timeout", "5s",
            "-s", str(LUA), url]
    out = subprocess.run(pinned(opts.load_core, args), env=env, capture_output=True, text=True,
                         timeout=duration + 60, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            res: dict[str, Any] = json.loads(line[7:])
            seconds = res["duration_us"] / 1e6
            res["announces_per_s"] = round(res["requests"] / seconds, 1)
            res["p50_ms"] = round(res["p50_us"] / 1000, 2)
            res["p99_ms"] = round(res["p99_us"] / 1000, 2)
            return res
    raise RuntimeError(f"wrk gave no result: {out.stdout[-2000:]} {out.stderr[-2000:]}")


def bench_target(name: str, starter: Any, hashes: list[str], opts: argparse.Namespace,
                 workdir: Path) -> dict[str, dict[str, Any]]:
    results = {}
    with starter(opts.tracker_core, hashes, workdir) as (url, *lines):
        swarms_file = workdir / f"{name}.swarms"
        swarms_file.write_text("\n".join(lines) + "\n")
        run_wrk(url, swarms_file, opts, False, opts.warmup)  # fill the peer tables
        for mode, close in (("keepalive", False), ("new_connection", True)):
            results[mode] = run_wrk(url, swarms_file, opts, close, opts.duration)
            print(f"{name:12} {mode:15} {results[mode]['announces_per_s']:>9.0f}/s  "
                  f"p50 {results[mode]['p50_ms']:6.2f} ms  p99 {results[mode]['p99_ms']:6.2f} ms  "
                  f"failures {results[mode]['failures'] + results[mode]['non200']}", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--swarms", type=int, default=20)
    parser.add_argument("--peers", type=int, default=500, help="peers per swarm")
    parser.add_argument("--max-requests", type=int, default=500_000, help="per wrk thread")
    parser.add_argument("--tracker-core", type=int, default=1)
    parser.add_argument("--load-core", type=int, default=0)
    parser.add_argument("--only", choices=["roost", "opentracker"])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    opts = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian package wrk)", file=sys.stderr)
        return 2
    hashes = [secrets.token_hex(20) for _ in range(opts.swarms)]
    report: dict[str, Any] = {"config": {k: str(v) for k, v in vars(opts).items()},
                              "cpus": os.cpu_count()}
    targets = [("roost", roost_tracker), ("opentracker", opentracker)]
    with tempfile.TemporaryDirectory(prefix="roost-bench-") as tmp:
        for name, starter in targets:
            if opts.only in (None, name):
                report[name] = bench_target(name, starter, hashes, opts, Path(tmp))
    if "roost" in report and "opentracker" in report:
        report["ratio_roost_over_opentracker"] = {
            mode: {
                "announces_per_s": round(report["roost"][mode]["announces_per_s"]
                                         / report["opentracker"][mode]["announces_per_s"], 3),
                "p99": round(report["roost"][mode]["p99_ms"]
                             / max(report["opentracker"][mode]["p99_ms"], 0.001), 2),
            }
            for mode in ("keepalive", "new_connection")
        }
        for mode, r in report["ratio_roost_over_opentracker"].items():
            print(f"ratio roost/opentracker {mode:15} throughput {r['announces_per_s']:.3f}  "
                  f"p99 {r['p99']:.2f}x")
    if opts.out:
        opts.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
