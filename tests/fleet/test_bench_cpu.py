"""bench.tree_delta's CPU budget: what a host's sshd starts is counted on the
hosts' side, what a wrapped command starts on the operator's, and the groups
are gone afterwards. Needs root, the fleet's tools and a cgroup v2 hierarchy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.lab.cgroup import unified_root
from bench.tree_delta import CpuBudget
from tests.fleet.conftest import require_fleet_tools
from tests.fleet.fleet import Fleet

pytestmark = [pytest.mark.root]

# burns about 0.3 s of CPU, then exits
BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_each_side_counts_only_its_own_processes() -> None:
    require_fleet_tools()
    if unified_root() is None:
        pytest.skip("no writable cgroup v2 hierarchy")
    with Fleet(1, dest_size="16m") as fleet:
        budget = CpuBudget()
        try:
            budget.add_fleet(fleet)
            before = budget.sample()
            # an ssh session on the host: its sshd child and the python it runs
            out = fleet.ssh(0, f"python3 -c {_q(BURN)}", timeout=60)
            assert out.returncode == 0, out.stderr
            middle = budget.sample()
            done = subprocess.run(budget.wrap([sys.executable, "-c", BURN]), timeout=60)
            assert done.returncode == 0
            after = budget.sample()
            on_host = CpuBudget.figures(before, middle, 1.0, 1.0)
            operator = CpuBudget.figures(middle, after, 1.0, 1.0)
            assert on_host["hosts"]["total"] >= 0.3
            assert on_host["operator"]["total"] < 0.05
            assert operator["operator"]["total"] >= 0.3
            assert operator["hosts"]["total"] < 0.05
            assert on_host["total"] == pytest.approx(
                on_host["hosts"]["total"] + on_host["operator"]["total"], abs=0.02)
        finally:
            budget.close()
        assert not budget.parent.exists()


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)
