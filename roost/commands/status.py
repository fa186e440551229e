"""`roost status`: which release is current on each host, and is roost still running there.

Exit codes: 0 every host answered; 1 some host could not be asked (see the table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from roost.commands.deploy import host_config, host_options
from roost.deploy.fleetops import run_op


def _running(row: dict[str, Any]) -> str:
    procs = row.get("running") or []
    return ", ".join(f"{p['what']} pid {p['pid']}" for p in procs) or "no"


@click.command(name="status")
@host_options
def command(config_path: Path | None, as_json: bool, **params: Any) -> int:
    """Show the current release, staged releases and live roost processes on every host."""
    config = host_config(config_path, params)
    columns = [
        ("host", lambda r: r["host"]),
        ("current", lambda r: r.get("current") or "(none)"),
        ("releases", lambda r: " ".join(x["tag"] for x in r.get("releases", [])) or "-"),
        ("roost running", _running),
    ]
    return run_op(config, "host-status", [], as_json, "roost status", columns)
