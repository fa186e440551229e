"""CPU per GiB of one `roost seed` -> one `roost fetch` on loopback, without a tracker.

    python -m bench.pair_cpu                           # this checkout, 1 GiB on /dev/shm
    python -m bench.pair_cpu --repo /tmp/old-checkout  # another roost, same payload
    python -m bench.pair_cpu --piece-size 256K         # the lab's piece size

Prints one JSON line: the fetcher's time to `complete`, and the CPU seconds
(user + sys, from the kernel's accounting of each finished process) of the
fetcher and of the seeder. Run it for two checkouts in turn to compare them:
on a shared machine the CPU seconds move much less than the times do.
The payload and torrent are made once under --dir and kept for later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def make_payload(path: Path, size_mib: int) -> None:
    """Pseudo-random, rotated per MiB (as bench.loopback makes it)."""
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size_mib):
            f.write(block[i % 13 :] + block[: i % 13])


def cpu(ru: resource.struct_rusage) -> float:
    return round(ru.ru_utime + ru.ru_stime, 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                    help="checkout whose roost runs (default: this one)")
    ap.add_argument("--dir", type=Path, default=Path("/dev/shm/roost-pair-cpu"))
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--piece-size", default="",
                    help="e.g. 256K (default: roost make's choice)")
    args = ap.parse_args()
    if not (args.repo / "roost" / "__init__.py").is_file():
        print(f"pair_cpu: {args.repo} is not a roost checkout", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": str(args.repo)}
    roost = [sys.executable, "-m", "roost"]
    origin = args.dir / f"origin-{args.size_mib}"
    payload = origin / "payload.bin"
    suffix = f"-p{args.piece_size}" if args.piece_size else ""
    torrent = args.dir / f"payload-{args.size_mib}{suffix}.torrent"
    if not torrent.exists():
        origin.mkdir(parents=True, exist_ok=True)
        if not payload.exists():
            make_payload(payload, args.size_mib)
        piece = ["--piece-size", args.piece_size] if args.piece_size else []
        subprocess.run([*roost, "make", str(payload), "-o", str(torrent), "--public",
                        "--no-date", "--force", *piece], check=True, env=env,
                       capture_output=True)
    dest = args.dir / f"dest-{os.getpid()}"
    seed = subprocess.Popen(
        [*roost, "seed", str(torrent), "-d", str(origin), "--skip-check", "--json",
         "--no-tracker", "--bind", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=args.repo)
    assert seed.stdout is not None
    port = None
    for line in seed.stdout:
        event = json.loads(line)
        if event.get("event") == "started":
            port = event["port"]
            break
    if port is None:
        seed.wait()
        print("pair_cpu: the seeder did not start", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    fetch = subprocess.Popen(
        [*roost, "fetch", str(torrent), "-d", str(dest), "--json", "--quiet", "--no-tracker",
         "--no-seed", "--bind", "127.0.0.1", "--port", "0", "--peer", f"127.0.0.1:{port}",
         "--timeout", str(args.timeout)],
        stdout=subprocess.PIPE, text=True, env=env, cwd=args.repo)
    assert fetch.stdout is not None
    t_complete = None
    for line in fetch.stdout:
        if t_complete is None and '"complete"' in line:
            t_complete = time.monotonic() - t0
    _, status, ru_fetch = os.wait4(fetch.pid, 0)
    seed.terminate()
    seed.stdout.read()
    _, _, ru_seed = os.wait4(seed.pid, 0)
    shutil.rmtree(dest, ignore_errors=True)
    gib = args.size_mib / 1024
    print(json.dumps({
        "repo": str(args.repo), "exit": os.waitstatus_to_exitcode(status),
        "t_complete": round(t_complete, 3) if t_complete else None,
        "MBps": round((args.size_mib << 20) / t_complete / 1e6, 1) if t_complete else None,
        "fetch_cpu_per_gib": round(cpu(ru_fetch) / gib, 3),
        "seed_cpu_per_gib": round(cpu(ru_seed) / gib, 3),
        "fetch_user": round(ru_fetch.ru_utime, 3), "seed_user": round(ru_seed.ru_utime, 3),
    }))
    return 0 if t_complete else 1


if __name__ == "__main__":
    sys.exit(main())
