"""`roost status`: which release is current on each host, is roost still running there,
who holds the deploy lock, and the host's deploy history.

Exit codes: 0 every host answered; 1 some host could not be asked (see the table).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from roost.commands.deploy import host_config, host_options
from roost.deploy.fleetops import run_op


def _lock(row: dict[str, Any]) -> str:
    lock = row.get("lock") or {}
    holder = lock.get("holder") or {}
    if lock.get("state") in ("held", "stale"):
        return f"{lock['state']}: {holder.get('deploy_id', '?')} by {holder.get('who', '?')}"
    return str(lock.get("state", "-"))


def _last_deploys(row: dict[str, Any], n: int = 3) -> str:
    """The host's deploy history, newest first: when, who, tag, result."""
    out = []
    for entry in reversed((row.get("history") or [])[-n:]):
        when = time.strftime("%m-%d %H:%M", time.gmtime(entry.get("ended") or
                                                           entry.get("started") or 0))
        out.append(f"{when} {entry.get('who', '?')} {entry.get('tag', '?')} "
                   f"{entry.get('result', '?')}")
    return "\n".join(out[:n]) or "-"


def _running(row: dict[str, Any]) -> str:
    procs = row.get("running") or []
    return ", ".join(f"{p['what']} pid {p['pid']}" for p in procs) or "no"


@click.command(name="status")
@host_options
def command(config_path: Path | None, as_json: bool, **params: Any) -> int:
    """Show the current release, staged releases, live roost processes, the deploy lock
    and the last deploys (who, when, tag, result) on every host."""
    config = host_config(config_path, params)
    columns = [
        ("host", lambda r: r["host"]),
        ("current", lambda r: r.get("current") or "(none)"),
        ("releases", lambda r: " ".join(x["tag"] for x in r.get("releases", [])) or "-"),
        ("roost running", _running),
        ("deploy lock", _lock),
        ("last deploys (UTC)", _last_deploys),
    ]
    return run_op(config, "host-status", [], as_json, "roost status", columns)
