"""A deploy's manifest is validated once per host, by host-prepare.

Standard library only (ships in the zipapp).

Why: a tree manifest of 100,000 entries took seconds to validate (every
path through the safe-path function, every field's type and range, the
tree's shape, its canonical digest), and each host did it three times:
host-prepare, fetch and stage, on the same bytes. Now host-prepare, after
its full validation, writes the manifest (`manifest.json`) and beside it
`manifest.checked`: {"version": 1, "sha256": SHA-256 of exactly those
bytes}. fetch and stage read the manifest's bytes, hash them, and build the
manifest without validating it again only when the record names exactly
that SHA-256; anything else (no record, an unreadable or malformed one, a
manifest changed by even one byte) is refused as a cache, and the manifest
goes through the full validation as before, which refuses a hostile one.

What it trusts: the deploy directory (`<dest>/.roost/deploys/<id>/`) is
written only by the user roost runs as, the same user who owns the
releases; whoever could rewrite both files there could rewrite a release
directly. The record guards against a manifest changed after it was
checked, not against that user.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from roost.target.fsutil import atomic_write

CHECKED = "manifest.checked"
VERSION = 1


def record_of(manifest: Path) -> Path:
    return manifest.with_name(CHECKED)


def remember(manifest: Path, text: bytes) -> None:
    """Write `text` as the manifest, then the record that it was validated."""
    atomic_write(manifest, text)
    digest = hashlib.sha256(text).hexdigest()
    atomic_write(record_of(manifest), json.dumps({"version": VERSION, "sha256": digest}).encode())


def was_checked(manifest: Path, text: bytes) -> bool:
    """Whether host-prepare validated exactly these manifest bytes."""
    try:
        data = json.loads(record_of(manifest).read_bytes())
    except (OSError, ValueError):
        return False
    return bool(data == {"version": VERSION, "sha256": hashlib.sha256(text).hexdigest()})
