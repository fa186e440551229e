"""A seeder under 1,000 hostile idle connections still serves a fetch at full speed.

One seeder on 127.0.0.1; the same fetch (a fresh directory each time) is
timed alternately without and with bench.hostile pressing on the seeder's port
(mute, silent and dripping connections from 127.0.0.2-9), `--rounds` times
each, in one run. Prints one JSON line per fetch and the ratio of the mean
attacked time to the mean quiet time (goal: at most 1.10).

    python -m bench.slot_attack --size-mib 256 --rounds 3 --count 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def roost(*argv: str) -> list[str]:
    return [sys.executable, "-m", "roost", *argv]


def timed_fetch(torrent: Path, dest: Path, port: int, timeout: float) -> float:
    start = time.monotonic()
    done = subprocess.run(
        roost("fetch", str(torrent), "-d", str(dest), "--no-tracker", "--no-seed", "--quiet",
              "--peer", f"127.0.0.1:{port}", "--bind", "127.0.0.1", "--port", "0",
              "--timeout", str(timeout)),
        capture_output=True, text=True, timeout=timeout + 30,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"fetch failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


def start(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=30)
    return out


def run(size_mib: int, rounds: int, count: int, timeout: float, reopen: float = 1.0
        ) -> dict[str, object]:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="roost-slot-attack-", dir=base))
    seeder: subprocess.Popen[str] | None = None
    try:
        payload = work / "payload.bin"
        with payload.open("wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(1 << 20))
        torrent = work / "p.torrent"
        subprocess.run(roost("make", str(payload), "-o", str(torrent)), check=True,
                       capture_output=True)  # fmt: skip
        from roost.core.metainfo import parse

        info_hash = parse(torrent.read_bytes()).info_hash.hex()
        port = free_port()
        seeder = start(roost("seed", str(torrent), "-d", str(work), "--no-tracker", "--json",
                             "--bind", "127.0.0.1", "--port", str(port)))  # fmt: skip
        time.sleep(1.5)
        warm = timed_fetch(torrent, work / "warm", port, timeout)  # not counted: caches, imports
        shutil.rmtree(work / "warm")
        print(json.dumps({"warm_up_s": round(warm, 3)}), flush=True)
        quiet: list[float] = []
        attacked: list[float] = []
        for n in range(rounds):
            quiet.append(timed_fetch(torrent, work / f"quiet{n}", port, timeout))
            shutil.rmtree(work / f"quiet{n}")
            attacker = start([sys.executable, "-m", "bench.hostile", "--target",
                              f"127.0.0.1:{port}", "--info-hash", info_hash,
                              "--count", str(count), "--seconds", str(timeout + 10),
                              "--reopen", str(reopen)])  # fmt: skip
            time.sleep(3.0)  # let every hostile connection open and settle
            try:
                attacked.append(timed_fetch(torrent, work / f"attacked{n}", port, timeout))
            finally:
                tally = stop(attacker).strip()
            shutil.rmtree(work / f"attacked{n}")
            print(json.dumps({"round": n, "quiet_s": round(quiet[-1], 3),
                              "attacked_s": round(attacked[-1], 3), "attacker": tally}),
                  flush=True)  # fmt: skip
        refused = [
            json.loads(line) for line in stop(seeder).splitlines()
            if '"connections_refused"' in line
        ]  # fmt: skip
        seeder = None
        totals: dict[str, int] = {}
        for event in refused:
            for reason, n in event["counts"].items():
                totals[reason] = totals.get(reason, 0) + n
        q, a = sum(quiet) / len(quiet), sum(attacked) / len(attacked)
        qm, am = statistics.median(quiet), statistics.median(attacked)
        return {"size_mib": size_mib, "count": count, "reopen_s": reopen, "rounds": rounds,
                "quiet_mean_s": round(q, 3), "attacked_mean_s": round(a, 3),
                "ratio": round(a / q, 3), "ratio_of_medians": round(am / qm, 3),
                "seeder_refused": totals}  # fmt: skip
    finally:
        if seeder is not None:
            stop(seeder)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--reopen", type=float, default=1.0,
                        help="the attack reopens a closed connection after this many seconds")
    ns = parser.parse_args()
    print(json.dumps(run(ns.size_mib, ns.rounds, ns.count, ns.timeout, ns.reopen)), flush=True)


if __name__ == "__main__":
    main()
