"""The simulator against the lab: every roost row of bench/results/efficiency.md, simulated.

    python -m bench.sim_calibrate [--startup 0.0] [--only 8,16] [--json]

Reads the lab's measured rows (tool roost) from the efficiency table, runs
the same scenario in roost.sim (same N, payload, rate, piece size 256 KiB,
the origin super-seeding, the hetero row's quarter of hosts at R/10, the loss
row's 2 %) and prints lab and simulated first / median / last host times side
by side, with the difference of the last host. The lab's times count from the
last receiver's launch, so a host's process start-up is in them; --startup
adds that many seconds to every simulated host's start.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from bench.efficiency import parse_size
from roost.sim.scenario import Scenario
from roost.sim.world import simulate

TABLE = Path(__file__).parent / "results" / "efficiency.md"
MIB = 1 << 20


def lab_rows(path: Path = TABLE) -> list[dict[str, Any]]:
    """The roost rows of the efficiency table."""
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 14 or cells[4] != "roost" or cells[5] != "ok":
            continue
        m = re.fullmatch(r"(\d+) MiB", cells[2])
        if not m:
            continue
        loss = re.search(r"([\d.]+)% loss", cells[13])
        rows.append(
            {
                "scenario": cells[0],
                "n": int(cells[1]),
                "size": int(m.group(1)) * MIB,
                "rate": float(cells[3]),
                "t_min": float(cells[6]),
                "first": float(cells[8]),
                "median": float(cells[9]),
                "last": float(cells[7]),
                "cpu_bound": "CPU-bound" in cells[13],
                "loss": float(loss.group(1)) / 100 if loss else 0.0,
            }
        )
    return rows


def scenario_for(
    row: dict[str, Any], startup: float, seed: int, picker_block: int = 16 * 1024,
    dt: float = 0.01,
) -> Scenario:
    n = row["n"]
    return Scenario(
        n=n,
        size=row["size"],
        rate_mbit=row["rate"],
        slow_count=max(1, n // 4) if row["scenario"] == "hetero" else 0,
        loss=row["loss"],
        startup=startup,
        seed=seed,
        picker_block=picker_block,
        dt=dt,
        lean=True,  # the same run event for event (tests/sim), less memory
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sim_calibrate")
    p.add_argument("--startup", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", default="", help="comma-separated N to keep")
    p.add_argument(
        "--skip-cpu-bound", action="store_true", help="only rows the lab ran below 70 % CPU"
    )
    p.add_argument(
        "--picker-block", type=parse_size, default=16 * 1024,
        help="the picker's block (a coarsening past 16KiB, docs/sim.md)",
    )
    p.add_argument("--dt", type=float, default=0.01, help="the network's step")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not 16 * 1024 <= args.picker_block <= 256 * 1024 or args.picker_block % (16 * 1024):
        print("error: --picker-block must be a multiple of 16KiB up to 256KiB", file=sys.stderr)
        return 2
    if not 0 < args.dt <= 1:
        print("error: --dt must be within (0, 1] seconds", file=sys.stderr)
        return 2
    try:
        rows = lab_rows()
    except OSError as exc:
        print(f"error: cannot read {TABLE}: {exc.strerror}", file=sys.stderr)
        return 1
    keep = {int(x) for x in args.only.split(",") if x.strip().isdigit()}
    if keep:
        rows = [r for r in rows if r["n"] in keep]
    if args.skip_cpu_bound:
        rows = [r for r in rows if not r["cpu_bound"]]
    if not args.json:
        print(
            "| scenario | N | S MiB | R | T_min | lab first / p50 / last | "
            "sim first / p50 / last | last: sim vs lab | lab CPU-bound | sim CPU s |"
        )
        print("|---" * 10 + "|")
    for row in rows:
        started = time.perf_counter()
        cpu = time.process_time()
        result = simulate(
            scenario_for(row, args.startup, args.seed, args.picker_block, args.dt)
        )
        s = result.summary()
        diff = (s["last"] - row["last"]) / row["last"]
        out = {**row, "sim": s, "last_diff": round(diff, 3)}
        out["wall_s"] = round(time.perf_counter() - started, 1)
        out["cpu_s"] = round(time.process_time() - cpu, 1)
        if args.json:
            print(json.dumps(out), flush=True)
            continue
        print(
            f"| {row['scenario']} | {row['n']} | {row['size'] // MIB} | {row['rate']:g} | "
            f"{row['t_min']} | {row['first']} / {row['median']} / {row['last']} | "
            f"{s['first']:.1f} / {s['p50']:.1f} / {s['last']:.1f} | {diff:+.0%} | "
            f"{'yes' if row['cpu_bound'] else 'no'} | {out['cpu_s']} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
