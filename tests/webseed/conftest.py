"""Fixtures for the web seed tests: roost processes are started and ended as in tests/swarm,
and a real nginx serves a fresh document root."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.swarm.conftest import procs  # noqa: F401  (one fixture ends every roost process by PID)
from tests.webseed.nginx import Nginx


@pytest.fixture
def www(tmp_path: Path) -> Iterator[tuple[Path, Nginx]]:
    """(document root, the nginx serving it); nginx is stopped after the test. (The nginx
    unit tests define their own `www`.)"""
    root = tmp_path / "www"
    root.mkdir()
    server = Nginx(root, tmp_path / "nginx")
    try:
        yield root, server
    finally:
        server.close()
