"""The suite works from a shell that ignores SIGINT (tests/conftest.py).

CI runners often start a script's commands as background jobs, which start
with SIGINT ignored; an ignored signal survives fork and exec, so without
the conftest hook every Ctrl-C test would send a signal nobody hears.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = ("import signal; h = signal.getsignal(signal.SIGINT); "
         "print('ignored' if h == signal.SIG_IGN else 'heard')")


def test_processes_the_suite_starts_hear_sigint() -> None:
    assert signal.getsignal(signal.SIGINT) != signal.SIG_IGN
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=30, check=True)
    assert out.stdout.strip() == "heard"


def test_a_suite_started_with_sigint_ignored_still_hears_it() -> None:
    if os.environ.get("ROOST_NESTED_SIGNAL_TEST"):
        return  # the nested run below: the test above is the one that checks
    nested = subprocess.run(
        ["bash", "-c", 'trap "" INT; exec "$0" -m pytest -q -p no:cacheprovider "$1"',
         sys.executable, f"{__file__}::test_processes_the_suite_starts_hear_sigint"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "ROOST_NESTED_SIGNAL_TEST": "1"})
    assert nested.returncode == 0, nested.stdout[-2000:]
    assert "1 passed" in nested.stdout
