"""The live panel's figures (one pass over the hosts) and its redraw pace."""

from __future__ import annotations

from roost.deploy.config import DeployConfig, HostSpec
from roost.deploy.run import new_deploy
from roost.deploy.view import progress, redraw_every
from roost.target.protocol import HostStatus


def test_progress_counts_every_state_and_names_the_three_slowest() -> None:
    specs = [HostSpec(name=f"h{i}", address=f"10.0.0.{i}") for i in range(7)]
    d = new_deploy(DeployConfig(dest="/srv"), specs, "v1")
    states = [HostStatus.FETCHING, HostStatus.FETCHING, HostStatus.CONNECTING,
              HostStatus.FETCHING, HostStatus.STAGED, HostStatus.ACTIVATED, HostStatus.FAILED]
    done = [50, 10, 0, 30, 100, 100, 20]
    for h, state, n in zip(d.hosts, states, done, strict=True):
        h.status, h.bytes_done, h.bytes_total, h.rate = state, n, 100, 2.0
    p = progress(d)
    assert (p["done"], p["running"], p["failed"]) == (2, 4, 1)
    assert p["rate"] == 14.0
    assert p["slowest"] == [("h2", 0.0), ("h1", 10.0), ("h3", 30.0)]
    assert p["percent"] == 0.0  # no payload yet: nothing to measure against


def test_big_fleets_are_redrawn_less_often() -> None:
    assert redraw_every(16) == 0.25
    assert redraw_every(1000) == 0.25
    assert redraw_every(4000) == 1.0
    assert redraw_every(10_000) == 2.0
