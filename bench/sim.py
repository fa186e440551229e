"""Simulate a roost deploy at fleet scale with roost's own core (roost.sim).

    python -m bench.sim --n 1000 --size 1GiB --rate 100
    python -m bench.sim --n 100,1000 --size 1GiB --rate 100 --slow-frac 0.1 --json
    python -m bench.sim --n 1000 --size 1GiB --rate 100 --piece 16MiB --big-block 1MiB

Prints, per N, the first / p50 / p99 / last host completion time against the
bound (S*8/R for equal links; design.md's T_min otherwise) and the tracker's
load. The piece length is roost's own choice for the payload (roost pack:
1 MiB for 1 GiB) unless --piece says otherwise; bigger pieces and wire
blocks are the simulator's coarsening (docs/sim.md). `--cdf SVG` draws the
completion-time CDFs (bench/sim_plot.py, stdlib only).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from typing import Any

from bench import sim_plot
from bench.efficiency import parse_size
from roost.core.metainfo import MetainfoError, check_piece_length, choose_piece_length
from roost.sim.scenario import Scenario
from roost.sim.world import Result, SimError, World, simulate


def _csv_int(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad list of integers {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("N must be at least 1")
    return values


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad fraction {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"fraction out of [0, 1]: {text!r}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad number {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.sim", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=_csv_int, default=[100], help="receivers, comma separated")
    p.add_argument("--size", type=parse_size, default=parse_size("64MiB"))
    p.add_argument("--rate", type=_positive, default=100.0, help="link rate, Mbit/s")
    p.add_argument("--piece", type=parse_size, default=None, help="piece length (default: roost's)")
    p.add_argument("--big-block", type=parse_size, default=256 * 1024, help="wire block size")
    p.add_argument(
        "--picker-block", type=parse_size, default=16 * 1024,
        help="the picker's block (16KiB as the engine; up to --big-block: a coarsening)",
    )
    p.add_argument("--slow-frac", type=_fraction, default=0.0)
    p.add_argument("--slow-count", type=int, default=None)
    p.add_argument("--slow-factor", type=_positive, default=10.0)
    p.add_argument("--die-frac", type=_fraction, default=0.0)
    p.add_argument("--restart-after", type=_positive, default=None)
    p.add_argument("--late-frac", type=_fraction, default=0.0)
    p.add_argument("--late-window", type=float, default=0.0)
    p.add_argument("--zones", type=int, default=1)
    p.add_argument("--zone-frac", type=_fraction, default=0.1)
    p.add_argument("--no-zone-aware", action="store_true",
                   help="members are not told their zone (MemberConfig.local_nets)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="one way")
    p.add_argument("--loss", type=_fraction, default=0.0, help="packet loss probability")
    p.add_argument("--startup", type=float, default=0.0, help="seconds to a host's start")
    p.add_argument("--startup-jitter", type=float, default=0.0)
    p.add_argument("--ceiling", type=_fraction, default=0.956)
    p.add_argument("--dt", type=_positive, default=0.01)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--max-time",
        type=float,
        default=0.0,
        help="stop after this many simulated seconds (default: 20 x bound + 60)",
    )
    p.add_argument(
        "--wall-limit", type=_positive, default=None,
        help="end a run after this many wall seconds, reporting the hosts done so far",
    )
    p.add_argument(
        "--progress", action="store_true",
        help="a line on stderr every 30 wall s: simulated s, hosts done, CPU s",
    )
    p.add_argument("--no-super-seed", action="store_true")
    p.add_argument("--origin-slots", type=int, default=0,
                   help="the origin's upload slots (roost seed --unchoke-slots; default: "
                   "every peer)")
    p.add_argument(
        "--no-spread-bursts",
        action="store_true",
        help="members are not told N, so they never spread started/completed",
    )
    p.add_argument(
        "--lean", action="store_true", help="count blocks, keep no piece bytes (fleet sizes)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per N")
    p.add_argument(
        "--cdf", default=None, help="write an SVG of completion-time CDFs (+ .json of the curves)"
    )
    p.add_argument(
        "--cdf-with",
        default=[],
        type=lambda s: [x for x in s.split(",") if x],
        help="also draw the curves of these earlier --cdf .json files",
    )
    return p


def scenario_for(args: argparse.Namespace, n: int) -> Scenario:
    return Scenario(
        n=n,
        size=args.size,
        rate_mbit=args.rate,
        piece_length=args.piece or choose_piece_length(args.size),
        big_block=args.big_block,
        picker_block=args.picker_block,
        ceiling=args.ceiling,
        slow_frac=args.slow_frac,
        slow_count=args.slow_count,
        slow_factor=args.slow_factor,
        die_frac=args.die_frac,
        restart_after=args.restart_after,
        late_frac=args.late_frac,
        late_window=args.late_window,
        zones=args.zones,
        zone_frac=args.zone_frac,
        zone_aware=not args.no_zone_aware,
        latency=args.latency_ms / 1000,
        loss=args.loss,
        startup=args.startup,
        startup_jitter=args.startup_jitter,
        seed=args.seed,
        dt=args.dt,
        super_seed=not args.no_super_seed,
        origin_slots=args.origin_slots or None,
        lean=args.lean,
        spread_bursts=not args.no_spread_bursts,
        max_time=args.max_time,
    )


def row(args: argparse.Namespace, result: Result, wall: float) -> dict[str, Any]:
    out = result.summary()
    out["size"] = args.size
    out["rate_mbit"] = args.rate
    out["piece"] = result.scenario.piece_length
    out["big_block"] = args.big_block
    out["picker_block"] = args.picker_block
    out["pieces"] = result.pieces
    out["wall_s"] = round(wall, 1)
    out["sim_s"] = round(result.end_time, 2)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| N | pieces | bound s | first | p50 | p99 | last | dead | unfinished"
        " | announces/s (peak) | wall s |"
    )
    lines = [head, "|---" * 11 + "|"]
    for r in rows:
        cell = _cells(r)
        lines.append(
            f"| {r['n']} | {r['pieces']} | {r['bound']:.2f} | {cell('first')} | {cell('p50')} | "
            f"{cell('p99')} | {cell('last')} | {r['dead']} | {r['unfinished']} | "
            f"{r['announces_per_s']} ({r['peak_announces_per_s']}) | {r['wall_s']} |"
        )
    return "\n".join(lines)


def _cells(r: dict[str, Any]) -> Any:
    def cell(name: str) -> str:
        if name not in r:
            return "-"
        return f"{r[name]:.2f} ({r[name + '_x']:.3f}x)"

    return cell


def curves(results: list[Result]) -> list[dict[str, Any]]:
    """Completion times over the bound, sorted, per run (what the CDF plot draws)."""
    return [
        {
            "label": f"N = {r.scenario.n}, {r.pieces} pieces",
            "x": sorted(round(t / r.bound, 4) for t in r.times.values()),
        }
        for r in results
    ]


def stopper(args: argparse.Namespace, started: float) -> Any:
    """World.run's `stop`: progress lines and the wall-clock limit (None: neither)."""
    if args.wall_limit is None and not args.progress:
        return None

    shown = [0.0]

    def stop(world: World) -> bool:
        wall = time.perf_counter() - started
        if args.progress and wall - shown[0] >= 30:
            shown[0] = wall
            done = world.sc.n - world.pending_receivers
            print(
                f"progress: t={world.now:.2f} s done={done}/{world.sc.n} events={world.events}"
                f" cpu={time.process_time():.0f} s wall={wall:.0f} s",
                file=sys.stderr, flush=True,
            )
        return args.wall_limit is not None and wall > args.wall_limit

    return stop


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    piece = args.piece or choose_piece_length(args.size)
    try:
        check_piece_length(piece)
    except MetainfoError as exc:
        print(f"error: --piece: {exc}", file=sys.stderr)
        return 2
    if not 16 * 1024 <= args.big_block <= 1 << 20:
        print("error: --big-block must be within 16KiB..1MiB", file=sys.stderr)
        return 2
    if not 16 * 1024 <= args.picker_block <= args.big_block or args.picker_block % (16 * 1024):
        print("error: --picker-block must be a multiple of 16KiB, at most --big-block",
              file=sys.stderr)
        return 2
    if args.size < 1:
        print("error: --size must be positive", file=sys.stderr)
        return 2
    if args.max_time < 0:
        print("error: --max-time must be 0 (no limit) or more", file=sys.stderr)
        return 2
    if args.origin_slots < 0:
        print("error: --origin-slots must be 1 or more (0: every peer)", file=sys.stderr)
        return 2
    rows = []
    results = []
    for n in args.n:
        started = time.perf_counter()
        cpu = time.process_time()
        try:
            result = simulate(scenario_for(args, n), stopper(args, started))
        except SimError as exc:
            print(f"error: a simulated member failed: {exc}", file=sys.stderr)
            return 1
        wall = time.perf_counter() - started
        results.append(result)
        r = row(args, result, wall)
        r["cpu_s"] = round(time.process_time() - cpu, 1)  # the measure on a shared machine
        rows.append(r)
        if args.json:
            print(json.dumps(r), flush=True)
    if not args.json:
        print(table(rows))
        for r in rows:
            if "between_zones_mib" in r:
                print(f"N={r['n']}: {r['between_zones_mib']:,} MiB crossed between zones"
                      f" (the need: {r['between_zones_need_mib']:,} MiB)")
    if args.cdf:
        data = curves(results)
        for name in args.cdf_with:
            try:
                with open(name) as f:
                    data += json.load(f)
            except (OSError, ValueError) as exc:
                print(f"error: --cdf-with {name}: {exc}", file=sys.stderr)
                return 1
        with open(args.cdf + ".json", "w") as f:
            json.dump(curves(results), f)
        sim_plot.write(args.cdf, data, sim_plot.TITLE)
    return 0


#: the garbage collector's thresholds for a run from the command line. A
#: simulated fleet holds millions of long-lived objects and makes tuples by the
#: million; at Python's default (700, 10, 10) the collector walked them often
#: enough to cost 12 % of the CPU at N = 1,000 (docs/sim.md, "The
#: event-driven network"). Results do not depend on it.
GC_THRESHOLDS = (50_000, 20, 100)

if __name__ == "__main__":
    gc.set_threshold(*GC_THRESHOLDS)
    sys.exit(main())
