"""Pull mode on a fleet (root): agents in network namespaces, one coordinator.

A canary and two batches behind a health check run by each agent on its host: a
release whose check fails on the canary stops the rollout with every other host still
on the previous release; then a good release reaches 100 %. The host count is
ROOST_PULL_FLEET_HOSTS (default 16; bench/pull_fleet.py runs the same scenario and
prints its timings).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_root, require_tool
from tests.pull.fleet import PullFleet, rows, summary
from tests.pull.harness import release_tree

pytestmark = [pytest.mark.root, pytest.mark.slow]
HOSTS = int(os.environ.get("ROOST_PULL_FLEET_HOSTS", "16"))


@pytest.fixture(scope="module")
def fleet() -> Iterator[PullFleet]:
    require_root()
    for tool in ("ip", "ssh-keygen"):
        require_tool(tool)
    with PullFleet(HOSTS) as f:
        f.start_agents()
        yield f


def test_canary_failing_stops_the_rollout_then_a_good_release_reaches_all(
        fleet: PullFleet, tmp_path: Path) -> None:
    names = [h.name for h in fleet.hosts]
    code, report, err = fleet.publish(release_tree(tmp_path, "v1", size=2_000_000),
                                      "--tag", "v1", "--timeout", "180")
    assert code == 0, (summary(report), err[-3000:])
    assert set(fleet.currents().values()) == {"v1"}

    code, report, err = fleet.publish(
        release_tree(tmp_path, "v2", healthy=False, size=2_000_000), "--tag", "v2",
        "--timeout", "180", "--canary", "1", "--batch", "50%", "--health-check", "./check.sh",
        "--health-timeout", "20")
    assert code == 5, (summary(report), err[-3000:])
    by = rows(report)
    canary = by[names[0]]
    assert (canary["batch"], canary["status"], canary["kind"]) == (0, "failed", "health")
    assert "cannot reach its database" in canary["health"]["output"]
    assert canary["current"] == "v1"
    for name in names[1:]:
        assert (by[name]["status"], by[name]["current"]) == ("not-activated", "v1"), by[name]
        assert by[name]["batch"] in (1, 2)
    assert {by[n]["batch"] for n in names[1:]} == {1, 2}  # two batches behind the canary
    # on the hosts themselves, not only in the report
    assert set(fleet.currents().values()) == {"v1"}, fleet.currents()
    assert report["placement"] == {"v1": names}

    code, report, err = fleet.publish(release_tree(tmp_path, "v3", size=2_000_000),
                                      "--tag", "v3", "--timeout", "180", "--canary", "1",
                                      "--batch", "50%", "--health-check", "./check.sh")
    assert code == 0, (summary(report), err[-3000:])
    by = rows(report)
    assert all(by[n]["status"] == "ok" and by[n]["health"]["ok"] for n in names)
    assert sorted({by[n]["batch"] for n in names}) == [0, 1, 2]
    assert set(fleet.currents().values()) == {"v3"}
    assert report["message"] == f"v3 is current on {len(names)} of {len(names)} hosts"
