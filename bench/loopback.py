"""Loopback benchmark: roost vs libtorrent vs aria2c on one machine.

Two shapes, each tool in the same run with the same payload, piece size and
tracker (a local opentracker):
  * pair:  one seeder, one fetcher (raw engine throughput; 1 GiB on tmpfs);
  * swarm: one seeder, N fetchers that keep seeding until all are done.
The clock starts when the last fetcher has been launched and stops when the
last fetcher holds a verified copy. Prints JSON lines and a table.

    python -m bench.loopback --shape pair --size-mib 1024
    python -m bench.loopback --shape swarm --peers 8 --size-mib 256
    python -m bench.loopback --shape pair --tools roost,roost-tls   # TLS's cost
    python -m bench.loopback --shape pair --tools roost,roost-copy  # zero-copy's gain
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
LT_DRIVER = HERE / "drivers" / "lt_loopback.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Run:
    tool: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    done_at: dict[str, float] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)
    peak_rss_kib: int = 0

    def spawn(self, argv: list[str], name: str, watch: str | None = None, **kw: Any) -> None:
        self.commands.append(argv)
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            **kw,
        )
        self.procs.append(proc)
        if watch is not None:
            threading.Thread(
                target=self._watch, args=(proc.stdout, name, watch), daemon=True
            ).start()

    def _watch(self, stream: IO[str], name: str, needle: str) -> None:
        for line in stream:
            if needle in line and name not in self.done_at:
                self.done_at[name] = time.time()

    def sample_rss(self) -> None:
        for proc in self.procs:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def roost_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "roost", *args]


def start_roost(
    run: Run,
    torrent: Path,
    origin: Path,
    dests: list[Path],
    tracker: str,
    tls: dict[str, list[str]] | None = None,
) -> None:
    tls = tls or {}
    run.spawn(
        roost_cmd(
            "seed",
            str(torrent),
            "-d",
            str(origin),
            "--skip-check",
            "--json",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tracker",
            tracker,
            "--super-seed" if len(dests) > 1 else "--quiet",
            *tls.get("origin", []),
        ),
        "origin",
    )
    time.sleep(0.5)
    for i, dest in enumerate(dests):
        run.spawn(
            roost_cmd(
                "fetch",
                str(torrent),
                "-d",
                str(dest),
                "--json",
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--tracker",
                tracker,
                "--linger",
                "600",
                *tls.get(f"r{i}", []),
            ),
            f"r{i}",
            watch='"event":"complete"',
        )


def start_roost_copy(
    run: Run, torrent: Path, origin: Path, dests: list[Path], tracker: str
) -> None:
    """roost uploading with pread + write instead of sendfile: zero-copy's gain."""
    names = ["origin", *(f"r{i}" for i in range(len(dests)))]
    start_roost(run, torrent, origin, dests, tracker, {n: ["--no-zero-copy"] for n in names})


def start_roost_tls(run: Run, torrent: Path, origin: Path, dests: list[Path], tracker: str) -> None:
    """roost with mutual TLS between peers (`roost deploy --peer-tls`): one CA for the run."""
    from roost.deploy.pki import DeployCA  # operator side: needs `cryptography`

    ca = DeployCA("loopback bench")
    tls_dir = origin.parent / "tls"
    shutil.rmtree(tls_dir, ignore_errors=True)
    tls: dict[str, list[str]] = {}
    for name in ["origin", *(f"r{i}" for i in range(len(dests)))]:
        (tls_dir / name).mkdir(parents=True)
        cert, key, ca_file = ca.issue(name).write(tls_dir / name)
        tls[name] = ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca_file)]
    start_roost(run, torrent, origin, dests, tracker, tls)


def start_libtorrent(
    run: Run, torrent: Path, origin: Path, dests: list[Path], tracker: str
) -> None:
    port = free_port()
    run.spawn(
        [
            sys.executable,
            str(LT_DRIVER),
            "--torrent",
            str(torrent),
            "--save",
            str(origin),
            "--port",
            str(port),
            "--seed",
        ],
        "origin",
    )
    time.sleep(0.5)
    for i, dest in enumerate(dests):
        run.spawn(
            [
                sys.executable,
                str(LT_DRIVER),
                "--torrent",
                str(torrent),
                "--save",
                str(dest),
                "--port",
                str(free_port()),
                "--peer",
                f"127.0.0.1:{port}",
            ],
            f"r{i}",
            watch="complete",
        )


def start_aria2(run: Run, torrent: Path, origin: Path, dests: list[Path], tracker: str) -> None:
    common = [
        "aria2c",
        "--enable-dht=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--seed-ratio=0.0",
        "--file-allocation=none",
        "--console-log-level=warn",
        "--summary-interval=0",
        "--bt-max-peers=0",
        "--bt-tracker-interval=2",
        "--check-integrity=false",
    ]
    run.spawn(
        [
            *common,
            f"--listen-port={free_port()}",
            "--bt-seed-unverified=true",
            "-V",
            "-d",
            str(origin),
            str(torrent),
        ],
        "origin",
    )
    time.sleep(0.5)
    for i, dest in enumerate(dests):
        hook = dest / "done.sh"
        dest.mkdir(parents=True, exist_ok=True)
        hook.write_text(f"#!/bin/sh\necho complete\ntouch {dest}/.complete\n")
        hook.chmod(0o755)
        run.spawn(
            [
                *common,
                f"--listen-port={free_port()}",
                "-d",
                str(dest),
                f"--on-bt-download-complete={hook}",
                str(torrent),
            ],
            f"r{i}",
        )


STARTERS = {
    "roost": start_roost,
    "roost-tls": start_roost_tls,
    "roost-copy": start_roost_copy,
    "libtorrent": start_libtorrent,
    "aria2c": start_aria2,
}


def run_tool(
    tool: str, torrent: Path, origin: Path, work: Path, n: int, tracker: str, timeout: float
) -> dict[str, Any]:
    dests = [work / f"{tool}-{i}" for i in range(n)]
    run = Run(tool)
    try:
        STARTERS[tool](run, torrent, origin, dests, tracker)
        t0 = time.time()
        deadline = t0 + timeout
        while time.time() < deadline:
            for i, dest in enumerate(dests):
                if (dest / ".complete").exists() and f"r{i}" not in run.done_at:
                    run.done_at[f"r{i}"] = time.time()
            if len(run.done_at) >= n:
                break
            run.sample_rss()
            time.sleep(0.05)
    finally:
        run.stop()
    times = sorted(t - t0 for t in run.done_at.values())
    return {
        "tool": tool,
        "done": len(times),
        "of": n,
        "t_all": round(times[-1], 3) if len(times) == n else None,
        "t_first": round(times[0], 3) if times else None,
        "peak_rss_mib": round(run.peak_rss_kib / 1024, 1),
        "commands": [" ".join(c) for c in run.commands],
    }


def make_payload(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        for i in range(size >> 20):
            f.write(block[i % 13 :] + block[: i % 13])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["pair", "swarm"], default="pair")
    ap.add_argument("--peers", type=int, default=8)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--tools", default="roost,libtorrent,aria2c")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--dir", default="/dev/shm")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "loopback.jsonl")
    args = ap.parse_args()
    n = 1 if args.shape == "pair" else args.peers
    size = args.size_mib << 20
    results = []
    tracker_port = free_port()
    url = f"http://127.0.0.1:{tracker_port}/announce"
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="roost-loopback-") as tmp:
        work = Path(tmp)
        origin = work / "origin"
        origin.mkdir()
        make_payload(origin / "payload.bin", size)
        torrent = work / "payload.torrent"
        made = subprocess.run(
            roost_cmd(
                "make",
                str(origin / "payload.bin"),
                "-o",
                str(torrent),
                "--public",
                "-t",
                url,
                "--no-date",
                "--json",
            ),
            check=True,
            capture_output=True,
            text=True,
        )
        # Debian's opentracker serves only whitelisted info-hashes
        # it reads the list after dropping to "nobody": make the path readable
        work.chmod(0o755)
        whitelist = work / "whitelist"
        whitelist.write_text(json.loads(made.stdout)["info_hash"] + "\n")
        tracker = subprocess.Popen(
            [
                "opentracker",
                "-i",
                "127.0.0.1",
                "-p",
                str(tracker_port),
                "-P",
                str(tracker_port),
                "-w",
                str(whitelist),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            for tool in args.tools.split(","):
                if tool == "aria2c" and shutil.which("aria2c") is None:
                    continue
                result = run_tool(tool, torrent, origin, work, n, url, args.timeout)
                if result["t_all"]:
                    result["MBps_per_peer"] = round(size / result["t_all"] / 1e6, 1)
                result.update(shape=args.shape, peers=n, size_bytes=size)
                results.append(result)
                print(json.dumps(result), flush=True)
                for i in range(n):
                    shutil.rmtree(work / f"{tool}-{i}", ignore_errors=True)
        finally:
            tracker.terminate()
            tracker.wait(10)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        for r in results:
            f.write(
                json.dumps({**r, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n"
            )
    print("\n| tool | peers | T_all s | MB/s per fetcher | peak RSS MiB |", file=sys.stderr)
    print("|---|---|---|---|---|", file=sys.stderr)
    for r in results:
        print(
            f"| {r['tool']} | {r['peers']} | {r['t_all']} | {r.get('MBps_per_peer')} | "
            f"{r['peak_rss_mib']} |",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
