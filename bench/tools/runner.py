"""Run one tool once in a lab and measure it (see bench/efficiency.py).

The clock (t0) starts right after the last receiver has been launched, for
every tool alike. A host's completion time is its ``t_verified - t0`` (the
tool said it was complete and the SHA-256 of its copy matched). All
processes of the run stay alive until every host is done (or the run fails
or times out), then all are stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.lab import Lab, NotRun
from bench.lab.cgroup import CpuGroup
from bench.lab.cpu import ProcessCpuSampler
from bench.lab.procs import pids_in_netns
from bench.tools.base import RunContext, Tool, log_tail

POLL_S = 0.1


@dataclass
class ToolResult:
    tool: str
    status: str  # "ok", "failed" or "not run"
    reason: str = ""
    times: dict[str, float] = field(default_factory=dict)  # host -> seconds after t0
    t_complete: dict[str, float] = field(default_factory=dict)
    cpu_avg: float | None = None
    cpu_peak: float | None = None
    cpu_procs: float | None = None  # the run's own processes, share of all cores
    commands: dict[str, list[str]] = field(default_factory=dict)
    wall_s: float = 0.0
    # per process log (e.g. "h3-receiver"): the largest event-loop lag it reported
    # (roost's loop_stall / loop_lag events; empty for tools that report none)
    loop_lag: dict[str, float] = field(default_factory=dict)
    loop_stalls: int = 0
    # cgroup v2 count of every process the run started (bench.lab.cgroup), seconds,
    # from the first spawn until the last host was verified, less the verification's
    # own SHA-256 (the same for every tool); None where no cgroup could be made
    cpu_group_s: float | None = None
    cpu_group_window_s: float | None = None  # the same count from t0 only
    cpu_verify_s: float = 0.0
    # the group's user and system seconds (verification not taken out of either)
    cpu_group_user_s: float | None = None
    cpu_group_sys_s: float | None = None
    cpu_group_reason: str = ""
    # the live processes' own CPU when the last host was verified, by command
    cpu_by_command: dict[str, float] = field(default_factory=dict)

    def metrics(self, t_min: float, n: int) -> dict[str, Any]:
        if self.status != "ok" or len(self.times) < n:
            return {"t_all": None, "first": None, "median": None, "p99": None,
                    "efficiency": None}
        ts = sorted(self.times.values())
        t_all = ts[-1]
        return {
            "t_all": t_all,
            "first": ts[0],
            "median": statistics.median(ts),
            "p99": ts[max(0, math.ceil(0.99 * len(ts)) - 1)],
            "efficiency": t_min / t_all if t_all > 0 else None,
        }


def lower_bound_s(size: int, origin_up_mbit: float, recv_up: list[float],
                  recv_down: list[float]) -> float:
    """Kumar & Ross fluid bound: max(S/u0, S/d_min, N*S/(u0 + sum u_i)), in seconds."""
    bits = size * 8
    n = len(recv_up)
    return max(
        bits / (origin_up_mbit * 1e6),
        bits / (min(recv_down) * 1e6),
        n * bits / ((origin_up_mbit + sum(recv_up)) * 1e6),
    )


def _read_done(path: Path) -> dict[str, Any] | None:
    try:
        rec: dict[str, Any] = json.loads(path.read_text())
        return rec
    except (OSError, ValueError):
        return None


def run_tool(tool: Tool, lab: Lab, ctx: RunContext, timeout_s: float) -> ToolResult:
    res = ToolResult(tool=tool.name, status="failed")
    start = time.monotonic()
    try:
        tool.check_available()
    except NotRun as e:
        res.status, res.reason = "not run", str(e)
        return res
    receivers = lab.receivers
    group = _cpu_group(lab, tool, res)
    ctx.cpu_group = group
    try:
        tool.start_origin(ctx)
        for host in receivers:
            tool.launch_receiver(ctx, host)
        t0 = time.time()
        at_t0 = group.usage_s() if group is not None else 0.0
        namespaces = [h.netns for h in lab.hosts]
        with ProcessCpuSampler(lambda: pids_in_netns(namespaces)) as cpu:
            _wait_all(ctx, res, t0, timeout_s, tool.receivers_upload)
        res.cpu_avg, res.cpu_peak, res.cpu_procs = cpu.avg, cpu.peak, cpu.procs_avg
        if group is not None:
            res.cpu_by_command = cpu_by_command(group.pids())
            used = group.usage_s()
            res.cpu_group_user_s, res.cpu_group_sys_s = group.user_system_s()
            res.cpu_verify_s = _verify_cpu_s(ctx)
            res.cpu_group_s = used - res.cpu_verify_s
            res.cpu_group_window_s = used - at_t0 - res.cpu_verify_s
    except Exception as e:  # a failing tool is a result, not a crash
        res.status, res.reason = "failed", f"{type(e).__name__}: {e}"
    finally:
        for proc in ctx.procs:
            with contextlib.suppress(Exception):
                lab.stop(proc)
        if group is not None:
            group.close()
        res.commands = dict(ctx.commands)
        res.loop_lag, res.loop_stalls = loop_lags(ctx.run_dir)
        res.wall_s = time.monotonic() - start
        # Receivers' copies can be large (tmpfs): drop them now.
        shutil.rmtree(ctx.run_dir / "data", ignore_errors=True)
    return res


def _cpu_group(lab: Lab, tool: Tool, res: ToolResult) -> CpuGroup | None:
    try:
        return CpuGroup(f"{lab.prefix}-{tool.name}")
    except OSError as e:
        res.cpu_group_reason = f"no per-tool cgroup: {e}"
        return None


def cpu_by_command(pids: list[int]) -> dict[str, float]:
    """CPU seconds (own, user + system) of live processes, summed by a short label
    of their command line (the program, and the roost subcommand or script name)."""
    tck = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        used = (int(fields[11]) + int(fields[12])) / tck
        words = [Path(a.decode(errors="replace")).name for a in argv[:4] if a]
        if words[:1] and words[0].startswith("python"):
            words = [w for w in words[1:] if w not in ("-m", "-u", "-P")][:2]
        label = " ".join(words[:2] if words[:1] == ["roost"] else words[:1]) or "?"
        out[label] = round(out.get(label, 0.0) + used, 3)
    return out


def _verify_cpu_s(ctx: RunContext) -> float:
    """The receivers' verification hashing, from their completion records."""
    total = 0.0
    for host in ctx.lab.receivers:
        rec = _read_done(ctx.done_file(host))
        if rec is not None and isinstance(rec.get("verify_cpu_s"), (int, float)):
            total += float(rec["verify_cpu_s"])
    return total


def loop_lags(run_dir: Path) -> tuple[dict[str, float], int]:
    """The largest event-loop lag each process's log reports, and the stalls (> 1 s
    by default) counted: from `loop_stall` events and the `loop_lag` summary a
    roost process prints when it stops."""
    lags: dict[str, float] = {}
    stalls = 0
    for log_file in sorted(run_dir.glob("*.log")):
        with contextlib.suppress(OSError), open(log_file, errors="replace") as f:
            for line in f:
                if '"loop_' not in line:
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(ev, dict):
                    continue
                lag = ev.get("lag_s") if ev.get("event") == "loop_stall" else (
                    ev.get("max_s") if ev.get("event") == "loop_lag" else None)
                if isinstance(lag, (int, float)):
                    lags[log_file.stem] = max(lags.get(log_file.stem, 0.0), float(lag))
                    stalls += ev.get("event") == "loop_stall"
    return lags, stalls


def _wait_all(
    ctx: RunContext, res: ToolResult, t0: float, timeout_s: float, keeps_uploading: bool
) -> None:
    receivers = ctx.lab.receivers
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for host in receivers:
            if host.name in res.times:
                continue
            rec = _read_done(ctx.done_file(host))
            if rec is None:
                continue
            if not rec.get("sha256_ok"):
                why = rec.get("error") or "sha256 mismatch"
                res.reason = f"{host.name}: copy failed verification ({why})"
                return
            res.times[host.name] = float(rec["t_verified"]) - t0
            res.t_complete[host.name] = float(rec["t_complete"]) - t0
        if len(res.times) == len(receivers):
            res.status = "ok"
            return
        reason = _early_exit(ctx, tool_keeps_uploading=keeps_uploading)
        if reason:
            res.reason = reason
            return
        time.sleep(POLL_S)
    missing = [h.name for h in receivers if h.name not in res.times]
    res.reason = f"timed out after {timeout_s:.0f}s; {len(missing)} hosts not done: " \
                 f"{', '.join(missing[:8])}"


def _early_exit(ctx: RunContext, tool_keeps_uploading: bool) -> str:
    """Why the run cannot finish because one of its processes exited, or ''."""
    for p in ctx.procs:
        if p.poll() is None or p.pid not in ctx.roles:
            continue
        host, role = ctx.roles[p.pid]
        tail = log_tail(ctx.log(host, role))
        if host is ctx.origin:
            return f"origin {role} exited ({p.returncode}): {tail}"
        if not ctx.done_file(host).exists():
            return f"{host.name} {role} exited ({p.returncode}) before completing: {tail}"
        if tool_keeps_uploading:
            return f"{host.name} {role} exited ({p.returncode}) after completing instead " \
                   f"of uploading until all were done: {tail}"
    return ""
