"""Keep requirements.lock honest against pyproject.toml.

    python -m scripts.lockcheck digest pyproject.toml   the digest lock.sh records
    python -m scripts.lockcheck check                   exit 1 when they disagree
    python -m scripts.lockcheck debs FILE               docs/debian-packages.md

The digest covers only the dependency lists, so editing the description
does not invalidate the lock; the check also proves that every pinned
version lies inside its range in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DIGEST_RE = re.compile(r"^# pyproject-dependencies-sha256: ([0-9a-f]{64})$")
PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
LOCKED_EXTRAS = ("dev", "fast")


def requirements(pyproject: Path) -> list[str]:
    """Every requirement setup.sh installs: the dependencies and the locked extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return list(project["dependencies"]) + [r for e in LOCKED_EXTRAS for r in extras.get(e, [])]


def digest(pyproject: Path) -> str:
    blob = json.dumps(sorted(requirements(pyproject))).encode()
    return hashlib.sha256(blob).hexdigest()


def pins(lock_text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lock_text.splitlines():
        m = PIN_RE.match(line)
        if m:
            found[canonicalize_name(m.group(1))] = m.group(2)
    return found


def problems(pyproject: Path, lock: Path) -> list[str]:
    """What is wrong between the two files, one sentence each (empty: they agree)."""
    if not lock.exists():
        return [f"{lock.name} is missing; run scripts/lock.sh"]
    text = lock.read_text()
    first = text.splitlines()[0] if text else ""
    m = DIGEST_RE.match(first)
    out: list[str] = []
    if m is None:
        out.append(f"{lock.name} has no dependency digest line; run scripts/lock.sh")
    elif m.group(1) != digest(pyproject):
        out.append(f"pyproject.toml's dependencies changed since {lock.name} was made; "
                   "run scripts/lock.sh")
    pinned = pins(text)
    for raw in requirements(pyproject):
        req = Requirement(raw)
        version = pinned.get(canonicalize_name(req.name))
        if version is None:
            out.append(f"{req.name} is required by pyproject.toml but not pinned in {lock.name}")
        elif not req.specifier.contains(version, prereleases=True):
            out.append(f"{req.name}=={version} in {lock.name} is outside {req.specifier}")
    for line in text.splitlines():
        if PIN_RE.match(line) and "\\" not in line:
            out.append(f"{line.split()[0]} has no hashes in {lock.name}")
    return out


def debian_packages(listing: Path) -> list[str]:
    names = []
    for line in listing.read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def debs_markdown(listing: Path) -> str:
    rows = []
    for name in debian_packages(listing):
        res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name],
                             capture_output=True, text=True, check=False)
        rows.append(f"| {name} | {res.stdout.strip() or 'not installed'} |")
    return "\n".join([
        "# Debian packages the suite runs against",
        "",
        "`scripts/setup.sh` installs these from Debian (the list is",
        "`scripts/debian-packages.txt`); `scripts/lock.sh` wrote this page on the",
        "machine where the lock was made and the suite passed. Debian's stable",
        "archive only takes security fixes, so a fresh machine gets these or a",
        "patched build of them.",
        "",
        "| package | version |",
        "|---|---|",
        *rows,
        "",
    ])


def main(argv: list[str]) -> int:
    if argv[:1] == ["digest"] and len(argv) == 2:
        print(digest(Path(argv[1])))
        return 0
    if argv[:1] == ["check"]:
        found = problems(ROOT / "pyproject.toml", ROOT / "requirements.lock")
        for p in found:
            print(f"lockcheck: {p}", file=sys.stderr)
        return 1 if found else 0
    if argv[:1] == ["debs"] and len(argv) == 2:
        sys.stdout.write(debs_markdown(Path(argv[1])))
        return 0
    print("usage: python -m scripts.lockcheck digest PYPROJECT | check | debs LIST",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
