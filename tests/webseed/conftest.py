"""Fixtures for the web seed tests: roost processes are started and ended as in tests/swarm."""

from tests.swarm.conftest import procs  # noqa: F401  (one fixture ends every roost process by PID)
