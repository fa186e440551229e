"""The tree manifest and the tree torrent's layout (format "tree"). Pure: no I/O.

Theory of operation. A directory release is sent as itself: a multi-file
BitTorrent v1 torrent whose files are the tree's non-empty regular files,
and a manifest (JSON, over SSH, the trusted channel) that describes every
entry of the tree: files, directories (empty ones too) and symlinks, with
mode, owner, group, mtime, and for files size and SHA-256. The manifest
also carries the torrent's info-hash, so the torrent is trusted through it.

Layout (`layout`): files in byte-wise path order. A file of at least
`align_min(piece_length)` bytes (ALIGN_PIECES pieces) starts on a piece
boundary and the next file starts on the one after it: BEP 47 pad files
(attr "p", path ".pad/<length>", all zeros, never written to disk) fill the
gaps. So a large unchanged file gives the same pieces in the next release,
and its pieces are wholly its own. Smaller files are packed back to back
without padding: a tree of 100,000 tiny files stays ~the size of its bytes
in pieces instead of one piece each. Each aligned file costs at most two
pads of under one piece each, and is at least ALIGN_PIECES pieces long, so
padding is below 2/ALIGN_PIECES (5 %) of the bytes whatever the tree.

`parse_manifest` trusts nothing: unknown or missing keys, wrong types, paths
that fail `metainfo.safe_relpath`, duplicate paths, an entry below a file or
a symlink, an entry whose parent directory is not listed, and symlinks whose
target leaves the tree are all refused with one sentence.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from roost.core import bencode
from roost.core.metainfo import (
    MAX_FILES,
    Info,
    build_torrent,
    check_piece_length,
    safe_component,
    safe_relpath,
)
from roost.errors import MetainfoError, UnsafePathError

VERSION = 1
KIND = "roost-tree-manifest"
#: a file this many pieces long (or more) is aligned on piece boundaries
ALIGN_PIECES = 40
PAD_DIR = ".pad"
MAX_ENTRIES = MAX_FILES
MAX_TARGET_BYTES = 4095
MAX_SIZE = 1 << 50  # 1 PiB: far beyond any release, far below float trouble
TYPES = ("file", "dir", "symlink")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_HEX40 = re.compile(r"[0-9a-f]{40}\Z")
_COMMON = {"path", "type", "mode", "uid", "gid", "mtime_ns"}
_KEYS = {
    "file": _COMMON | {"size", "sha256"},
    "dir": _COMMON,
    "symlink": _COMMON | {"target"},
}
_TOP_KEYS = {"kind", "version", "info_hash", "piece_length", "entries"}


@dataclass(frozen=True)
class Entry:
    """One entry of the tree. `size`/`sha256` for files, `target` for symlinks."""

    path: tuple[str, ...]
    type: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    sha256: str = ""
    target: str = ""

    @property
    def relpath(self) -> str:
        return "/".join(self.path)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.relpath, "type": self.type, "mode": self.mode,
                               "uid": self.uid, "gid": self.gid, "mtime_ns": self.mtime_ns}
        if self.type == "file":
            out["size"], out["sha256"] = self.size, self.sha256
        elif self.type == "symlink":
            out["target"] = self.target
        return out


@dataclass(frozen=True)
class TreeManifest:
    info_hash: str  # hex, of the tree torrent
    piece_length: int
    entries: tuple[Entry, ...]

    @property
    def files(self) -> list[Entry]:
        """Regular files in payload (byte-wise path) order."""
        return sorted((e for e in self.entries if e.type == "file"),
                      key=lambda e: e.relpath.encode())

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries if e.type == "file")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "version": VERSION, "info_hash": self.info_hash,
                "piece_length": self.piece_length,
                "entries": [e.to_dict() for e in self.entries]}

    def digest(self) -> str:
        """SHA-256 of the canonical manifest: what "the same release" means for a tree."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Slot:
    """One file of the tree torrent: a manifest file, or a pad (zeros)."""

    path: tuple[str, ...]
    length: int
    pad: bool = False


def align_min(piece_length: int) -> int:
    return ALIGN_PIECES * piece_length


def layout(files: Sequence[tuple[tuple[str, ...], int]], piece_length: int) -> list[Slot]:
    """The torrent's file list for (path, size) files already in payload order.

    Empty files are not in the torrent (the manifest creates them)."""
    threshold = align_min(piece_length)
    slots: list[Slot] = []
    offset = 0

    def pad_to_boundary() -> None:
        nonlocal offset
        gap = -offset % piece_length
        if gap:
            slots.append(Slot((PAD_DIR, str(gap)), gap, pad=True))
            offset += gap

    sized = [(p, n) for p, n in files if n > 0]
    for i, (path, size) in enumerate(sized):
        big = size >= threshold
        if big:
            pad_to_boundary()
        slots.append(Slot(path, size))
        offset += size
        if big and i + 1 < len(sized):
            pad_to_boundary()
    return slots


def manifest_layout(manifest: TreeManifest) -> list[Slot]:
    return layout([(e.path, e.size) for e in manifest.files], manifest.piece_length)


def encode_info(manifest: TreeManifest, name: str, pieces: bytes) -> bytes:
    """The tree torrent's bencoded `info`, byte for byte what
    bencode.encode(build_info(...)) gives, written directly: a host rebuilds it for
    100,000 files, and the generic encoder's walk over dicts of lists cost seconds.
    Every path still goes through safe_relpath, the name through safe_component."""
    safe_component(name, "torrent name")
    check_piece_length(manifest.piece_length)
    out = [b"d5:filesl"]
    for slot in manifest_layout(manifest):
        comps = b"".join(_bstr(c.encode()) for c in safe_relpath(slot.path))
        attr = b"4:attr1:p" if slot.pad else b""
        out.append(b"d%s6:lengthi%de4:pathl%see" % (attr, slot.length, comps))
    out.append(b"e4:name%s12:piece lengthi%de6:pieces%s7:privatei1ee"
               % (_bstr(name.encode()), manifest.piece_length, _bstr(pieces)))
    return b"".join(out)


def _bstr(raw: bytes) -> bytes:
    return b"%d:%s" % (len(raw), raw)


def torrent_with_info(info: bytes, trackers: Sequence[str], created_by: str | None) -> bytes:
    """A torrent around already-encoded `info`: its other keys (announce..., created
    by) all sort before "info", so the info bytes go last, before the closing e."""
    head = bencode.decode(build_torrent({}, trackers, created_by=created_by))
    if not isinstance(head, dict):  # build_torrent's own output: cannot happen
        raise MetainfoError("the torrent is not a dictionary")
    head.pop(b"info", None)
    if any(key > b"info" for key in head):
        raise MetainfoError("a tree torrent key sorts after info")
    return bencode.encode(head)[:-1] + b"4:info" + info + b"e"


def make_torrent(manifest: TreeManifest, name: str, pieces: bytes,
                 trackers: Sequence[str] = (), created_by: str | None = None) -> bytes:
    """The tree torrent, rebuilt from its manifest and piece hashes: a host is sent
    the 20-byte piece hashes, not a second copy of a 100,000-file list."""
    return torrent_with_info(encode_info(manifest, name, pieces), trackers, created_by)


def proven_torrent(manifest: TreeManifest, name: str, pieces: bytes) -> bytes:
    """make_torrent, then proven: its file list is the manifest's by construction,
    and the info-hash the manifest carries covers the piece hashes."""
    total = sum(s.length for s in manifest_layout(manifest))
    if len(pieces) != 20 * -(-total // manifest.piece_length):
        raise MetainfoError("the piece hashes do not fit the manifest's layout")
    info = encode_info(manifest, name, pieces)
    if hashlib.sha1(info).hexdigest() != manifest.info_hash:
        raise MetainfoError("the torrent's info-hash is not the one in the manifest")
    return torrent_with_info(info, (), None)


def check_torrent(manifest: TreeManifest, info: Info, info_hash: bytes) -> None:
    """Refuse a torrent that is not exactly the one the manifest describes."""
    if info_hash.hex() != manifest.info_hash:
        raise MetainfoError("the torrent's info-hash is not the one in the manifest")
    if info.piece_length != manifest.piece_length or info.single_file:
        raise MetainfoError("the torrent's layout does not match the manifest")
    expected = [(s.path, s.length, s.pad) for s in manifest_layout(manifest)]
    actual = [(f.path, f.length, f.pad) for f in info.files]
    if expected != actual:
        raise MetainfoError("the torrent's file list does not match the manifest")


def link_stays_inside(parts: tuple[str, ...], target: str) -> bool:
    """Whether symlink `parts` -> `target` resolves inside the tree, lexically.

    Relative only; ".." only before any name (a name could be a symlink
    itself, and "name/.." would then climb from wherever it points)."""
    if not target or target.startswith("/") or "\x00" in target:
        return False
    depth = len(parts) - 1
    descended = False
    for piece in target.split("/"):
        if piece in ("", "."):
            continue
        if piece == ".." and descended:
            return False
        descended = descended or piece != ".."
        depth += -1 if piece == ".." else 1
        if depth < 0:
            return False
    return True


# --- parsing --------------------------------------------------------------------------


def parse_manifest(data: Any) -> TreeManifest:
    """Validate a decoded tree manifest (see the module comment for what is refused)."""
    if not isinstance(data, dict):
        raise MetainfoError("tree manifest is not a JSON object")
    extra = set(data) - _TOP_KEYS
    if extra or set(data) != _TOP_KEYS:
        raise MetainfoError(f"tree manifest has keys {sorted(map(str, data))[:8]}, "
                            f"expected {sorted(_TOP_KEYS)}")
    if data["kind"] != KIND or data["version"] != VERSION:
        raise MetainfoError(f"tree manifest is not {KIND} version {VERSION}")
    info_hash = data["info_hash"]
    if not isinstance(info_hash, str) or not _HEX40.match(info_hash):
        raise MetainfoError("tree manifest info_hash is not 40 lower-case hex digits")
    piece_length = _int(data["piece_length"], "piece_length", 1 << 14, 1 << 24)
    if piece_length & (piece_length - 1):
        raise MetainfoError("tree manifest piece_length is not a power of two")
    raw = data["entries"]
    if not isinstance(raw, list):
        raise MetainfoError("tree manifest entries is not a list")
    if len(raw) > MAX_ENTRIES:
        raise MetainfoError(f"tree manifest lists more than {MAX_ENTRIES} entries")
    entries = tuple(_entry(item) for item in raw)
    _check_tree(entries)
    return TreeManifest(info_hash, piece_length, entries)


def checked_manifest(data: dict[str, Any]) -> TreeManifest:
    """Rebuild a manifest that parse_manifest already accepted, without its checks.

    Only for bytes proven to be the ones validated (roost.target.checked: their
    SHA-256 against host-prepare's record); any other input goes to parse_manifest."""
    entries = tuple(
        Entry(tuple(e["path"].split("/")), e["type"], e["mode"], e["uid"], e["gid"],
              e["mtime_ns"], e.get("size", 0), e.get("sha256", ""), e.get("target", ""))
        for e in data["entries"])
    return TreeManifest(data["info_hash"], data["piece_length"], entries)


def _entry(item: Any) -> Entry:
    if not isinstance(item, dict):
        raise MetainfoError("a tree manifest entry is not an object")
    kind = item.get("type")
    if kind not in TYPES:
        raise MetainfoError(f"tree manifest entry type {str(kind)[:20]!r} is not file/dir/symlink")
    if item.keys() != _KEYS[kind]:
        raise MetainfoError(f"tree manifest {kind} entry has keys "
                            f"{sorted(map(str, item))[:8]}, expected {sorted(_KEYS[kind])}")
    path = item["path"]
    if not isinstance(path, str):
        raise MetainfoError("a tree manifest path is not a string")
    if path.startswith("/"):
        raise UnsafePathError(f"tree manifest path {path[:60]!r} is absolute")
    parts = safe_relpath(path.split("/"))
    mode = _int(item["mode"], "mode", 0, 0o7777)
    uid = _int(item["uid"], "uid", 0, 2**32 - 1)
    gid = _int(item["gid"], "gid", 0, 2**32 - 1)
    mtime_ns = _int(item["mtime_ns"], "mtime_ns", -(2**63), 2**63 - 1)
    if kind == "file":
        sha = item["sha256"]
        if not isinstance(sha, str) or not _HEX64.match(sha):
            raise MetainfoError(f"tree manifest sha256 of {path[:60]!r} is not 64 hex digits")
        return Entry(parts, kind, mode, uid, gid, mtime_ns,
                     _int(item["size"], "size", 0, MAX_SIZE), sha)
    if kind == "symlink":
        target = item["target"]
        if not isinstance(target, str) or len(target.encode()) > MAX_TARGET_BYTES:
            raise MetainfoError(f"tree manifest symlink {path[:60]!r} has no valid target")
        if not link_stays_inside(parts, target):
            raise UnsafePathError(f"symlink {path[:60]!r} -> {target[:60]!r} escapes the release")
        return Entry(parts, kind, mode, uid, gid, mtime_ns, target=target)
    return Entry(parts, kind, mode, uid, gid, mtime_ns)


def _check_tree(entries: tuple[Entry, ...]) -> None:
    kinds: dict[tuple[str, ...], str] = {}
    for e in entries:
        if e.path in kinds:
            raise UnsafePathError(f"tree manifest lists {e.relpath[:60]!r} twice")
        kinds[e.path] = e.type
    if kinds.get((PAD_DIR,)) is not None:
        raise UnsafePathError(f"{PAD_DIR!r} at the top of a tree is reserved for pad files")
    for e in entries:
        for depth in range(1, len(e.path)):
            parent = kinds.get(e.path[:depth])
            if parent is None:
                raise UnsafePathError(
                    f"tree manifest entry {e.relpath[:60]!r} has no parent directory entry")
            if parent != "dir":
                raise UnsafePathError(
                    f"tree manifest entry {e.relpath[:60]!r} runs through a {parent}")


def _int(value: Any, what: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MetainfoError(f"tree manifest {what} is not an integer in {low}..{high}")
    return value
