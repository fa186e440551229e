"""What the operator sees: a live rich view, the final per-host table, and --json."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import AsyncIterator
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from roost.core.inert import inert
from roost.deploy.config import parse_rate
from roost.deploy.dryrun import need_bytes
from roost.deploy.host import HostRun
from roost.deploy.origins import origin_rows
from roost.deploy.rollout import placement
from roost.deploy.state import Deploy
from roost.deploy.ui import inert_text, print_reasons
from roost.target.protocol import HealthResult, HookRecord, HostStatus, Verdict

STYLE = {
    HostStatus.OK: "green",
    HostStatus.ACTIVATED: "green",
    HostStatus.STAGED: "cyan",
    HostStatus.FETCHING: "yellow",
    HostStatus.FAILED: "bold red",
    HostStatus.NOT_ACTIVATED: "magenta",
    HostStatus.ROLLED_BACK: "magenta",
    HostStatus.REFUSED: "magenta",
    HostStatus.WOULD_DEPLOY: "green",
    HostStatus.WOULD_SKIP: "cyan",
}


def _rate(bps: float) -> str:
    for unit in ("B/s", "KB/s", "MB/s", "GB/s"):
        if bps < 1000 or unit == "GB/s":
            return f"{bps:.1f} {unit}"
        bps /= 1000
    return f"{bps:.1f}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f}"


_DONE = frozenset((HostStatus.STAGED, HostStatus.OK, HostStatus.ACTIVATED,
                   HostStatus.NOT_ACTIVATED))
_RUNNING = frozenset((HostStatus.CONNECTING, HostStatus.FETCHING))


def progress(deploy: Deploy) -> dict[str, Any]:
    """The live panel's figures, in one pass over the hosts (it runs every redraw)."""
    size = deploy.payload.manifest.size if deploy.payload else 0
    done_bytes = 0
    rate = 0.0
    done = failed = 0
    running: list[HostRun] = []
    for h in deploy.hosts:
        done_bytes += h.bytes_done if h.bytes_done < size else size
        rate += h.rate
        status = h.status
        if status in _RUNNING:
            running.append(h)
        elif status in _DONE:
            done += 1
        elif status is HostStatus.FAILED:
            failed += 1
    total = size * len(deploy.hosts)
    slow = heapq.nsmallest(3, running, key=lambda h: h.bytes_done)
    return {
        "percent": 100.0 * done_bytes / total if total else 0.0,
        "rate": rate,
        "done": done,
        "running": len(running),
        "failed": failed,
        "slowest": [
            (h.spec.name, 100.0 * h.bytes_done / h.bytes_total if h.bytes_total else 0)
            for h in slow
        ],
    }


def redraw_every(hosts: int) -> float:
    """Seconds between live-panel redraws: 4 a second up to 1,000 hosts, then fewer,
    so that a 10,000-host deploy spends ~0.5 % of its one thread on the panel
    (about 8 ms a redraw at 10,000 hosts), not 3 %."""
    return min(2.0, max(0.25, hosts / 4000))


def live_panel(deploy: Deploy) -> Group:
    p = progress(deploy)
    width = 24
    filled = int(width * p["percent"] / 100)
    bar = Text("█" * filled + "░" * (width - filled), style="cyan")
    head = Text.assemble(
        (f"roost deploy {deploy.tag} ", "bold"),
        (f"[{deploy.phase}] ", "dim"),
        bar,
        f" {p['percent']:5.1f}%  {_rate(p['rate'])}",
    )
    counts = Text.assemble(
        ("done ", "dim"),
        (str(p["done"]), "green"),
        ("  running ", "dim"),
        (str(p["running"]), "yellow"),
        ("  failed ", "dim"),
        (str(p["failed"]), "red"),
        (f"  of {len(deploy.hosts)} hosts", "dim"),
    )
    parts: list[Any] = [head, counts]
    if (line := _reuse_line(deploy, "to_fetch")) is not None:
        parts.append(line)
    if p["slowest"]:
        parts.append(inert_text(
            Text("slowest: " + ", ".join(f"{n} {pct:.0f}%" for n, pct in p["slowest"]), style="dim")
        ))
    return Group(*parts)


@contextlib.asynccontextmanager
async def live_view(deploy: Deploy, console: Console, enabled: bool) -> AsyncIterator[None]:
    """Redraw the panel 4 times a second while the deploy runs (stderr, transient)."""
    if not enabled:
        yield
        return
    from rich.live import Live

    every = redraw_every(len(deploy.hosts))
    with Live(live_panel(deploy), console=console, refresh_per_second=1 / every,
              transient=True) as live:

        async def refresh() -> None:
            while True:
                live.update(live_panel(deploy))
                await asyncio.sleep(every)

        task = asyncio.create_task(refresh())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def host_rows(deploy: Deploy) -> list[dict[str, Any]]:
    rows = []
    for h in deploy.hosts:
        start = h.times.get("connect")
        end = h.times.get("activated") or h.times.get("staged") or h.times.get("failed")
        fetch_s = (
            h.times["fetched"] - h.times["fetch_started"]
            if "fetched" in h.times and "fetch_started" in h.times
            else None
        )
        rows.append(
            {
                "host": h.spec.name,
                "address": h.spec.address,
                "announce": h.address,
                "status": h.status,
                "phase": h.phase,
                "kind": h.kind or None,
                "reason": h.reason or None,
                "previous": h.previous,
                "current": h.current,
                "batch": h.batch,
                "health": (h.health.to_dict() if h.health is not None else
                           {"checks": {n: c.to_dict() for n, c in h.checks.items()}}
                           if h.checks else None),
                "hooks": [hook.to_dict() for hook in h.hooks],
                "already_had": h.already_had,
                "bytes_done": h.bytes_done,
                "pushed_agent": h.pushed_agent,
                "agent": "pushed" if h.pushed_agent else ("cached" if h.pyz else "-"),
                "fetch_seconds": round(fetch_s, 3) if fetch_s is not None else None,
                # tree releases: placed from kept releases vs. brought by the swarm
                "bytes_reused": h.bytes_reused,
                "files_reused": h.files_reused,
                "files_rehashed": h.files_rehashed,
                "files_refused": h.files_refused,
                "bytes_to_fetch": h.bytes_to_fetch,
                "bytes_fetched": h.bytes_fetched,
                "seconds": round(end - start, 3) if start and end else None,
                "timeline": _since(deploy, h.times),
            }
        )
    return rows


def _since(deploy: Deploy, times: dict[str, float]) -> dict[str, float]:
    """Marks as seconds since the deploy started, in the order they happened."""
    zero = deploy.times.get("start")
    if zero is None:
        return {}
    return {name: round(t - zero, 3) for name, t in sorted(times.items(), key=lambda kv: kv[1])}


def timings(deploy: Deploy) -> dict[str, Any]:
    t = deploy.times
    out: dict[str, Any] = {}

    def span(a: str, b: str) -> float | None:
        return round(t[b] - t[a], 3) if a in t and b in t else None

    out["pack_and_hash"] = span("start", "packed")
    out["tracker_and_origin"] = span("packed", "origin_started")
    starts = [h.times["fetch_started"] for h in deploy.hosts if "fetch_started" in h.times]
    connects = [h.times["connect"] for h in deploy.hosts if "connect" in h.times]
    fetched = [h.times["fetched"] for h in deploy.hosts if "fetched" in h.times]
    staged = [h.times["staged"] for h in deploy.hosts if "staged" in h.times]
    if starts and connects:
        out["launch"] = round(max(starts) - min(connects), 3)
    if starts and fetched:
        out["transfer"] = round(max(fetched) - min(starts), 3)
    if fetched and staged:
        out["stage_after_last_fetch"] = round(max(staged) - max(fetched), 3)
    out["activate"] = span("fetched", "activated")
    out["cleanup"] = span("activated", "end")
    out["total"] = span("start", "end")
    return out


def bound(deploy: Deploy) -> dict[str, Any] | None:
    """S·8/R: the time one host needs at the link rate; efficiency = bound / transfer."""
    rate_text = (deploy.config.link_rate or deploy.config.download_rate
                 or deploy.config.upload_rate)
    if not rate_text or deploy.payload is None:
        return None
    rate = parse_rate(rate_text)
    if rate <= 0:
        return None
    seconds = deploy.payload.manifest.size / rate
    transfer = timings(deploy).get("transfer")
    # an efficiency only means something when every host got the payload
    total = timings(deploy).get("total") if deploy.exit_code == 0 else None
    return {
        "rate_Bps": rate,
        "bound_seconds": round(seconds, 3),
        "efficiency_transfer": round(seconds / transfer, 3) if transfer else None,
        "efficiency_total": round(seconds / total, 3) if total else None,
    }


def report(deploy: Deploy) -> dict[str, Any]:
    m = deploy.payload.manifest if deploy.payload else None
    return {
        "tag": deploy.tag,
        "dest": deploy.config.dest,
        "deploy_id": deploy.deploy_id,
        "payload": _payload(deploy) if m else None,
        "exit_code": deploy.exit_code,
        "message": deploy.message,
        "activated": deploy.activated,
        "interrupted": deploy.interrupted,
        "min_success": deploy.need,
        "counts": deploy.counts(),
        "dry_run": deploy.config.dry_run,
        "hosts": host_rows(deploy),
        "local_origin": deploy.config.local_origin,
        "origins": origin_rows(deploy.origins),
        "placement": placement(deploy),
        "timings": timings(deploy),
        "timeline": _since(deploy, deploy.times),
        "bound": bound(deploy),
        "bytes": byte_totals(deploy),
    }


def byte_totals(deploy: Deploy) -> dict[str, int | None]:
    """Over every host: bytes reused locally, bytes fetched (None when no host said)."""
    def total(values: list[int | None]) -> int | None:
        known = [v for v in values if v is not None]
        return sum(known) if known else None
    return {
        "reused": total([h.bytes_reused for h in deploy.hosts]),
        "to_fetch": total([h.bytes_to_fetch for h in deploy.hosts]),
        "fetched": total([h.bytes_fetched for h in deploy.hosts]),
    }


def _reuse_line(deploy: Deploy, fetched_key: str = "fetched") -> Text | None:
    totals = byte_totals(deploy)
    if totals["reused"] is None:
        return None
    fetched = totals[fetched_key]
    verb = "would fetch" if fetched_key == "to_fetch" else "fetched"
    return Text(f"reused locally {_size(totals['reused'])}, {verb} "
                f"{_size(fetched or 0)} over the network (all hosts)", style="dim")


def _payload(deploy: Deploy) -> dict[str, Any] | None:
    """The manifest without a tree's entries (a release may list 100,000 of them)."""
    if deploy.payload is None:
        return None
    out = deploy.payload.manifest.to_dict()
    tree = out.pop("tree", None)
    if tree is not None:
        out["entries"] = len(tree["entries"])
        out["info_hash"] = tree["info_hash"]
        out["piece_length"] = tree["piece_length"]
        out["padding"] = deploy.payload.padding
    return out


def final_table(deploy: Deploy, console: Console, notes: list[str] | None = None,
                command: str = "roost deploy") -> None:
    """The per-host table, reasons, timings and bound; `notes` go just before the verdict."""
    if deploy.config.dry_run:
        dry_run_table(deploy, console)
        return
    staged = any(h.batch is not None for h in deploy.hosts)
    table = Table(title=f"{command} {deploy.tag}", title_justify="left")
    tree = any(h.bytes_reused is not None for h in deploy.hosts)
    columns = ["host", *(["batch"] if staged else []), "status", "runs now", "time", "agent",
               *(["reused / fetched"] if tree else [])]
    for column in columns:
        table.add_column(column, no_wrap=True)
    rows = host_rows(deploy)
    for h, row in zip(deploy.hosts, rows, strict=True):
        status = row["status"] + (" (had it)" if row["already_had"] else "")
        if row["kind"]:
            status += f" [{row['kind']}]"
        cells = [Text(row["host"])]
        if staged:
            cells.append(Text(_batch_label(deploy, h.batch)))
        cells += [
            # Text, not a str: rich would read "[disk-full]" as markup and drop it
            Text(status, style=STYLE.get(row["status"], "")),
            Text(row["current"] or "-"),
            Text(f"{row['seconds']:.1f} s" if row["seconds"] is not None else "-"),
            Text(row["agent"]),
            *([_reuse_cell(h)] if tree else []),
        ]
        table.add_row(*map(inert_text, cells))  # host strings: no escapes reach the terminal
    console.print(table)
    print_reasons(console, ((r["host"], r["reason"], r["kind"]) for r in rows))
    origin_lines(deploy, console)
    for h in deploy.hosts:  # what hooks and health checks printed, host by host
        ran: list[HookRecord | HealthResult] = [*h.hooks]
        if h.health is not None and h.health.command is not None:
            ran.append(h.health)
        for hook in ran:
            output = (hook.output or "").rstrip()
            if output:
                verdict = "ok" if hook.exit == 0 else f"exit {hook.exit}"
                console.print(Text(inert(f"{h.spec.name} {hook.phase} "
                                         f"{hook.command!r} ({verdict}):"), style="dim"))
                console.print(Text(inert("  " + output.replace("\n", "\n  "), keep_newlines=True)))
    t = timings(deploy)
    if deploy.payload:
        console.print(
            f"payload {_size(deploy.payload.manifest.size)} "
            f"({deploy.payload.manifest.format}); "
            + ", ".join(f"{k} {v:.2f} s" for k, v in t.items() if v is not None)
        )
    if (reuse := _reuse_line(deploy)) is not None:
        console.print(reuse)
    b = bound(deploy)
    if b and b["efficiency_transfer"]:
        whole = b["efficiency_total"]  # None when the deploy failed somewhere
        console.print(
            f"bound S·8/R = {b['bound_seconds']:.2f} s; efficiency "
            f"{b['efficiency_transfer']:.2f} (transfer)"
            + (f", {whole:.2f} (whole deploy)" if whole is not None else "")
        )
    if deploy.activated and any(h.batch is not None for h in deploy.hosts):
        console.print(Text(inert("runs now: " + "; ".join(
            f"{tag}: {', '.join(names)}" for tag, names in placement(deploy).items()))))
    for note in notes or []:
        console.print(Text(note))
    style = "green" if deploy.exit_code == 0 else "red"
    console.print(Text(inert(f"{deploy.message} (exit {deploy.exit_code})"), style=style))


def origin_lines(deploy: Deploy, console: Console) -> None:
    """One line per --origin host: seeded (and how much), or why it was dropped."""
    for o in deploy.origins:
        head = Text.assemble(("origin ", "dim"), (inert(o.name), "bold"), ": ")
        if o.failed:
            head.append(inert(f"dropped: {o.run.reason} [{o.run.kind}]"), style="red")
        elif o.uploaded is not None:
            head.append(inert(f"{o.state}; uploaded {_size(o.uploaded)}"
                              + (f" from {o.address}" if o.address else "")))
        else:
            head.append(inert(o.detail or str(o.state)))
        console.print(head)
    if deploy.origins and not deploy.config.local_origin:
        console.print(Text("this machine did not seed (--no-local-origin)", style="dim"))


def _reuse_cell(h: Any) -> Text:
    if h.bytes_reused is None:
        return Text("-")
    fetched = h.bytes_fetched if h.bytes_fetched is not None else h.bytes_to_fetch
    return Text(f"{_size(h.bytes_reused)} / {_size(fetched or 0)}")


def _batch_label(deploy: Deploy, batch: int | None) -> str:
    if batch is None:
        return "-"
    return "canary" if batch == 0 and deploy.config.canary else str(batch + (
        0 if deploy.config.canary else 1))


CHECKS = ("python", "disk", "writable", "port", "clock", "lock")


def dry_run_table(deploy: Deploy, console: Console) -> None:
    """One row per host: each preflight check, and what the deploy would do there."""
    table = Table(title=f"roost deploy {deploy.tag} --dry-run (nothing changed)",
                  title_justify="left")
    for column in ("host", *CHECKS, "runs now", "would"):
        table.add_column(column, no_wrap=column not in ("would", "port", "disk"),
                         min_width=len(column))
    colour = {Verdict.OK: "green", Verdict.WARN: "yellow", Verdict.FAIL: "bold red"}
    for h in deploy.hosts:
        cells = [Text(h.spec.name)]
        for name in CHECKS:
            c = h.checks.get(name)
            cells.append(Text(c.detail, style=colour[c.verdict]) if c else Text("-"))
        fetch = f"fetch {deploy.tag}"
        if h.bytes_to_fetch is not None:  # a tree: what this host lacks, after reuse
            fetch += (f" ({_size(h.bytes_to_fetch)} over the network, "
                      f"{_size(h.bytes_reused or 0)} reused)")
        would = (Text("fail", style="bold red") if h.failed
                 else Text(f"{h.reason or fetch + ', then switch'}"))
        cells += [Text(h.current or "-"), would]
        table.add_row(*map(inert_text, cells))
    console.print(table)
    print_reasons(console, ((h.spec.name, h.reason, h.kind) for h in deploy.hosts if h.failed))
    origin_lines(deploy, console)
    if deploy.payload:
        console.print(f"payload {_size(deploy.payload.manifest.size)} "
                      f"({deploy.payload.manifest.format}); a host needs "
                      f"{_size(need_bytes(deploy))} free to fetch and unpack it")
        if (line := _reuse_line(deploy, "to_fetch")) is not None:
            console.print(line)
    style = "green" if deploy.exit_code == 0 else "red"
    console.print(Text(inert(f"{deploy.message} (exit {deploy.exit_code})"), style=style))
