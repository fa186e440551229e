"""One agent process per host per deploy: a Transport that sends agent commands as records.

Theory of operation. After the agent is in place, the deploy starts
`roost session` once on each host (roost/target/session.py) over the host's
one SSH connection and wraps the host's transport in an AgentSession. Every
command the deploy would have run as `python3 -I <pyz> ARGS` (or the fetch's
a shell line that writes PIDFILE and execs `python3 -I <pyz> ARGS`, built as
AgentCommand, which carries ARGS and PIDFILE so nothing parses the shell text;
the session writes the pid file itself) becomes one request
record on that session's channel instead of a new SSH channel and a new
interpreter; the request's stdout lines, stderr and exit code come back as
reply records and are handed out as the same Result and Stream the SSH
transport gives, so host.py, locking.py and rollout.py read the very
replies they read before. Any other shell command (the probe, a dry run's
checks) goes to the inner transport unchanged.

If the session's channel ends (the connection dropped, the host died),
every open request fails as `lost` with the reason, and so does every
later one on that host.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shlex
from collections.abc import AsyncIterator
from typing import Any

from roost.deploy.host import Agent, HostRun
from roost.deploy.transport import AgentCommand, HostFailure, Result, Stream, Transport
from roost.target.protocol import ErrorKind, Phase, kind_of_exit

READY_TIMEOUT = 60.0
BYE_TIMEOUT = 5.0
_EOF = object()


class _Pending:
    """One request's replies: stdout lines, stderr text, then the exit code."""

    def __init__(self) -> None:
        self.lines: asyncio.Queue[object] = asyncio.Queue()
        self.err: list[str] = []
        self.exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def end(self, failure: HostFailure | None, code: int = 0) -> None:
        if self.exit.done():
            return
        if failure is not None:
            self.exit.set_exception(failure)
            self.exit.exception()  # retrieved here: a waiter may never come
        else:
            self.exit.set_result(code)
        self.lines.put_nowait(_EOF)


class AgentSession:
    """A Transport over one `roost session` on one host."""

    def __init__(self, inner: Transport, stream: Stream, prefix: list[str]) -> None:
        self.inner = inner
        self.stream = stream
        self.prefix = prefix  # [python, "-I", pyz]
        self.pending: dict[int, _Pending] = {}
        self.next_id = 1
        self.failure: HostFailure | None = None
        self.reader: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()  # one record at a time on the channel

    @classmethod
    async def open(cls, inner: Transport, python: str, pyz: str) -> AgentSession:
        """Start `roost session` on a host where the agent is in place."""
        prefix = [python, "-I", pyz]
        # -S as HostRun.probe_command's exec: the session needs nothing of site-packages
        stream = await inner.start(shlex.join([python, "-I", "-S", pyz, "session"]), stdin=True)
        lines = stream.lines()
        if not await _ready(stream, lines, []):
            code = await stream.wait()
            raise HostFailure(ErrorKind.AGENT, f"the agent session ended at start (exit {code})")
        return cls.started(inner, stream, prefix, lines)

    @classmethod
    def started(cls, inner: Transport, stream: Stream, prefix: list[str],
                lines: AsyncIterator[str]) -> AgentSession:
        session = cls(inner, stream, prefix)
        session.reader = asyncio.create_task(session._read(lines))
        return session

    # --- the channel --------------------------------------------------------------------

    async def _read(self, lines: AsyncIterator[str]) -> None:
        reason = "the agent session's channel closed"
        try:
            async for line in lines:
                try:
                    record = json.loads(line)
                    pending = self.pending.get(int(record["id"]))
                except (ValueError, KeyError, TypeError):
                    continue
                if pending is None:
                    continue
                if "out" in record:
                    pending.lines.put_nowait(str(record["out"]))
                elif "err" in record:
                    pending.err.append(str(record["err"]))
                elif "exit" in record:
                    self.pending.pop(int(record["id"]), None)
                    pending.end(None, int(record["exit"]))
        except HostFailure as exc:
            reason = str(exc)
        except Exception as exc:  # whatever ended the channel is the reason
            reason = f"{reason}: {exc}"
        self.failure = HostFailure(ErrorKind.LOST, f"connection lost: {reason}")
        for pending in list(self.pending.values()):
            pending.end(self.failure)
        self.pending.clear()

    async def _send(self, record: dict[str, Any]) -> None:
        if self.failure is not None:
            raise self.failure
        async with self.lock:
            await self.stream.send(json.dumps(record) + "\n")

    async def _request(self, argv: list[str], data: bytes | None, stdin: bool,
                       pidfile: str | None) -> tuple[int, _Pending]:
        rid, self.next_id = self.next_id, self.next_id + 1
        pending = _Pending()
        self.pending[rid] = pending
        try:
            await self._send({"id": rid, "op": "run", "argv": argv, "stdin": stdin,
                              "pidfile": pidfile,
                              "input": base64.b64encode(data).decode() if data else None})
        except BaseException:
            self.pending.pop(rid, None)
            raise
        return rid, pending

    @staticmethod
    def _agent_argv(command: str) -> tuple[list[str], str | None] | None:
        """An agent command's arguments and the fetch's pid file (host.py builds them as
        AgentCommand); None for any other shell command."""
        if isinstance(command, AgentCommand):
            return list(command.args), command.pidfile
        return None

    # --- Transport ----------------------------------------------------------------------

    async def run(self, command: str, *, input: bytes | None = None, timeout: float = 120.0
                  ) -> Result:
        parsed = self._agent_argv(command)
        if parsed is None:
            return await self.inner.run(command, input=input, timeout=timeout)
        rid, pending = await self._request(parsed[0], input, False, parsed[1])
        out: list[str] = []

        async def collect() -> int:
            while (line := await pending.lines.get()) is not _EOF:
                out.append(str(line))
            return await pending.exit

        try:
            code = await asyncio.wait_for(collect(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            await self._kill(rid)
            raise HostFailure(ErrorKind.TIMEOUT, f"a command took over {timeout:g} s") from None
        return Result(code, "".join(out), "".join(pending.err))

    async def start(self, command: str, *, stdin: bool = False) -> Stream:
        parsed = self._agent_argv(command)
        if parsed is None:
            return await self.inner.start(command, stdin=stdin)
        rid, pending = await self._request(parsed[0], None, stdin, parsed[1])
        return _SessionStream(self, rid, pending)

    async def _kill(self, rid: int) -> None:
        if rid in self.pending:
            with contextlib.suppress(HostFailure):
                await self._send({"id": rid, "op": "kill"})

    async def close(self) -> None:
        """The deploy is done with this host: `bye` (no cleanup needed), then close."""
        if self.failure is None:
            with contextlib.suppress(HostFailure, asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._bye(), BYE_TIMEOUT)
        self.stream.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        await self.inner.close()

    async def _bye(self) -> None:
        await self._send({"op": "bye"})
        await self.stream.send("", eof=True)
        await self.stream.wait()


async def _ready(stream: Stream, lines: AsyncIterator[str], before: list[str],
                 agent: Agent | None = None) -> bool:
    """Wait for the session's first record; the lines before it go to `before`. False
    when the command ended without starting a session. With `agent`, a probe that asks
    for it (`push`) is sent the agent."""

    async def first() -> bool:
        async for line in lines:
            if line.startswith("{"):
                with contextlib.suppress(ValueError, AttributeError):
                    if json.loads(line).get("session") == 1:
                        return True
            elif agent is not None and line.strip() == "push":
                await stream.send(agent.push_text)
            before.append(line)
        return False

    try:
        return await asyncio.wait_for(first(), READY_TIMEOUT)
    except (asyncio.TimeoutError, TimeoutError):
        stream.close()
        raise HostFailure(ErrorKind.AGENT, "the agent session did not start") from None


async def open_session(run: HostRun, agent: Agent) -> AgentSession:
    """Check python3 and start the agent's session, all on one channel: a host that
    lacks this build reads it on that channel first (HostRun.probe_command's push)."""
    assert run.transport is not None
    inner = run.transport
    run.phase = Phase.AGENT
    stream = await inner.start(run.probe_command(agent, then="session", push=True),
                               stdin=True)
    lines = stream.lines()
    before: list[str] = []
    started = await _ready(stream, lines, before, agent)
    code = None
    if not started:
        code = await stream.wait()
        if not any(line.startswith("home ") for line in before):
            # the probe did not run at all (sudo refused, ...): run() names the reason
            before = [(await inner.run(run.probe_command(agent), timeout=60)).stdout]
    try:
        cached = run.read_probe(agent, "".join(before))
    except HostFailure:
        stream.close()
        raise
    prefix = [agent.python, "-I", run.pyz]
    if started:
        run.pushed_agent = not cached
        return AgentSession.started(inner, stream, prefix, lines)
    if cached:  # cached, yet the session did not start: the agent says why on stderr
        raise HostFailure(ErrorKind.AGENT, "the agent session did not start")
    why = [line.split(" ", 1)[1].strip() for line in before if line.startswith("pusherror ")]
    raise HostFailure(kind_of_exit(code or 1, ErrorKind.AGENT),
                      f"cannot install the roost agent: {why[-1] if why else f'exit {code}'}")


class _SessionStream:
    """A started request, as the Stream a started SSH command is."""

    def __init__(self, session: AgentSession, rid: int, pending: _Pending) -> None:
        self.session = session
        self.rid = rid
        self.pending = pending
        self.tasks: set[asyncio.Task[None]] = set()

    async def lines(self) -> AsyncIterator[str]:
        while (line := await self.pending.lines.get()) is not _EOF:
            yield str(line)
        if self.pending.exit.done() and self.pending.exit.exception() is not None:
            raise self.pending.exit.exception()  # type: ignore[misc]

    async def wait(self) -> int:
        return await self.pending.exit

    def close(self) -> None:
        if self.pending.exit.done():
            return
        task = asyncio.get_running_loop().create_task(self.session._kill(self.rid))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def send(self, text: str, eof: bool = False) -> None:
        with contextlib.suppress(HostFailure):
            await self.session._send({"id": self.rid, "op": "send", "data": text, "eof": eof})
