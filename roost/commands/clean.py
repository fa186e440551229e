"""`roost clean`: stop roost processes left by deploys and remove their temp files.

Idempotent: nothing to stop or remove is not an error. Releases and
`current` are never touched. Exit codes: 0 every host cleaned; 1 some host
could not be reached (see the table).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from roost.commands.deploy import host_config, host_options
from roost.deploy.fleetops import run_op
from roost.target import agentargv
from roost.target.protocol import CleanResult


@click.command(name="clean")
@host_options
@click.option("--deploy-id", help="only this deploy's files and processes")
def command(config_path: Path | None, as_json: bool, deploy_id: str | None, **params: Any) -> int:
    """Stop roost processes and remove deploy temp files on every host."""
    config = host_config(config_path, params)
    columns: list[tuple[str, Callable[[CleanResult], object]]] = [
        ("stopped", lambda r: " ".join(map(str, r.stopped)) or "-"),
        ("removed", lambda r: len(r.removed)),
    ]
    return run_op(config, lambda dest: agentargv.clean(dest, deploy_id or None),
                  CleanResult.from_json, as_json, "roost clean", columns)
