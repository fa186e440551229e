"""Turn a deploy source into a payload + manifest.

A directory is sent as itself by default (format "tree", roost.deploy.treepack:
a multi-file torrent of its files, and a manifest carrying every entry's
modes, owners, symlinks and empty directories). `--format tar` makes a
tarball instead (optionally zstd-compressed); `--format dir` a multi-file
payload of contents only. A file goes as is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from roost import __version__
from roost.core.metainfo import build_info, build_torrent, choose_piece_length
from roost.deploy import treepack
from roost.deploy.hashcache import HashCache
from roost.engine.hashing import hash_payload, scan_payload
from roost.errors import UsageError
from roost.target.protocol import Manifest, PayloadFormat, check_tag
from roost.target.release import payload_digest


@dataclass(frozen=True)
class Packed:
    payload: Path  # the file or directory to seed
    manifest: Manifest
    torrent: bytes | None = None  # format "tree": made with the manifest (it holds its hash)
    padding: int = 0  # format "tree": bytes of pad files in the torrent


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # names of owners mean nothing on another host; numeric ids are what root restores
    info.uname = info.gname = ""
    return info


def write_tar(src: Path, out: Path) -> None:
    """A POSIX tar of the tree under `src` (members relative, the root as ".")."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(src, arcname=".", recursive=False, filter=_reset)
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                path = Path(dirpath) / name
                tar.add(path, arcname=path.relative_to(src).as_posix(), recursive=False,
                        filter=_reset)


def zstd_compress(path: Path, level: int = 3) -> Path:
    zstd = shutil.which("zstd")
    if zstd is None:
        raise UsageError("--compress zstd needs the zstd program on the deploy host")
    out = path.with_name(path.name + ".zst")
    subprocess.run([zstd, "-q", f"-{level}", "-T0", "--rm", "-o", str(out), str(path)],
                   check=True, timeout=3600)
    return out


@dataclass(frozen=True)
class Source:
    """A source that passed every check that reads no file's bytes (`check_source`)."""

    path: Path
    format: PayloadFormat
    scanned: treepack.Scanned | None = None  # format tree: its entries, checked


def check_source(src: Path, tag: str, *, fmt: str = "auto", compress: bool = False) -> Source:
    """The source's format, and every refusal `pack` would make without reading the
    bytes (a bad tag, a missing source, a symlink out of a tree...): quick, so a
    deploy refuses before it reaches any host, and packs while it reaches them."""
    check_tag(tag)
    if not src.exists():
        raise UsageError(f"{src} does not exist")
    if src.is_dir():
        if fmt == "auto":
            fmt = "tar" if compress else "tree"
        if fmt not in ("tree", "tar", "dir"):
            raise UsageError(f"a directory is sent as 'tree', 'tar' or 'dir', not {fmt!r}")
        if fmt == "tree":
            if compress:
                raise UsageError("--compress needs --format tar (a tree is sent as itself)")
            return Source(src, PayloadFormat.TREE, treepack.checked_scan(src))
        if fmt == "dir":
            return Source(src, PayloadFormat.DIR)
        return Source(src, PayloadFormat.TAR_ZST if compress else PayloadFormat.TAR)
    if not src.is_file():
        raise UsageError(f"{src} is neither a file nor a directory")
    if fmt not in ("auto", "file"):
        raise UsageError(f"a file is sent as is, not as {fmt!r}")
    return Source(src, PayloadFormat.FILE)


def pack(src: Path, work: Path, tag: str, *, fmt: str = "auto", compress: bool = False,
         checked: Source | None = None, hash_cache: Path | None = None) -> Packed:
    """Make the payload for `src` inside the scratch directory `work` (`checked`:
    what check_source found for these arguments, when it ran already). A tree's
    hashes proven unchanged since a pack of the same directory are taken from
    `hash_cache`, a directory (roost.deploy.hashcache), when given."""
    if checked is None:
        checked = check_source(src, tag, fmt=fmt, compress=compress)
    kind = checked.format
    if kind is PayloadFormat.TREE:
        cache = HashCache.load(hash_cache, src) if hash_cache is not None else None
        tree = treepack.build(src, tag, scanned=checked.scanned, cache=cache)
        manifest = Manifest(tag, PayloadFormat.TREE, "tree", tree.manifest.digest(),
                            tree.manifest.total_size, tree.manifest)
        return Packed(src, manifest, tree.torrent, tree.padding)
    if kind in (PayloadFormat.TAR, PayloadFormat.TAR_ZST):
        tar_path = work / f"{tag}.tar"
        write_tar(src, tar_path)
        if kind is PayloadFormat.TAR_ZST:
            return _packed(zstd_compress(tar_path), PayloadFormat.TAR_ZST, tag)
        return _packed(tar_path, PayloadFormat.TAR, tag)
    return _packed(src, kind, tag)


def _packed(payload: Path, fmt: PayloadFormat, tag: str) -> Packed:
    size = (sum(p.stat().st_size for p in payload.rglob("*") if p.is_file())
            if payload.is_dir() else payload.stat().st_size)
    manifest = Manifest(tag, fmt, payload.name, payload_digest(payload, fmt), size)
    return Packed(payload, manifest)


def make_metainfo(payload: Path) -> bytes:
    """A private torrent of the payload, with no announce URL: every peer gets the
    swarm's secret announce URL on its command line (over SSH) instead."""
    scanned = scan_payload(payload)
    piece_length = choose_piece_length(scanned.total_length)
    pieces = hash_payload(scanned, piece_length)
    files: int | list[tuple[tuple[str, ...], int]]
    if scanned.single_file:
        files = scanned.total_length
    else:
        files = [(f.path, f.length) for f in scanned.files]
    info = build_info(scanned.name, files, piece_length, pieces, private=True)
    return build_torrent(info, [], created_by=f"roost {__version__}")
