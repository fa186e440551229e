"""Shared test helpers.

Under CI (the CI environment variable is set) a test whose tool is missing or
that needs root fails instead of skipping: a skipped interop test is an
untested claim. On a developer's machine it skips with a clear reason.
"""

from __future__ import annotations

import os
import shutil
import signal

import pytest

IN_CI = bool(os.environ.get("CI"))


def pytest_configure(config: pytest.Config) -> None:
    """Give the suite, and so every process it starts, default signal dispositions.

    A shell that runs the suite as a background job of a script (as many CI
    runners do) starts it with SIGINT ignored, and an ignored signal stays
    ignored across fork and exec: the tests that press Ctrl-C on a deploy or a
    lab would never be heard. A handled signal is reset to the default in a
    child at exec, so installing Python's own handler here is enough.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGHUP, signal.SIGQUIT):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
    # SIGTERM (a CI job cancelled) unwinds like Ctrl-C, so every fixture's teardown
    # still removes its namespaces, processes and temp dirs
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


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
