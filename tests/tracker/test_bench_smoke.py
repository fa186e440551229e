"""The load benchmark still runs end to end (tiny, not a measurement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_runs_and_every_announce_succeeds(tmp_path: Path) -> None:
    require_tool("wrk")
    require_tool("opentracker")
    out = tmp_path / "bench.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "tracker_load.py"),
            "--duration",
            "1",
            "--warmup",
            "1",
            "--swarms",
            "2",
            "--peers",
            "50",
            "--connections",
            "4",
            "--max-requests",
            "3000",
            "--out",
            str(out),
        ],
        check=True,
        timeout=120,
        capture_output=True,
        cwd=ROOT,
    )
    report = json.loads(out.read_text())
    for target in ("roost", "opentracker"):
        for mode in ("keepalive", "new_connection"):
            run = report[target][mode]
            assert run["responses"] > 0, (target, mode, run)
            assert run["failures"] == 0 and run["non200"] == 0, (target, mode, run)
            # the count bound holds (up to the replies already in flight on the 4 connections)
            assert run["responses"] <= 3000 + 4
    assert "ratio_roost_over_opentracker" in report
