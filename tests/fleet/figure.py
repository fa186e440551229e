"""Closing-note figure: deploy a directory to namespace hosts over real SSH, shaped links.

    sudo python -m tests.fleet.figure --hosts 16 --size-mib 256 --rate-mbit 100

Prints the deploy's JSON timings and the bound S·8/R; writes the report to
--out if given. Every link (each host's, and the deploy host's) is capped at
the rate in both directions with htb (bench/lab/shaping.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from tests.fleet.fleet import Fleet
from tests.fleet.helpers import deploy_argv, run_roost


def make_tree(root: Path, size_mib: int) -> Path:
    """Mostly big files (as a build output is), plus a few hundred small ones."""
    (root / "lib").mkdir(parents=True)
    (root / "static").mkdir()
    small = 400
    for i in range(small):
        (root / "static" / f"asset{i:03d}.js").write_bytes(os.urandom(4096))
    left = size_mib * 2**20 - small * 4096
    i = 0
    while left > 0:  # bounded: each pass writes up to 32 MiB
        n = min(left, 32 * 2**20)
        (root / "lib" / f"blob{i:02d}.so").write_bytes(os.urandom(n))
        left -= n
        i += 1
    os.symlink("lib/blob00.so", root / "main.so")
    return root


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rate-mbit", type=float, default=100)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--extra", default="", help="more `roost deploy` flags, e.g. --super-seed")
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="roost-figure-", dir="/var/tmp"))
    try:
        src = make_tree(work / "app", ns.size_mib)
        dest_mib = ns.size_mib * 2 + 128
        with Fleet(ns.hosts, dest_size=f"{dest_mib}m") as fleet:
            fleet.shape(ns.rate_mbit)
            started = time.monotonic()
            code, report, stderr = run_roost(
                deploy_argv(fleet, src, [h.address for h in fleet.hosts], "--tag", "fig",
                            "--link-rate", f"{ns.rate_mbit:g}mbit", "--timeout", "1800",
                            "--connect-timeout", "30", *ns.extra.split()),
                timeout=2400)
            wall = time.monotonic() - started
        report["wall_seconds_including_cli_start"] = round(wall, 3)
        print(json.dumps({"exit": code, "message": report["message"],
                          "timings": report["timings"], "bound": report["bound"],
                          "wall": report["wall_seconds_including_cli_start"],
                          "fetch_seconds": [h["fetch_seconds"] for h in report["hosts"]]},
                         indent=1))
        if code != 0:
            print(stderr[-3000:])
        if ns.out:
            ns.out.write_text(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
