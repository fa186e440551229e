"""Where roost's time goes in the lab: launch, first byte, transfer, tail.

Runs one roost origin and N roost receivers in the fleet lab (no tracker:
every receiver is given every other host's address, so tracker latency is
out of the picture) and prints, from the peers' own JSON events, when each
host saw its first byte and completed, the aggregate download rate per
second, and the origin's upload rate. Root only.

    python -m bench.roost_timeline --n 8 --size-mib 64 --rate 40
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.lab import Lab
from bench.tools.roost import precompile

PORT = 6881


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--rate", type=float, default=40)
    ap.add_argument("--piece-kib", type=int, default=256)
    ap.add_argument("--super-seed", action="store_true")
    ap.add_argument("--timeout", type=float, default=0, help="seconds (0: 30 + 20 x bound)")
    ap.add_argument("--extra", default="", help="extra args for every fetch")
    ap.add_argument("--origin-extra", default="", help="extra args for the origin's seed")
    ap.add_argument("--events", type=Path, help="also write every JSON event here (JSONL)")
    args = ap.parse_args()
    precompile()
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    with Lab(args.n + 1, args.rate) as lab:
        work = Path(lab.tmpdir)
        payload = work / "origin" / "payload.bin"
        payload.parent.mkdir(parents=True)
        payload.write_bytes(os.urandom(args.size_mib << 20))
        torrent = work / "p.torrent"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "roost",
                "make",
                str(payload),
                "-o",
                str(torrent),
                "--piece-size",
                f"{args.piece_kib}K",
            ],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        events: dict[str, list[tuple[float, dict[str, Any]]]] = {}

        def reader(name: str, stream: Any) -> None:
            for line in stream:
                with contextlib.suppress(ValueError):
                    events.setdefault(name, []).append((time.time(), json.loads(line)))

        def launch(host: Any, argv: list[str], name: str) -> None:
            proc = lab.spawn(
                host,
                [
                    sys.executable,
                    "-m",
                    "roost",
                    *argv,
                    "--json",
                    "--bind",
                    host.ip,
                    "--port",
                    str(PORT),
                ],
                stdout=subprocess.PIPE,
                env=env,
            )
            threading.Thread(target=reader, args=(name, proc.stdout), daemon=True).start()

        seed = ["seed", str(torrent), "-d", str(payload.parent), "--no-tracker", "--skip-check"]
        seed += ["--super-seed"] if args.super_seed else []
        launch(lab.origin, seed + args.origin_extra.split(), "origin")
        lab.wait_listen(lab.origin, PORT)
        everyone = [h.ip for h in lab.hosts]
        for i, host in enumerate(lab.receivers):
            argv = [
                "fetch",
                str(torrent),
                "-d",
                str(work / f"r{i}"),
                "--no-tracker",
                "--linger",
                "1000",
                *args.extra.split(),
            ]
            for ip in everyone:
                if ip != host.ip:
                    argv += ["--peer", f"{ip}:{PORT}"]
            launch(host, argv, f"r{i}")
        t0 = time.time()
        deadline = t0 + (args.timeout or 30 + 20 * (args.size_mib * 8 / args.rate))
        while time.time() < deadline:
            done = [
                n
                for n, ev in events.items()
                if n != "origin" and any(e.get("event") == "complete" for _, e in ev)
            ]
            if len(done) == args.n:
                break
            time.sleep(0.2)
        t_end = time.time()
    if args.events:
        with args.events.open("w") as out:
            for name, evs in sorted(events.items()):
                for t, e in evs:
                    out.write(json.dumps({"host": name, "t": round(t - t0, 3), **e}) + "\n")
    bound = args.size_mib * 8 * 1.048576 / args.rate
    print(f"bound S*8/R = {bound:.2f} s; all done at {t_end - t0:.2f} s")
    for name in sorted(events):
        evs = events[name]
        first = next((t - t0 for t, e in evs if e.get("bytes_done", 0) > 0), None)
        done = next((t - t0 for t, e in evs if e.get("event") == "complete"), None)
        other = [e["event"] for _, e in evs if e["event"] not in ("progress",)]
        print(f"{name:7} first-byte~{first} complete {done} events {sorted(set(other))}")
    for name in sorted(events):
        stalls = [e for _, e in events[name] if e.get("event") == "stalled"]
        if stalls:
            print(name, "STALLED", json.dumps(stalls[-1])[:1500])
    per_sec: dict[int, float] = {}
    for name, evs in events.items():
        for t, e in evs:
            if e.get("event") == "progress" and name != "origin":
                per_sec[int(t - t0)] = per_sec.get(int(t - t0), 0) + e["down_Bps"] / 2
    origin_up = {
        int(t - t0): e["up_Bps"]
        for t, e in events.get("origin", [])
        if e.get("event") == "progress"
    }
    link = args.rate * 1e6 / 8
    for sec in sorted(per_sec):
        print(
            f"t={sec:3d}s  fleet down {per_sec[sec] / link:5.2f} links  "
            f"origin up {origin_up.get(sec, 0) / link:4.2f} link"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
