"""Query builders shared by the tracker tests."""

from __future__ import annotations

from urllib.parse import quote_from_bytes

TOKEN = "secret-token-0123456789"


def announce_query(
    info_hash: bytes, peer_id: bytes, port: int = 6881, left: int = 100, **extra: str | int | bytes
) -> bytes:
    params: dict[str, str | int | bytes] = {
        "info_hash": info_hash,
        "peer_id": peer_id,
        "port": port,
        "uploaded": 0,
        "downloaded": 0,
        "left": left,
    }
    params.update(extra)
    parts = []
    for name, value in params.items():
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(f"{name}={quote_from_bytes(raw, safe='')}")
    return "&".join(parts).encode()


def pid(n: int) -> bytes:
    return b"-TT0001-" + n.to_bytes(12, "big")


def make_torrent(payload: bytes, name: str, announce: str, piece_length: int = 16384) -> bytes:
    """A single-file private .torrent for `payload` (built with roost.core.metainfo)."""
    import hashlib

    from roost.core import metainfo

    pieces = b"".join(
        hashlib.sha1(payload[i : i + piece_length]).digest()
        for i in range(0, len(payload), piece_length)
    )
    info = metainfo.build_info(name, len(payload), piece_length, pieces, private=True)
    return metainfo.build_torrent(info, [announce])
