"""Fixtures for the fleet lab (bench/lab). Root needed: skips locally, fails under CI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.lab import Lab
from tests.conftest import require_root, require_tool


def require_lab() -> None:
    require_root()
    require_tool("ip")
    require_tool("tc")


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """Factory: make_lab(n_hosts, rate_mbit, **kw) -> an open Lab, closed after the test."""
    require_lab()
    labs: list[Lab] = []

    def factory(n_hosts: int, rate_mbit: float, **kw: Any) -> Lab:
        lab = Lab(n_hosts, rate_mbit, **kw)
        labs.append(lab)
        lab.open()
        return lab

    yield factory
    for lab in labs:
        lab.close()


@pytest.fixture(scope="module")
def lab4() -> Iterator[Lab]:
    """A shared 4-host lab at 40 Mbit/s (htb, fair per peer), for read-only checks."""
    require_lab()
    with Lab(4, 40.0) as lab:
        yield lab
