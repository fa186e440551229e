"""`roost rollback`: make the previous (or a named) release current on every host.

Exit codes: 0 every host switched; 1 some host could not (see the table).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from roost.commands.deploy import host_config, host_options
from roost.deploy.fleetops import run_op
from roost.target import agentargv
from roost.target.protocol import RollbackResult


@click.command(name="rollback")
@host_options
@click.option("--to", "to_tag", help="release tag (default: the one before the current one)")
def command(config_path: Path | None, as_json: bool, to_tag: str | None, **params: Any) -> int:
    """Switch `current` back to the previous release on every host."""
    config = host_config(config_path, params)
    columns: list[tuple[str, Callable[[RollbackResult], object]]] = [
        ("current", lambda r: r.tag),
        ("was", lambda r: r.previous or "(none)"),
    ]
    return run_op(config, lambda dest: agentargv.rollback(dest, to_tag or None),
                  RollbackResult.from_json, as_json, "roost rollback", columns)
