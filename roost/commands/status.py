"""`roost status`: which release is current on each host, is roost still running there,
who holds the deploy lock, and the host's deploy history.

Exit codes: 0 every host answered; 1 some host could not be asked (see the table).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from roost.commands.deploy import host_config, host_options
from roost.deploy.fleetops import run_op
from roost.target import agentargv
from roost.target.protocol import DeployRecord, LockState, StatusResult


def _lock(reply: StatusResult) -> str:
    lock = reply.lock
    if lock is None:
        return "-"
    if lock.state in (LockState.HELD, LockState.STALE):
        holder = lock.holder or DeployRecord()
        return f"{lock.state}: {holder.deploy_id or '?'} by {holder.who or '?'}"
    return str(lock.state)


def _last_deploys(reply: StatusResult, n: int = 3) -> str:
    """The host's deploy history, newest first: when, who, tag, result."""
    out = []
    for entry in reversed(reply.history[-n:]):
        when = time.strftime("%m-%d %H:%M", time.gmtime(entry.ended or entry.started or 0))
        out.append(f"{when} {entry.who or '?'} {entry.tag or '?'} {entry.result or '?'}")
    return "\n".join(out[:n]) or "-"


def _running(reply: StatusResult) -> str:
    return ", ".join(f"{p.what} pid {p.pid}" for p in reply.running) or "no"


@click.command(name="status")
@host_options
def command(config_path: Path | None, as_json: bool, **params: Any) -> int:
    """Show the current release, staged releases, live roost processes, the deploy lock
    and the last deploys (who, when, tag, result) on every host."""
    config = host_config(config_path, params)
    columns: list[tuple[str, Callable[[StatusResult], object]]] = [
        ("current", lambda r: r.current or "(none)"),
        ("releases", lambda r: " ".join(x.tag for x in r.releases) or "-"),
        ("roost running", _running),
        ("deploy lock", _lock),
        ("last deploys (UTC)", _last_deploys),
    ]
    return run_op(config, agentargv.status, StatusResult.from_json, as_json, "roost status",
                  columns)
