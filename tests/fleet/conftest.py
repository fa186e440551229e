"""Fixtures for the SSH fleet (root, sshd, ip, unshare)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import require_root, require_tool
from tests.fleet.fleet import LIVE, SSHD, Fleet


@pytest.fixture(scope="session", autouse=True)
def _no_fleet_outlives_the_session() -> Iterator[None]:
    """A safety net under every fixture's own `with Fleet(...)`: a test that was
    interrupted between start and its `with` still has its hosts torn down."""
    yield
    for fleet in list(LIVE.values()):
        fleet.stop()


def require_fleet_tools() -> None:
    require_root()
    for tool in ("ip", "unshare", "ssh", "ssh-keygen", "tc", SSHD):
        require_tool(tool)


@pytest.fixture(scope="module")
def fleet8() -> Iterator[Fleet]:
    """Eight hosts, plus host 8 with a 2 MiB destination (the disk-full host)."""
    require_fleet_tools()
    with Fleet(9, dest_size="96m", sizes={8: "2m"}) as fleet:
        yield fleet
