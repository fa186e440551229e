"""Fixtures for the fault tests (root: network namespaces, tc, nftables, sshd)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.lab import Lab
from tests.conftest import require_root, require_tool
from tests.fleet.fleet import SSHD, Fleet


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """Factory: make_lab(n_hosts, rate_mbit, **kw) -> an open Lab, closed after the test."""
    require_root()
    for tool in ("ip", "tc"):
        require_tool(tool)
    labs: list[Lab] = []

    def factory(n_hosts: int, rate_mbit: float, **kw: Any) -> Lab:
        if kw.get("loss_pct"):
            require_tool("nft")
        lab = Lab(n_hosts, rate_mbit, **kw)
        labs.append(lab)
        lab.open()
        return lab

    yield factory
    for lab in labs:
        lab.close()


@pytest.fixture(scope="module")
def fleet5() -> Iterator[Fleet]:
    """Five SSH hosts in namespaces (real sshd, private tmpfs destinations)."""
    require_root()
    for tool in ("ip", "unshare", "ssh", "ssh-keygen", "tc", SSHD):
        require_tool(tool)
    with Fleet(5, dest_size="128m") as fleet:
        yield fleet
