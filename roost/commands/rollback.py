"""`roost rollback`: make the previous (or a named) release current on every host.

Exit codes: 0 every host switched; 1 some host could not (see the table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from roost.commands.deploy import host_config, host_options
from roost.deploy.fleetops import run_op


@click.command(name="rollback")
@host_options
@click.option("--to", "to_tag", help="release tag (default: the one before the current one)")
def command(config_path: Path | None, as_json: bool, to_tag: str | None, **params: Any) -> int:
    """Switch `current` back to the previous release on every host."""
    config = host_config(config_path, params)
    columns = [
        ("host", lambda r: r["host"]),
        ("current", lambda r: r.get("tag")),
        ("was", lambda r: r.get("previous") or "(none)"),
    ]
    args = ["--to", to_tag] if to_tag else []
    return run_op(config, "host-rollback", args, as_json, "roost rollback", columns)
