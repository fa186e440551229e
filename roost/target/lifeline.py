"""A child process that ends when the process that started it dies.

Linux's PR_SET_PDEATHSIG sends a signal to a process when its parent dies, even
by SIGKILL. The parent cannot set it for the child without a `preexec_fn`, and a
fork of a process whose threads are running may run no Python safely (the deploy
has asyncssh's and the hash cache's threads by then). So the parent asks through
the environment, and the child arms the signal itself as its program starts.
"""

from __future__ import annotations

import contextlib
import os
import signal

#: the starter's pid, set by the process that wants its child to die with it
PARENT_ENV = "ROOST_DIE_WITH_PARENT"


def die_with_parent() -> None:
    """SIGTERM when the parent dies, even by SIGKILL (Linux PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError, ImportError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)


def armed_argv() -> list[str]:
    """A prefix for a command that is not roost (a shell, `ip netns exec`): util-linux's
    setpriv arms the signal and execs it, so the parent needs no preexec_fn. Empty
    where setpriv is missing (not Linux): the child then outlives a killed parent."""
    import shutil  # only a deploy's local transport asks: not at every program's start

    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM"] if setpriv else []


def asked_by(parent_pid: int) -> dict[str, str]:
    """The environment for a child that should die with `parent_pid`."""
    return {**os.environ, PARENT_ENV: str(parent_pid)}


def honour_request() -> None:
    """At a program's start: if the starter asked for it, die with the starter. The
    request is taken out of the environment, so grandchildren do not inherit it, and
    a starter that died before the signal was armed ends this process at once."""
    wanted = os.environ.pop(PARENT_ENV, None)
    if wanted is None:
        return
    die_with_parent()
    if not wanted.isdigit() or os.getppid() != int(wanted):
        os._exit(143)  # the starter is already gone (or the request is garbled): as SIGTERM
