"""Pinned results of fixed simulator runs (bench.sim_fingerprint).

Speed-ups of the core and of the simulator's driver must not change what a
run does, event for event. These digests were recorded on main (06065d5)
before the seventh pass (docs/sim.md). A change that alters results on
purpose updates them here and says why in its commit and in docs/sim.md.
"""

from __future__ import annotations

import pytest

from bench.sim_fingerprint import SCENARIOS, fingerprint

PINNED = {
    "small-full": ("3df2539ca44e212a8b270119194b6cadc61cff5866aa9f879428feca814cbf25", 54699),
    "crowd-lean": ("c91cba6530290150b4da0c532cfc24a412699cfc3803a5ca04ccf7119e077484", 84185),
    "faults-zones": ("c568346a7d9edd37f13712fc2efe130a2dce586a5a50b865a628820b1782f150", 41281),
    "corrupt-loss": ("71581afcf8538249333ec5b6d6c8d811785cbd9b7eb520db6e9e857806be7c92", 20645),
}


def test_every_scenario_is_pinned() -> None:
    assert set(PINNED) == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_a_fixed_run_gives_its_pinned_result(name: str) -> None:
    digest, events = fingerprint(SCENARIOS[name])
    assert (digest, events) == PINNED[name], (
        f"{name}: the simulation's result changed (events {events}, pinned {PINNED[name][1]})"
    )
