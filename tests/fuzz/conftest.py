"""Hypothesis budget for the fuzz suite.

Example counts are fixed per test (see EXAMPLES) so the whole directory runs
in well under 90 s on two busy cores; ROOST_FUZZ_SCALE multiplies them for a
longer local run (bench/fuzz_long.py is the time-boxed long runner).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = float(os.environ.get("ROOST_FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


settings.register_profile(
    "roost-fuzz",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
FUZZ = settings.get_profile("roost-fuzz")
