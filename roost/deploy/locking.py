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
import socket

from roost.deploy.host import Agent, HostRun
from roost.deploy.transport import HostFailure
from roost.target import agentargv
from roost.target.protocol import (
    MAX_TEXT,
    DeployRecord,
    ErrorKind,
    ErrorRecord,
    LockAnswer,
    Phase,
    ProtocolError,
    release_line,
)

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
                  break_lock: bool) -> DeployRecord | None:
    """Hold the lock on this host; returns the stale record broken, if any."""
    assert run.transport is not None
    run.phase = Phase.LOCK
    args = agentargv.lock(dest, deploy_id, who, tag, break_lock)
    stream = await run.transport.start(run.agent_cmd(agent, *args), stdin=True)
    # from here on cleanup sends `release`: a holder that got the lock but whose
    # answer we missed (timeout, Ctrl-C) frees it instead of leaving it stale
    run.lock_stream = stream

    async def first_line() -> LockAnswer | ErrorRecord | None:
        async for line in stream.lines():  # skip shell noise until the JSON answer
            if not line.lstrip().startswith("{"):
                continue
            with contextlib.suppress(ProtocolError):
                return ErrorRecord.from_json(line)
            return LockAnswer.from_json(line)  # neither: one clear ProtocolError
        return None

    try:
        answer = await asyncio.wait_for(first_line(), LOCK_ANSWER_TIMEOUT)
    except (asyncio.TimeoutError, TimeoutError):
        raise HostFailure(ErrorKind.LOCK, "the lock command did not answer") from None
    except ProtocolError as exc:
        answer = ErrorRecord(ErrorKind.LOCK, str(exc))
    if isinstance(answer, LockAnswer) and answer.locked:
        return answer.broke
    run.lock_stream = None
    stream.close()
    if not isinstance(answer, ErrorRecord):
        raise HostFailure(ErrorKind.LOCK, "cannot take the deploy lock")
    # only contention refuses the whole deploy; a full disk and the like fail this host
    held = answer.kind is ErrorKind.LOCK_HELD
    raise HostFailure(ErrorKind.LOCK_HELD if held else ErrorKind.LOCK, answer.message)


async def release(run: HostRun, outcome: DeployRecord) -> None:
    """End our host-lock: it records `outcome` in the host's history and frees the lock."""
    stream, run.lock_stream = run.lock_stream, None
    if stream is None:
        return
    await stream.send(release_line(outcome), eof=True)
    with contextlib.suppress(asyncio.TimeoutError, TimeoutError, HostFailure):
        await asyncio.wait_for(stream.wait(), RELEASE_TIMEOUT)
    stream.close()


def outcome(run: HostRun, exit_code: int) -> DeployRecord:
    """What the host's history keeps about this deploy."""
    return DeployRecord(result=run.status, current=run.current, kind=run.kind or None,
                        reason=(run.reason or "")[:MAX_TEXT] or None, exit_code=exit_code)
