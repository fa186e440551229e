"""`roost show`: what a .torrent holds, for people and (--json) machines."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from roost.core.metainfo import Metainfo
from roost.deploy.ui import inert_text
from roost.target.torrentfile import read_torrent


def describe(meta: Metainfo) -> dict[str, Any]:
    info = meta.info
    return {
        "name": info.name,
        "info_hash": meta.info_hash.hex(),
        "magnet": meta.magnet(),
        "total_length": info.total_length,
        "piece_length": info.piece_length,
        "pieces": info.num_pieces,
        "private": info.private,
        "single_file": info.single_file,
        "trackers": [list(t) for t in meta.trackers],
        "comment": meta.comment,
        "created_by": meta.created_by,
        "creation_date": meta.creation_date,
        "files": [{"path": f.relpath, "length": f.length} for f in info.files],
    }


@click.command(name="show")
@click.argument("torrent", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--files/--no-files", default=True, help="List the files.")
def command(torrent: Path, as_json: bool, files: bool) -> None:
    """Show what the .torrent file TORRENT holds."""
    meta = read_torrent(torrent)
    data = describe(meta)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    console = Console()
    summary = Table.grid(padding=(0, 2))
    # every string here comes from the file: shown as inert text, never as markup

    def row(key: str, value: object) -> None:
        summary.add_row(key, inert_text(value))

    row("name", data["name"])
    row("info-hash", data["info_hash"])
    row("size", f"{data['total_length']:,} bytes")
    row("pieces", f"{data['pieces']:,} x {data['piece_length']:,} bytes")
    row("private", "yes" if data["private"] else "no")
    for i, tier in enumerate(data["trackers"]):
        row(f"tracker tier {i}", ", ".join(tier))
    if data["comment"]:
        row("comment", data["comment"])
    if data["creation_date"]:
        row("created", _date(data["creation_date"]))
    if data["created_by"]:
        row("created by", data["created_by"])
    row("magnet", data["magnet"])
    console.print(summary)
    if files and not meta.info.single_file:
        table = Table("path", "bytes")
        for f in data["files"]:
            table.add_row(inert_text(f["path"]), f"{f['length']:,}")
        console.print(table)


def _date(stamp: int) -> str:
    """A Unix time as ISO 8601 UTC; one outside what the platform can show, as the number."""
    try:
        return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{stamp} (Unix time, out of range)"
