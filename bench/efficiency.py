"""Efficiency benchmark: distribute S bytes from one origin to N receivers.

Usage (root; see docs/lab.md):

    python -m bench.efficiency --n 8 --size 64MiB --rate 100 --tools aria2c,libtorrent,http
    python -m bench.efficiency --matrix            # the full matrix, about an hour

For every (scenario, N, S, R) a fresh lab of N+1 hosts is built; host h0 is
the origin. Every tool gets the same payload (deterministic pseudo-random
bytes), the same torrent and piece size, and the same t0 rule (the clock
starts once the last receiver process is launched). Reported per tool: time
until all hosts hold a verified copy (T_all), first / median / p99 host
completion, efficiency = T_min / T_all with T_min the fluid bound of
design.md, and whole-machine CPU (avg and peak, /proc/stat). Results are
appended to <out>/efficiency.jsonl. A --matrix run rewrites the published
table and plot, <out>/efficiency.md and .png, from its rows; any other run
writes its own to <out>/efficiency-last.md and .png (not committed), so a
single run never replaces the matrix that the README cites.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.lab import Lab, LabError, NotRun, selfcheck
from bench.tools import TOOLS, RoostTool, RunContext, Tool
from bench.tools.metainfo import make_torrent
from bench.tools.runner import ToolResult, lower_bound_s, run_tool
from bench.tools.tracker import announce_url

MiB = 1 << 20
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
SCENARIOS = ("equal", "hetero", "loss", "latency")
HTTP_MAX_MATRIX_SIZE = 64 * MiB
TOOL_COLORS = {"roost": "tab:blue", "aria2c": "tab:orange", "libtorrent": "tab:green",
               "http": "tab:red", "roost-tls": "tab:purple"}
CPU_BOUND_AVG = 0.70  # machine CPU average above which a row is flagged CPU-bound


@dataclass(frozen=True)
class Config:
    scenario: str
    n: int  # receivers
    size: int
    rate_mbit: float
    loss_pct: float = 0.0

    def slow_hosts(self) -> dict[int, float]:
        """hetero: a quarter of the receivers (the last ones) at R/10."""
        if self.scenario != "hetero":
            return {}
        k = max(1, self.n // 4)
        return {i: self.rate_mbit / 10 for i in range(self.n + 1 - k, self.n + 1)}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(|B|KiB|MiB|GiB|K|M|G)", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 64MiB)")
    mult = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": MiB, "mib": MiB,
            "g": 1 << 30, "gib": 1 << 30}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def _csv(conv: Any) -> Any:
    return lambda s: [conv(x) for x in s.split(",") if x]


def make_payload(path: Path, size: int, seed: int = 5) -> str:
    """Write `size` deterministic pseudo-random bytes; return their SHA-256."""
    rng = random.Random(seed)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 4 * MiB))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


def build_matrix(rates: list[float], tools: list[str]) -> list[tuple[Config, list[str]]]:
    out: list[tuple[Config, list[str]]] = []
    for rate in rates:
        for n in (8, 16, 32):
            for size in (64 * MiB, 256 * MiB):
                t = [x for x in tools if x != "http" or size <= HTTP_MAX_MATRIX_SIZE]
                out.append((Config("equal", n, size, rate), t))
    headline = rates[-1]
    no_http = [x for x in tools if x != "http"]
    # hetero's bound is 10 S/R (the slow hosts' download): run it at the fast rate
    out.append((Config("hetero", 16, 64 * MiB, rates[0]), no_http))
    out.append((Config("loss", 16, 64 * MiB, headline, loss_pct=2.0), no_http))
    return out


def report_from_jsonl(out: Path) -> int:
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    commands: dict[str, None] = {}
    for line in (out / "efficiency.jsonl").read_text().splitlines():
        row = json.loads(line)
        latest[(row["scenario"], row["n"], row["size"], row["rate_mbit"], row["tool"])] = row
    rows = list(latest.values())
    for r in rows:
        commands.setdefault(r.get("command", "?"), None)
    write_markdown(out / "efficiency.md", rows, " ; ".join(commands))
    write_plot(out / "efficiency.png", rows)
    print(f"wrote {out / 'efficiency.md'} and efficiency.png from {len(rows)} rows")
    return 0


def print_plan(plan: list[tuple[Config, list[str]]]) -> None:
    """Each run and a rough duration: swarm tools at efficiency 0.5, http at N bounds."""
    total = 0.0
    for cfg, names in plan:
        up = [cfg.slow_hosts().get(i, cfg.rate_mbit) for i in range(1, cfg.n + 1)]
        t_min = lower_bound_s(cfg.size, cfg.rate_mbit, up, up)
        est = sum((cfg.n * t_min if t == "http" else 2 * t_min) + 15 for t in names) + 10
        total += est
        print(f"{cfg.scenario:7} N={cfg.n:<3} S={cfg.size // MiB:>4}MiB R={cfg.rate_mbit:g}"
              f"{f' loss={cfg.loss_pct:g}%' if cfg.loss_pct else ''}  T_min={t_min:6.1f}s "
              f"tools={','.join(names)}  ~{est / 60:.1f} min")
    print(f"total ~{total / 60:.0f} min")


def run_config(cfg: Config, tools: list[Tool], args: argparse.Namespace,
               log: Any) -> list[dict[str, Any]]:
    base = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "scenario": cfg.scenario, "n": cfg.n, "size": cfg.size, "rate_mbit": cfg.rate_mbit,
            "loss_pct": cfg.loss_pct, "piece_size": args.piece_size, "shaper": args.shaper,
            "slow_hosts": {f"h{i}": r for i, r in cfg.slow_hosts().items()}}
    rows: list[dict[str, Any]] = []
    try:
        lab = Lab(cfg.n + 1, cfg.rate_mbit, loss_pct=cfg.loss_pct,
                  slow_hosts=cfg.slow_hosts(), shaper=args.shaper,
                  latency_ms=20.0 if cfg.scenario == "latency" else 0.0)
    except NotRun as e:
        rows = [{**base, "tool": t.name, "status": "not run", "reason": str(e),
                 "command": args.command} for t in tools]
        for row in rows:
            _append_jsonl(args.out / "efficiency.jsonl", row)
        return rows
    with lab:
        ceiling = None
        if not args.no_selfcheck:
            mbit = selfcheck.single_flow_mbit(lab, lab.hosts[0], lab.hosts[1], seconds=3)
            ceiling = mbit / lab.hosts[1].down_mbit
            log(f"  link ceiling (one iperf3 flow h0->h1): {mbit:.1f} Mbit/s = {ceiling:.3f} R")
        assert lab.tmpdir is not None
        origin_dir = lab.tmpdir / "origin"
        origin_dir.mkdir()
        payload = origin_dir / "payload.bin"
        sha = make_payload(payload, cfg.size)
        torrent = lab.tmpdir / "payload.torrent"
        mk_argv = make_torrent(payload, torrent, announce_url(lab.origin.ip), args.piece_size)
        t_min = lower_bound_s(
            cfg.size, lab.origin.up_mbit, [h.up_mbit for h in lab.receivers],
            [h.down_mbit for h in lab.receivers])
        for tool in tools:
            run_dir = lab.tmpdir / f"run-{tool.name}"
            (run_dir / "done").mkdir(parents=True)
            # Each tool seeds from its own hard link of the same payload.
            tool_origin = run_dir / "origin"
            tool_origin.mkdir()
            os.link(payload, tool_origin / payload.name)
            ctx = RunContext(lab=lab, payload=tool_origin / payload.name, sha256=sha,
                             size=cfg.size, piece_size=args.piece_size, torrent=torrent,
                             run_dir=run_dir, done_dir=run_dir / "done")
            timeout = args.timeout or max(60.0, 4 * tool.expected_factor(cfg.n) * t_min + 60)
            log(f"  {tool.name}: running (bound {t_min:.1f}s, timeout {timeout:.0f}s)")
            res = run_tool(tool, lab, ctx, timeout)
            if args.keep_logs:
                run = f"{cfg.scenario}-n{cfg.n}-{cfg.size // MiB}MiB-r{cfg.rate_mbit:g}-{tool.name}"
                keep = args.keep_logs / run
                keep.mkdir(parents=True, exist_ok=True)
                for log_file in run_dir.glob("*.log"):
                    shutil.copy2(log_file, keep / log_file.name)
            row = _row(base, res, t_min, cfg.n, ceiling, mk_argv, sha)
            row["command"] = args.command
            log(f"  {tool.name}: {row['status']} {_short(row)}")
            rows.append(row)
            _append_jsonl(args.out / "efficiency.jsonl", row)
            time.sleep(1.0)  # let sockets of the previous tool drain
    return rows


def _row(base: dict[str, Any], res: ToolResult, t_min: float, n: int, ceiling: float | None,
         mk_argv: list[str], sha: str) -> dict[str, Any]:
    m = res.metrics(t_min, n)
    cpu_bound = res.cpu_avg is not None and res.cpu_avg > CPU_BOUND_AVG
    return {
        **base, "tool": res.tool, "status": res.status, "reason": res.reason,
        "t_min": t_min, **m,
        "cpu_avg": res.cpu_avg, "cpu_peak": res.cpu_peak, "cpu_procs": res.cpu_procs,
        "cpu_bound": cpu_bound,
        # every process of the tool (its cgroup), CPU seconds per GiB delivered to receivers
        "cpu_tool_s": res.cpu_group_s, "cpu_tool_window_s": res.cpu_group_window_s,
        "cpu_verify_s": res.cpu_verify_s, "cpu_by_command": res.cpu_by_command,
        "cpu_s_per_gib": (res.cpu_group_s / (n * base["size"] / (1 << 30))
                          if res.cpu_group_s is not None and res.status == "ok" else None),
        "cpu_tool_note": res.cpu_group_reason,
        "cpu_tool_user_s": res.cpu_group_user_s, "cpu_tool_sys_s": res.cpu_group_sys_s,
        "link_ceiling": ceiling,
        "host_times": dict(sorted(res.times.items(), key=lambda kv: int(kv[0][1:]))),
        "host_t_complete": res.t_complete,
        "commands": {**res.commands, "mktorrent": mk_argv},
        "payload_sha256": sha, "wall_s": res.wall_s,
        "loop_lag_max_s": res.loop_lag,  # per process: its largest event-loop lag
        "loop_lag_worst_s": max(res.loop_lag.values()) if res.loop_lag else None,
        "loop_stalls": res.loop_stalls,
    }


def _short(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        return str(row.get("reason", ""))
    lag = row.get("loop_lag_worst_s")
    return (f"T_all {row['t_all']:.1f}s eff {row['efficiency']:.3f} "
            f"cpu {row['cpu_avg']:.0%}/{row['cpu_peak']:.0%}"
            + (f" tool cpu {row['cpu_tool_s']:.1f}s = {row['cpu_s_per_gib']:.2f} s/GiB"
               if row.get("cpu_s_per_gib") is not None else "")
            + (f" (user {row['cpu_tool_user_s']:.1f}s sys {row['cpu_tool_sys_s']:.1f}s)"
               if row.get("cpu_tool_user_s") is not None else "")
            + (f" loop lag max {lag:.2f}s ({row['loop_stalls']} stalls)" if lag is not None
               else ""))


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def _when(rows: list[dict[str, Any]]) -> str:
    stamps = sorted(str(r["when"]) for r in rows if r.get("when"))
    if not stamps:
        return f"at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
    return f"from {stamps[0]} to {stamps[-1]}" if stamps[0] != stamps[-1] else f"at {stamps[0]}"


def _fmt(x: Any, spec: str = ".1f") -> str:
    return "–" if x is None else format(x, spec)


def write_markdown(path: Path, rows: list[dict[str, Any]], command: str) -> None:
    ceilings = sorted({round(r["link_ceiling"], 3) for r in rows if r.get("link_ceiling")})
    lines = [
        "# roost efficiency benchmark",
        "",
        f"Command{'s' if ' ; ' in command else ''}: `{command}`  ",
        f"Runs {_when(rows)} on "
        f"{platform.node()} ({os.cpu_count()} cores, Linux {platform.release()}).  ",
        "Efficiency = T_min / T_all, T_min the fluid bound of design.md at the configured "
        "rate; times in seconds after the last receiver was launched; CPU is the whole "
        "machine (avg / peak over 0.5 s samples of /proc/stat) during the run, and in "
        "parentheses the share of all cores used by the run's own processes (the rest is "
        "the kernel's packet work and anything else on the machine). Tool CPU is the "
        "cgroup v2 count of every process the tool's run started (origin, tracker, "
        "receivers, wrappers, hooks), from its first process until the last host was "
        "verified, less the receivers' verification hashing, per GiB delivered (N x S).  ",
        "Measured single-flow link ceiling (iperf3, fraction of configured rate): "
        + (", ".join(f"{c:.3f}" for c in ceilings) or "not measured") + ".",
        "",
        "| scenario | N | S | R Mbit/s | tool | status | T_min | T_all | first | median "
        "| p99 | efficiency | CPU avg / peak (own) | tool CPU s/GiB | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cpu = ("–" if r.get("cpu_avg") is None
               else f"{r['cpu_avg']:.0%} / {r['cpu_peak']:.0%} ({r.get('cpu_procs') or 0:.0%})")
        notes = []
        if r.get("slow_hosts"):
            notes.append(f"{len(r['slow_hosts'])} hosts at R/10")
        if r.get("loss_pct"):
            notes.append(f"{r['loss_pct']:g}% loss")
        if r["status"] != "ok":
            notes.append(str(r.get("reason", "")))
        elif r.get("cpu_bound"):
            notes.append(f"CPU-bound: machine CPU avg > {CPU_BOUND_AVG:.0%}")
        note = "; ".join(notes)
        lines.append(
            f"| {r['scenario']} | {r['n']} | {r['size'] // MiB} MiB | {r['rate_mbit']:g} "
            f"| {r['tool']} | {r['status']} | {_fmt(r.get('t_min'))} | {_fmt(r.get('t_all'))} "
            f"| {_fmt(r.get('first'))} | {_fmt(r.get('median'))} | {_fmt(r.get('p99'))} "
            f"| {_fmt(r.get('efficiency'), '.3f')} | {cpu} | {_fmt(r.get('cpu_s_per_gib'), '.2f')} "
            f"| {note.replace('|', '/')[:160]} |")
    lines += ["", "Exact command lines per tool are in efficiency.jsonl (`commands`).", ""]
    path.write_text("\n".join(lines))


def write_plot(path: Path, rows: list[dict[str, Any]]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return False
    configs: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["scenario"], r["n"], r["size"], r["rate_mbit"])
        configs.setdefault(key, []).append(r)
    k = max(1, len(configs))
    cols = min(3, k)
    nrows = (k + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, (key, rs) in zip(axes.flat, configs.items(), strict=False):
        scen, n, size, rate = key
        widest = 1.0
        for r in rs:
            times = sorted(r.get("host_times", {}).values())
            if r["status"] != "ok" or not times:
                continue
            xs = [t / r["t_min"] for t in times]
            ys = [(i + 1) / n for i in range(len(xs))]
            widest = max(widest, xs[-1])
            ax.step([0, *xs], [0, *ys], where="post", color=TOOL_COLORS.get(r["tool"]),
                    label=f"{r['tool']} (eff {r['efficiency']:.2f})")
        ax.axvline(1.0, color="k", linestyle="--", linewidth=1, label="bound T_min")
        ax.set_title(f"{scen}: N={n}, {size // MiB} MiB, {rate:g} Mbit/s", fontsize=9)
        ax.set_xlabel("host completion time / T_min")
        ax.set_ylabel("fraction of hosts done")
        if widest <= 4:
            ax.set_xlim(0, widest * 1.05)
        else:
            _log_x(ax, ticker)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7, loc="best")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[k:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _log_x(ax: Any, ticker: Any) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(ticker.FuncFormatter(
        lambda x, _: f"{x:g}" if f"{x:g}"[0] in "235" else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=_csv(int), default=[8], help="receivers, comma list")
    ap.add_argument("--size", type=_csv(parse_size), default=[64 * MiB],
                    help="payload sizes, comma list (e.g. 64MiB,256MiB)")
    ap.add_argument("--rate", type=_csv(float), default=[100.0], help="link Mbit/s, comma list")
    ap.add_argument("--tools", type=_csv(str), default=["roost", "aria2c", "libtorrent", "http"])
    ap.add_argument("--scenario", type=_csv(str), default=["equal"],
                    help=f"comma list of {', '.join(SCENARIOS)}")
    ap.add_argument("--loss", type=float, default=2.0, help="loss %% for the loss scenario")
    ap.add_argument("--piece-size", type=parse_size, default=256 * 1024)
    ap.add_argument("--shaper", choices=("htb", "tbf"), default="htb")
    ap.add_argument("--matrix", action="store_true",
                    help="N in 8,16,32 x S in 64,256 MiB x each --rate (default 100,40), "
                    "plus hetero (N=16, 64 MiB, first rate) and loss (N=16, 64 MiB, 2%%, "
                    "last rate); http only at 64 MiB")
    ap.add_argument("--timeout", type=float, default=0, help="per tool run (0: from the bound)")
    ap.add_argument("--report", action="store_true",
                    help="run nothing; rewrite efficiency.md/.png from the latest row per "
                    "(scenario, N, S, R, tool) in <out>/efficiency.jsonl")
    ap.add_argument("--plan", action="store_true",
                    help="print the runs and a rough time estimate, run nothing")
    ap.add_argument("--no-selfcheck", action="store_true", help="skip the iperf3 ceiling check")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--keep-logs", type=Path, metavar="DIR",
                    help="copy every process's log of each run here (the lab's copy is removed)")
    ap.add_argument("--roost-seed-cmd",
                    help="template for roost's origin (see bench/tools/roost.py)")
    ap.add_argument("--roost-fetch-cmd", help="template for roost's receivers")
    args = ap.parse_args(argv)
    if args.report:
        return report_from_jsonl(args.out)
    if os.geteuid() != 0 and not args.plan:
        print("bench.efficiency needs root (network namespaces, tc)", file=sys.stderr)
        return 2
    unknown = [t for t in args.tools if t not in TOOLS]
    if unknown:
        ap.error(f"unknown tools {unknown}; choose from {', '.join(TOOLS)}")
    bad = [s for s in args.scenario if s not in SCENARIOS]
    if bad:
        ap.error(f"unknown scenarios {bad}; choose from {', '.join(SCENARIOS)}")

    def make_tool(name: str) -> Tool:
        if name == "roost":
            return RoostTool(
                shlex.split(args.roost_seed_cmd) if args.roost_seed_cmd else None,
                shlex.split(args.roost_fetch_cmd) if args.roost_fetch_cmd else None)
        return TOOLS[name]()

    if args.matrix:
        rates = args.rate if args.rate != [100.0] else [100.0, 40.0]
        plan = build_matrix(rates, args.tools)
    else:
        plan = [(Config(s, n, size, r, args.loss if s == "loss" else 0.0), args.tools)
                for s in args.scenario for r in args.rate for n in args.n for size in args.size]
    if args.plan:
        print_plan(plan)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.efficiency " + shlex.join(argv if argv is not None else sys.argv[1:])
    args.command = command

    def log(msg: str) -> None:
        print(msg, flush=True)

    stem = "efficiency" if args.matrix else "efficiency-last"
    rows: list[dict[str, Any]] = []
    for cfg, names in plan:
        log(f"{cfg.scenario}: N={cfg.n} S={cfg.size // MiB}MiB R={cfg.rate_mbit:g}Mbit/s")
        try:
            rows += run_config(cfg, [make_tool(t) for t in names], args, log)
        except (LabError, OSError, subprocess.SubprocessError) as e:
            log(f"  lab failed: {e}")
            rows.append({"scenario": cfg.scenario, "n": cfg.n, "size": cfg.size,
                         "rate_mbit": cfg.rate_mbit, "tool": "-", "status": "failed",
                         "reason": f"lab: {e}"})
        write_markdown(args.out / f"{stem}.md", rows, command)
        write_plot(args.out / f"{stem}.png", rows)
    log(f"wrote {args.out / 'efficiency.jsonl'}, {stem}.md, {stem}.png")
    return 0 if all(r["status"] != "failed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
