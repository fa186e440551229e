"""`roost demo --netns`: peers in network namespaces behind tc-shaped links (root)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import require_root, require_tool
from tests.fleet.helpers import ROOT

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_demo_in_namespaces_reports_against_the_bound() -> None:
    require_root()
    require_tool("tc")
    before = _namespaces()
    result = subprocess.run(
        [sys.executable, "-m", "roost", "demo", "--netns", "--peers", "4", "--size", "8M",
         "--rate", "100mbit", "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert [h["status"] for h in report["hosts"]] == ["ok"] * 4
    assert all(h["announce"].startswith("10.78.") for h in report["hosts"])
    # the links are really shaped: no host can beat the bound S·8/R
    assert min(h["fetch_seconds"] for h in report["hosts"]) >= report["bound"]["bound_seconds"]
    assert not {n for n in _namespaces() - before if n.startswith("rd")}
