"""Sample release trees and an exact signature to compare two trees by."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def make_sample_tree(root: Path, *, big: int = 300_000) -> Path:
    """Files of several modes, a big file, symlinks (file, dir, dangling), empty dirs."""
    (root / "bin").mkdir(parents=True)
    (root / "etc" / "conf.d").mkdir(parents=True)
    (root / "var" / "empty" / "deeper").mkdir(parents=True)
    (root / "private").mkdir(mode=0o750)
    (root / "private").chmod(0o750)
    tool = root / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho hello\n")
    tool.chmod(0o755)
    (root / "etc" / "app.conf").write_text("port = 8080\n")
    (root / "etc" / "secret").write_text("s3cret\n")
    (root / "etc" / "secret").chmod(0o600)
    (root / "private" / "key").write_bytes(os.urandom(64))
    (root / "version").write_text("1")
    (root / "data.bin").write_bytes(os.urandom(big))
    (root / "empty-file").write_bytes(b"")
    os.symlink("bin/tool", root / "run")
    os.symlink("../etc", root / "bin" / "etc-link")
    os.symlink("not-there-yet", root / "dangling")
    return root


def tree_signature(root: Path) -> dict[str, tuple[object, ...]]:
    """relative path -> (kind, mode, content digest or link target); follows `root` itself."""
    root = root.resolve()
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = path.relative_to(root).as_posix()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode)
            else:
                out[rel] = ("file", mode, hashlib.sha256(path.read_bytes()).hexdigest())
    return out
