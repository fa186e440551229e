"""`roost make`: create a .torrent for a file or directory."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from roost import __version__
from roost.core.metainfo import (
    build_info,
    build_torrent,
    check_web_seed_url,
    choose_piece_length,
    parse,
    parse_piece_size,
)
from roost.deploy.ui import progress_bar
from roost.engine.hashing import hash_payload, scan_payload
from roost.errors import UsageError

#: below this, hashing is instant and a progress bar is only noise
PROGRESS_THRESHOLD = 64 * 1024 * 1024


def make_torrent(
    path: Path,
    trackers: list[str],
    *,
    piece_length: int | None = None,
    private: bool = True,
    comment: str | None = None,
    creation_date: int | None = None,
    show_progress: bool = False,
    web_seeds: list[str] | None = None,
) -> bytes:
    payload = scan_payload(path)
    length = piece_length or choose_piece_length(payload.total_length)
    with progress_bar("hashing", payload.total_length, enabled=show_progress) as advance:
        pieces = hash_payload(payload, length, progress=advance)
    files: int | list[tuple[tuple[str, ...], int]]
    if payload.single_file:
        files = payload.total_length
    else:
        files = [(f.path, f.length) for f in payload.files]
    info = build_info(payload.name, files, length, pieces, private=private)
    return build_torrent(
        info,
        trackers,
        comment=comment,
        created_by=f"roost {__version__}",
        creation_date=creation_date,
        url_list=web_seeds or (),
    )


@click.command(name="make")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Where to write the .torrent (default: PATH.torrent).",
)
@click.option(
    "-t",
    "--tracker",
    "trackers",
    multiple=True,
    help="Announce URL; repeat for backup tiers (BEP 12).",
)
@click.option(
    "--piece-size", help="Piece size such as 256K or 1M (default: aims at 1,000-2,000 pieces)."
)
@click.option(
    "--private/--public", default=True, show_default=True, help="Set the BEP 27 private flag."
)
@click.option("--comment", help="Free-text comment stored in the torrent.")
@click.option(
    "--web-seed",
    "web_seeds",
    multiple=True,
    metavar="URL",
    help="HTTP server holding the payload (BEP 19 url-list; repeatable). A URL ending "
    "in / is a directory: the torrent's name (and a file's path) is appended.",
)
@click.option("--no-date", is_flag=True, help="Leave out the creation date (reproducible output).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def command(
    path: Path,
    output: Path | None,
    trackers: tuple[str, ...],
    piece_size: str | None,
    private: bool,
    comment: str | None,
    web_seeds: tuple[str, ...],
    no_date: bool,
    as_json: bool,
    force: bool,
) -> None:
    """Create a .torrent for the file or directory PATH."""
    out = output or Path(str(path).rstrip("/") + ".torrent")
    if out.exists() and not force:
        raise UsageError(f"{out} exists; pass --force to overwrite it")
    if not out.absolute().parent.is_dir():  # say so before hashing, not after
        raise UsageError(f"cannot write {out}: {out.parent} is not a directory")
    length = parse_piece_size(piece_size) if piece_size else None
    for url in web_seeds:
        check_web_seed_url(url, UsageError)  # before hashing, not after
    started = time.monotonic()
    size = sum(f.length for f in scan_payload(path).files)
    data = make_torrent(
        path,
        list(trackers),
        piece_length=length,
        private=private,
        comment=comment,
        web_seeds=list(web_seeds),
        creation_date=None if no_date else int(time.time()),
        show_progress=not as_json and size >= PROGRESS_THRESHOLD,
    )
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    meta = parse(data)
    elapsed = time.monotonic() - started
    if as_json:
        click.echo(
            json.dumps(
                {
                    "torrent": str(out),
                    "info_hash": meta.info_hash.hex(),
                    "name": meta.info.name,
                    "total_length": meta.info.total_length,
                    "piece_length": meta.info.piece_length,
                    "pieces": meta.info.num_pieces,
                    "files": len(meta.info.files),
                    "private": meta.info.private,
                    "web_seeds": list(meta.url_list),
                    "seconds": round(elapsed, 3),
                }
            )
        )
    else:
        click.echo(
            f"wrote {out}: {meta.info.num_pieces} pieces of {meta.info.piece_length} bytes, "
            f"info-hash {meta.info_hash.hex()} ({elapsed:.1f} s)"
        )
