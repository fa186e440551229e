"""Shared test helpers.

Under CI (the CI environment variable is set) a test whose tool is missing or
that needs root fails instead of skipping: a skipped interop test is an
untested claim. On a developer's machine it skips with a clear reason.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = bool(os.environ.get("CI"))


def unavailable(reason: str) -> None:
    """Skip locally, fail under CI."""
    if IN_CI:
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """Return the path of executable `name`, or skip/fail when it is missing."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed")
    assert path is not None
    return path


def require_root() -> None:
    if os.geteuid() != 0:
        unavailable("needs root (network namespaces, tc)")


def require_module(name: str) -> object:
    try:
        return __import__(name)
    except ImportError:
        unavailable(f"Python module {name} is not installed")
        raise
