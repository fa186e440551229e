"""bench.tree_small still runs end to end on a tiny tree (it broke once when
bench.tree_delta's deploy() grew a return value, and only a long run showed it).
Needs root and the fleet's tools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleet.conftest import require_fleet_tools

pytestmark = [pytest.mark.root]
ROOT = Path(__file__).resolve().parents[2]


def test_the_many_files_bench_deploys_both_ways_and_compares() -> None:
    require_fleet_tools()
    done = subprocess.run(
        [sys.executable, "-m", "bench.tree_small", "--hosts", "2", "--files", "300",
         "--size-mib", "2", "--rate-mbit", "200"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["tar"]["identical"] and out["tree"]["identical"]
    assert out["tree"]["wire_bytes"] > 2 * 2**20  # two hosts got the ~2 MB tree
    assert out["tree_vs_tar_time"] > 0 and out["padding_share"] == 0.0
