"""Throwaway OpenSSH keys and allowed-signers files for the pull-mode tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_key(directory: Path, name: str) -> Path:
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True, timeout=30)
    return key


def allowed_signers(path: Path, *keys: tuple[str, Path]) -> Path:
    """One line per (principal, key): `principal namespaces="roost" <public key>`."""
    lines = []
    for principal, key in keys:
        kind, blob = key.with_suffix(".pub").read_text().split()[:2]
        lines.append(f'{principal} namespaces="roost" {kind} {blob}\n')
    path.write_text("".join(lines))
    return path
