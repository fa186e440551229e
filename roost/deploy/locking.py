"""The deploy side of the per-host deploy lock (see roost/target/hostlock.py for the host side).

A deploy takes the lock on every host it reached before any byte moves, by
starting `roost host-lock` and keeping that command's SSH channel open; it
ends the command with `release <outcome>` during cleanup, which writes the
host's deploy history. If this process dies, the channel closes and the
host keeps a stale record that the next deploy reports (and, with
--break-lock, takes over) - unless, as in a deploy, host-lock runs inside the
host's agent session, which releases it (result `lost`) when its channel closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import socket
from typing import Any

from roost.deploy.host import Agent, HostRun
from roost.deploy.transport import HostFailure
from roost.target.protocol import ErrorKind

EXIT_LOCKED = 6
LOCK_ANSWER_TIMEOUT = 60.0
RELEASE_TIMEOUT = 15.0


def operator() -> str:
    """Who deploys, for the lock record and the hosts' history: user@machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def acquire(run: HostRun, agent: Agent, dest: str, deploy_id: str, tag: str, who: str,
                  break_lock: bool) -> dict[str, Any] | None:
    """Hold the lock on this host; returns the stale record broken, if any."""
    assert run.transport is not None
    run.phase = "lock"
    args = ["host-lock", "--dest", dest, "--deploy-id", deploy_id, "--who", who,
            "--tag", tag, "--json"]
    if break_lock:
        args.append("--break-lock")
    stream = await run.transport.start(run.agent_cmd(agent, *args), stdin=True)
    # from here on cleanup sends `release`: a holder that got the lock but whose
    # answer we missed (timeout, Ctrl-C) frees it instead of leaving it stale
    run.lock_stream = stream

    async def first_line() -> dict[str, Any]:
        async for line in stream.lines():  # skip shell noise until the JSON answer
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict):
                    return data
        return {}

    try:
        answer = await asyncio.wait_for(first_line(), LOCK_ANSWER_TIMEOUT)
    except (asyncio.TimeoutError, TimeoutError):
        raise HostFailure(ErrorKind.LOCK, "the lock command did not answer") from None
    if answer.get("locked"):
        broke = answer.get("broke")
        return broke if isinstance(broke, dict) else None
    run.lock_stream = None
    stream.close()
    message = str(answer.get("message") or "cannot take the deploy lock")
    # only contention refuses the whole deploy; a full disk and the like fail this host
    held = ErrorKind.parse(answer.get("kind"), ErrorKind.LOCK) is ErrorKind.LOCK_HELD
    raise HostFailure(ErrorKind.LOCK_HELD if held else ErrorKind.LOCK, message)


async def release(run: HostRun, outcome: dict[str, Any]) -> None:
    """End our host-lock: it records `outcome` in the host's history and frees the lock."""
    stream, run.lock_stream = run.lock_stream, None
    if stream is None:
        return
    await stream.send("release " + json.dumps(outcome) + "\n", eof=True)
    with contextlib.suppress(asyncio.TimeoutError, TimeoutError, HostFailure):
        await asyncio.wait_for(stream.wait(), RELEASE_TIMEOUT)
    stream.close()


def outcome(run: HostRun, exit_code: int) -> dict[str, Any]:
    """What the host's history keeps about this deploy."""
    return {"result": run.status, "current": run.current, "kind": run.kind or None,
            "reason": run.reason or None, "exit_code": exit_code}
