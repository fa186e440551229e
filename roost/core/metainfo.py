"""Torrent metainfo, BitTorrent v1 (BEP 3, BEP 12 announce-list, BEP 27 private,
BEP 19 url-list web seeds).

Pure: no I/O. `parse` validates everything a hostile .torrent could get wrong
(piece count against total length, unsafe paths, bad types) and hashes the
`info` dictionary from its raw bytes as they were in the file. `build_info`
and `build_torrent` assemble metainfo from a file list and piece hashes that
the caller computed (see roost.engine.hashing for the streaming, multi-core part).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from roost.core import bencode
from roost.errors import DecodeError, MetainfoError, UnsafePathError, UsageError

MIN_PIECE_LENGTH = 16 * 1024
MAX_PIECE_LENGTH = 16 * 1024 * 1024
#: aim for roughly this many pieces: enough for a swarm to pipeline, few
#: enough that the `pieces` string and bitfields stay small.
TARGET_PIECES = 1500
MAX_FILES = 1_000_000
MAX_PATH_DEPTH = 64
MAX_COMPONENT_BYTES = 255

# Windows device names: a release may be unpacked on any OS, and a file named
# "con" is a trap there; refusing them costs nothing.
_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{i}" for i in range(1, 10)]
    + [f"lpt{i}" for i in range(1, 10)]
)


@dataclass(frozen=True)
class FileEntry:
    """One file of the payload, at `offset` bytes into the concatenated stream."""

    path: tuple[str, ...]
    length: int
    offset: int
    pad: bool = False  # BEP 47 pad file (attr "p"): zeros, never written to disk

    @property
    def relpath(self) -> str:
        return "/".join(self.path)


@dataclass(frozen=True)
class Info:
    """The validated `info` dictionary."""

    name: str
    piece_length: int
    pieces: bytes
    files: tuple[FileEntry, ...]
    private: bool
    single_file: bool
    total_length: int

    @property
    def num_pieces(self) -> int:
        return len(self.pieces) // 20

    def piece_hash(self, index: int) -> bytes:
        return self.pieces[index * 20 : index * 20 + 20]

    def piece_size(self, index: int) -> int:
        """Length of piece `index`; the last piece may be short."""
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} out of range")
        start = index * self.piece_length
        return min(self.piece_length, self.total_length - start)


@dataclass(frozen=True)
class Metainfo:
    """A validated .torrent: its `info`, the info hash of `raw_info`, and the rest."""

    info: Info
    info_hash: bytes
    raw_info: bytes
    announce: str | None = None
    announce_list: tuple[tuple[str, ...], ...] = ()
    comment: str | None = None
    created_by: str | None = None
    creation_date: int | None = None
    url_list: tuple[str, ...] = ()  # BEP 19 web seeds (roost.core.webseed)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def trackers(self) -> tuple[tuple[str, ...], ...]:
        """Tracker tiers per BEP 12; `announce` alone when there is no list."""
        if self.announce_list:
            return self.announce_list
        return ((self.announce,),) if self.announce else ()

    def magnet(self) -> str:
        parts = [f"magnet:?xt=urn:btih:{self.info_hash.hex()}"]
        parts.append("dn=" + quote(self.info.name, safe=""))
        parts.append(f"xl={self.info.total_length}")
        seen: set[str] = set()
        for tier in self.trackers:
            for url in tier:
                if url not in seen:
                    seen.add(url)
                    parts.append("tr=" + quote(url, safe=""))
        return "&".join(parts)


def safe_component(raw: bytes | str, what: str = "path component") -> str:
    """Return `raw` as a str if it is safe as one path component, else raise.

    Refused: empty, ".", "..", anything with a slash, backslash or NUL,
    Windows device names, non-UTF-8, over 255 bytes.
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafePathError(f"{what} {raw[:60]!r} is not valid UTF-8") from None
    else:
        text = raw
    if text in _SAFE_SEEN:  # a tree repeats its names ("lib", "node_modules") a lot
        return text
    _check_component(text, what)
    if len(_SAFE_SEEN) < 65536:
        _SAFE_SEEN.add(text)
    return text


_SAFE_SEEN: set[str] = set()
#: a separator, a backslash, NUL or another control character
_BAD_CHARS = re.compile(r"[\x00-\x1f/\\]")


def _check_component(text: str, what: str) -> None:
    if text in ("", ".", ".."):
        raise UnsafePathError(f"{what} {text!r} is not allowed")
    bad = _BAD_CHARS.search(text)
    if bad is not None and bad.group() in "/\\\x00":
        raise UnsafePathError(f"{what} {text[:60]!r} contains a path separator or NUL")
    if len(text.encode("utf-8")) > MAX_COMPONENT_BYTES:
        raise UnsafePathError(f"{what} {text[:60]!r}... is longer than 255 bytes")
    if text.split(".")[0].lower() in _RESERVED:
        raise UnsafePathError(f"{what} {text!r} is a reserved device name")
    if bad is not None:
        raise UnsafePathError(f"{what} {text[:60]!r} contains a control character")


def safe_relpath(parts: Sequence[bytes | str]) -> tuple[str, ...]:
    """Validate every component of a relative path (the one safe-path function)."""
    if not parts:
        raise UnsafePathError("empty file path")
    if len(parts) > MAX_PATH_DEPTH:
        raise UnsafePathError(f"file path deeper than {MAX_PATH_DEPTH} components")
    return tuple(safe_component(p) for p in parts)


def choose_piece_length(total_length: int) -> int:
    """Smallest power of two in [16 KiB, 16 MiB] giving at most ~2*TARGET/1.5 pieces.

    For payloads above ~32 MiB this lands between 1,000 and 2,000 pieces."""
    length = MIN_PIECE_LENGTH
    while length < MAX_PIECE_LENGTH and total_length > length * 2000:
        length *= 2
    return length


def parse_piece_size(text: str) -> int:
    """Parse '256K', '1M', '262144' into a valid piece length, or raise."""
    units = {"k": 1024, "m": 1024 * 1024}
    s = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = 1
    if s and s[-1] in units:
        mult = units[s[-1]]
        s = s[:-1]
    if not s.isdigit():
        raise UsageError(f"piece size {text!r} is not a number like 256K or 1M")
    value = int(s) * mult
    check_piece_length(value, UsageError)
    return value


def check_piece_length(value: int, error: type[Exception] = MetainfoError) -> None:
    if value < MIN_PIECE_LENGTH or value > MAX_PIECE_LENGTH or value & (value - 1):
        raise error(f"piece size {value} must be a power of two between 16 KiB and 16 MiB")


def build_info(
    name: str,
    files: Sequence[tuple[tuple[str, ...], int] | tuple[tuple[str, ...], int, bool]] | int,
    piece_length: int,
    pieces: bytes,
    *,
    private: bool = True,
) -> dict[str, Any]:
    """Build the `info` dictionary.

    `files` is the payload length for a single-file torrent, or a list of
    (path components, length[, pad]) for a multi-file one, in payload order;
    a pad file (BEP 47) gets attr "p"."""
    safe_component(name, "torrent name")
    check_piece_length(piece_length)
    info: dict[str, Any] = {"name": name, "piece length": piece_length, "pieces": pieces}
    if isinstance(files, int):
        info["length"] = files
    else:
        info["files"] = [_file_dict(item) for item in files]
    if private:
        info["private"] = 1
    return info


def _file_dict(item: tuple[tuple[str, ...], int] | tuple[tuple[str, ...], int, bool]
               ) -> dict[str, Any]:
    entry: dict[str, Any] = {"length": item[1], "path": list(safe_relpath(item[0]))}
    if len(item) > 2 and item[2]:
        entry["attr"] = "p"
    return entry


def build_torrent(
    info: dict[str, Any],
    trackers: Sequence[str] | Sequence[Sequence[str]] = (),
    *,
    comment: str | None = None,
    created_by: str | None = None,
    creation_date: int | None = None,
    url_list: Sequence[str] = (),
) -> bytes:
    """Assemble a .torrent. `trackers` is a flat list (one tier each) or tiers;
    `url_list` the BEP 19 web seeds (checked by check_web_seed_url)."""
    tiers: list[list[str]] = []
    for entry in trackers:
        tiers.append([entry] if isinstance(entry, str) else list(entry))
    torrent: dict[str, Any] = {"info": info}
    if tiers:
        torrent["announce"] = tiers[0][0]
        if len(tiers) > 1 or len(tiers[0]) > 1:
            torrent["announce-list"] = tiers
    if comment:
        torrent["comment"] = comment
    if created_by:
        torrent["created by"] = created_by
    if creation_date is not None:
        torrent["creation date"] = creation_date
    if url_list:
        torrent["url-list"] = [check_web_seed_url(u, UsageError) for u in url_list]
    return bencode.encode(torrent)


MAX_WEB_SEEDS = 16
MAX_URL_BYTES = 2048
_URL_BAD = re.compile(r"[\x00-\x20\x7f]")  # controls and spaces: never in a URL as sent


def check_web_seed_url(url: str, error: type[Exception] = MetainfoError) -> str:
    """A web seed URL must be plain http:// or https:// with a host, no
    credentials, fragment or control characters; else `error`."""
    if len(url.encode("utf-8", "replace")) > MAX_URL_BYTES:
        raise error(f"web seed URL {url[:60]!r}... is longer than {MAX_URL_BYTES} bytes")
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    if sep == "" or scheme.lower() not in ("http", "https") or not host:
        raise error(f"web seed URL {url[:80]!r} is not an http:// or https:// URL")
    if "@" in host or "#" in url or _URL_BAD.search(url):
        raise error(f"web seed URL {url[:80]!r} has credentials, a fragment or a control character")
    return url


def parse(data: bytes) -> Metainfo:
    """Parse and validate a .torrent file's bytes."""
    try:
        top, spans = bencode.decode_with_spans(data)
    except DecodeError as exc:
        raise MetainfoError(f"not a torrent file: {exc}") from None
    if not isinstance(top, dict):
        raise MetainfoError("not a torrent file: the top level is not a dictionary")
    if b"info" not in top:
        raise MetainfoError("torrent has no 'info' dictionary")
    start, end = spans[b"info"]
    raw_info = data[start:end]
    info = parse_info(top[b"info"])
    announce = _opt_str(top, b"announce", "announce")
    tiers = _parse_announce_list(top.get(b"announce-list"))
    date = top.get(b"creation date")
    url_list = _parse_url_list(top.get(b"url-list"))
    return Metainfo(
        info=info,
        info_hash=hashlib.sha1(raw_info).digest(),
        raw_info=bytes(raw_info),
        announce=announce,
        announce_list=tiers,
        comment=_opt_str(top, b"comment", "comment"),
        created_by=_opt_str(top, b"created by", "created by"),
        creation_date=date if isinstance(date, int) else None,
        url_list=url_list,
    )


def _parse_url_list(raw: Any) -> tuple[str, ...]:
    """BEP 19: one URL or a list. Clients that cannot use a web seed ignore it,
    so an unusable entry (ftp://, garbage) is skipped, never fatal."""
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    urls: list[str] = []
    for item in items:
        if not isinstance(item, bytes) or not item:
            continue
        url = item.decode("utf-8", "replace")
        try:
            check_web_seed_url(url)
        except MetainfoError:
            continue
        if url not in urls:
            urls.append(url)
        if len(urls) >= MAX_WEB_SEEDS:
            break
    return tuple(urls)


def parse_info(raw: Any) -> Info:
    """Validate a decoded `info` dictionary."""
    if not isinstance(raw, dict):
        raise MetainfoError("'info' is not a dictionary")
    name = safe_component(_req_bytes(raw, b"name"), "torrent name")
    piece_length = _req_int(raw, b"piece length")
    check_piece_length_lenient(piece_length)
    pieces = _req_bytes(raw, b"pieces")
    if len(pieces) % 20:
        raise MetainfoError("'pieces' length is not a multiple of 20")
    private = raw.get(b"private", 0) == 1
    if b"length" in raw and b"files" in raw:
        raise MetainfoError("'info' has both 'length' and 'files'")
    if b"length" in raw:
        length = _req_int(raw, b"length")
        files: tuple[FileEntry, ...] = (FileEntry((name,), length, 0),)
        single = True
    elif b"files" in raw:
        files = _parse_files(raw[b"files"])
        single = False
    else:
        raise MetainfoError("'info' has neither 'length' nor 'files'")
    total = sum(f.length for f in files)
    expected = -(-total // piece_length)
    if len(pieces) // 20 != expected:
        raise MetainfoError(
            f"torrent has {len(pieces) // 20} piece hashes but {total} bytes "
            f"in {piece_length}-byte pieces need {expected}"
        )
    return Info(name, piece_length, pieces, files, private, single, total)


def check_piece_length_lenient(value: int) -> None:
    """Foreign torrents may use any positive piece length; cap it for memory."""
    if value <= 0 or value > 64 * 1024 * 1024:
        raise MetainfoError(f"piece length {value} is outside 1 byte .. 64 MiB")


def _parse_files(raw: Any) -> tuple[FileEntry, ...]:
    if not isinstance(raw, list) or not raw:
        raise MetainfoError("'files' is not a non-empty list")
    if len(raw) > MAX_FILES:
        raise MetainfoError(f"torrent lists more than {MAX_FILES} files")
    entries: list[FileEntry] = []
    seen: set[tuple[str, ...]] = set()
    prefixes: set[tuple[str, ...]] = set()
    offset = 0
    for item in raw:
        if not isinstance(item, dict):
            raise MetainfoError("a 'files' entry is not a dictionary")
        length = _req_int(item, b"length")
        parts = item.get(b"path")
        if not isinstance(parts, list) or not all(isinstance(p, bytes) for p in parts):
            raise MetainfoError("a 'files' entry has no valid 'path' list")
        path = safe_relpath(parts)
        attr = item.get(b"attr", b"")
        if isinstance(attr, bytes) and b"p" in attr:
            # pads may share a path (".pad/N"); they are never written, so no clash
            entries.append(FileEntry(path, length, offset, pad=True))
            offset += length
            continue
        if path in seen or path in prefixes:
            raise MetainfoError(f"file path {'/'.join(path)!r} appears twice or is a directory")
        seen.add(path)
        for i in range(1, len(path)):
            if path[:i] in seen:
                raise MetainfoError(f"file path {'/'.join(path)!r} runs through a file")
            prefixes.add(path[:i])
        entries.append(FileEntry(path, length, offset))
        offset += length
    return tuple(entries)


def _parse_announce_list(raw: Any) -> tuple[tuple[str, ...], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MetainfoError("'announce-list' is not a list")
    tiers: list[tuple[str, ...]] = []
    for tier in raw:
        if not isinstance(tier, list) or not all(isinstance(u, bytes) for u in tier):
            raise MetainfoError("'announce-list' tier is not a list of strings")
        urls = tuple(u.decode("utf-8", "replace") for u in tier)
        if urls:
            tiers.append(urls)
    return tuple(tiers)


def _req_int(d: dict[bytes, Any], key: bytes) -> int:
    value = d.get(key)
    if not isinstance(value, int) or value < 0:
        raise MetainfoError(f"'{key.decode()}' is missing or not a non-negative integer")
    return value


def _req_bytes(d: dict[bytes, Any], key: bytes) -> bytes:
    value = d.get(key)
    if not isinstance(value, bytes):
        raise MetainfoError(f"'{key.decode()}' is missing or not a string")
    return value


def _opt_str(d: dict[bytes, Any], key: bytes, label: str) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise MetainfoError(f"'{label}' is not a string")
    return value.decode("utf-8", "replace")
