"""Fixtures for the loopback swarm tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.swarm.harness import Procs


@pytest.fixture
def procs() -> Iterator[Procs]:
    """Every roost process a test starts is ended by PID at teardown."""
    registry = Procs()
    try:
        yield registry
    finally:
        registry.close()
