"""`roost deploy --origin HOST:PATH`: seeders on hosts that already hold the payload.

Theory of operation. A build machine or a fleet host that holds the artifact
can seed it from its own uplink, so the deploy no longer runs at the
operator's. Each origin host is reached as a target is (ssh_connect: the
inventory's or ~/.ssh/config's name, ProxyJump, sudo, known hosts) and gets
the agent and its session (roost.deploy.session); it takes no deploy lock
and its releases are never touched. Over that one channel the deploy
starts `host-origin` (roost.target.originseed) and sends it the same request
a host's prepare gets (manifest, torrent, TLS); the host hashes every piece
of PATH against it and only then says it is ready, with the address it will
announce. A copy that is not this payload is refused with one line: that
origin is dropped and the deploy goes on with the others. Once the
allowlist is known (the hosts' and the origins' addresses) the deploy sends
`seed`, and the origin announces to the tracker like any seeder. At the
end the deploy closes its input (the origin stops, says what it uploaded
and removes its files); if the operator's channel closes instead, the
session stops it and it cleans up the same way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import TypeVar

from roost.core.ratelimit import parse_rate
from roost.deploy.config import DeployConfig, HostSpec, parse_host
from roost.deploy.host import Agent, HostRun, prepare_input
from roost.deploy.pki import DeployCA
from roost.deploy.session import open_session
from roost.deploy.transport import HostFailure, Stream, Transport
from roost.errors import UsageError
from roost.target import agentargv
from roost.target.protocol import (
    MAX_PREPARE_INPUT,
    ErrorKind,
    ErrorRecord,
    EventName,
    FetchEvent,
    Manifest,
    OriginFacts,
    OriginOrder,
    OriginReady,
    OriginSeeded,
    PayloadFormat,
    ProtocolError,
)

STOP_WAIT = 10.0  # seconds an origin gets to stop and report after its input closes
START_WAIT = 60.0  # from `seed` to its `started` event

Connector = Callable[[HostSpec], Awaitable[Transport]]
_T = TypeVar("_T")


class OriginState(str, Enum):
    """Where one --origin host stands (`status` in its row)."""

    WAITING = "waiting"
    CONNECTING = "connecting"
    CHECKED = "checked"  # --dry-run: looked at, read-only
    CHECKING = "checking"  # hashing its copy against the torrent
    READY = "ready"  # its copy is the payload
    SEEDING = "seeding"
    STOPPED = "stopped"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class OriginSpec:
    host: HostSpec
    path: str  # the payload on that host: the file, or the directory
    text: str  # as the operator wrote it


def parse_origin(text: str, fleet: list[HostSpec], config: DeployConfig) -> OriginSpec:
    """`[user@]host[:port]:/abs/path`; a host of the fleet by name keeps its inventory
    settings (address, port, user, announce address)."""
    head, sep, tail = text.strip().partition(":/")
    if not sep or not head:
        raise UsageError(f"--origin {text!r}: give the payload's path on that host, as "
                         "HOST:/absolute/path")
    path = "/" + tail
    if any(c in path for c in "\0\n\r") or "/../" in path + "/":
        raise UsageError(f"--origin {text!r}: the path must be a plain absolute path")
    known = {h.name: h for h in fleet}
    host = known.get(head)
    if host is None:
        host = parse_host(head, config.ssh_port)
        host = replace(host, user=host.user or config.user, interface=config.interface)
    return OriginSpec(host, path.rstrip("/") or "/", text.strip())


def parse_origins(config: DeployConfig, fleet: list[HostSpec]) -> list[OriginSpec]:
    specs = [parse_origin(t, fleet, config) for t in config.origins]
    seen: set[tuple[str, str]] = set()
    for spec in specs:
        if (spec.host.name, spec.path) in seen:
            raise UsageError(f"--origin {spec.text!r} is given twice")
        seen.add((spec.host.name, spec.path))
    if not config.local_origin and not specs:
        raise UsageError("--no-local-origin needs at least one --origin HOST:PATH")
    return specs


def check_format(origins: list[OriginSpec], fmt: PayloadFormat) -> None:
    """An origin holds the payload's own bytes: a tarball packed here is on no host."""
    if origins and fmt in (PayloadFormat.TAR, PayloadFormat.TAR_ZST):
        raise UsageError("--origin needs a payload a host can hold as is: a file, or a "
                         "directory sent as tree or dir (not tar)")


class RemoteOrigin:
    """One --origin host: its connection, the check of its copy, its seeder."""

    def __init__(self, spec: OriginSpec) -> None:
        self.spec = spec
        self.run = HostRun(spec.host)  # the connection, the agent, failure and timings
        self.state = OriginState.WAITING
        self.stream: Stream | None = None
        self.lines: AsyncIterator[str] | None = None
        self.address: str | None = None
        self.pieces = 0
        self.uploaded: int | None = None
        self.exit: int | None = None
        self.follower: asyncio.Task[None] | None = None
        self.stopping = False
        self.detail = ""  # --dry-run: what the check saw
        self.facts: OriginFacts | None = None  # --dry-run: python3 and PATH as seen

    @property
    def name(self) -> str:
        return self.spec.text

    @property
    def failed(self) -> bool:
        return self.run.failed

    @property
    def seeding(self) -> bool:
        return self.state is OriginState.SEEDING

    def fail(self, exc: BaseException) -> None:
        if self.run.failed:
            return
        failure = exc if isinstance(exc, HostFailure) else HostFailure(
            ErrorKind.INTERNAL, f"unexpected {type(exc).__name__}: {exc}")
        self.run.fail(failure)
        self.state = OriginState.FAILED
        self.run.mark("failed")

    # --- the steps ----------------------------------------------------------------------

    async def reach(self, agent: Agent, connect: Connector, dry_run: bool) -> None:
        self.state = OriginState.CONNECTING
        self.run.mark("connect")
        self.run.transport = await connect(self.spec.host)
        self.run.mark("connected")
        if dry_run:
            await self._look(agent)
            return
        self.run.transport = await open_session(self.run, agent)

    async def _look(self, agent: Agent) -> None:
        """--dry-run: python3 and PATH, read-only (the pieces are hashed at deploy time)."""
        assert self.run.transport is not None
        script = ("import json, os, sys; p = sys.argv[1]; e = os.path.exists(p); "
                  "print(json.dumps({'py': sys.version_info >= (3, 10), 'exists': e, "
                  "'dir': os.path.isdir(p), 'size': os.path.getsize(p) if e else 0}))")
        command = " ".join(shlex.quote(a) for a in (agent.python, "-I", "-c", script,
                                                    self.spec.path))
        result = await self.run.transport.run(command, timeout=60)
        try:
            facts = OriginFacts.from_json(result.stdout.strip().splitlines()[-1])
        except (ProtocolError, IndexError):
            raise HostFailure(ErrorKind.PYTHON, f"no usable {agent.python} on this host: "
                              f"{result.last_error()}") from None
        if not facts.py:
            raise HostFailure(ErrorKind.PYTHON, f"{agent.python} is older than 3.10")
        self.facts = facts
        self.state = OriginState.CHECKED

    def judge(self, manifest: Manifest) -> None:
        """--dry-run: whether PATH looks like the payload (kind and size)."""
        facts = self.facts
        if facts is None:
            return
        want_dir = manifest.format in (PayloadFormat.TREE, PayloadFormat.DIR)
        if not facts.exists:
            raise HostFailure(ErrorKind.ORIGIN, f"{self.spec.path} does not exist there")
        if facts.dir != want_dir:
            kind = "a directory" if want_dir else "a file"
            raise HostFailure(ErrorKind.ORIGIN, f"{self.spec.path} is not {kind}, as this "
                              f"payload ({manifest.format}) is")
        if not want_dir and facts.size != manifest.size:
            raise HostFailure(ErrorKind.ORIGIN, f"{self.spec.path} is {facts.size} bytes; "
                              f"the payload is {manifest.size}")
        self.detail = "would seed (its pieces are hashed before it does)"

    async def check(self, agent: Agent, deploy_id: str, manifest: Manifest, torrent: bytes,
                    pki: DeployCA | None, tracker: tuple[str, int], timeout: float) -> None:
        """Start host-origin, send the request; returns once the host proved its copy."""
        assert self.run.transport is not None
        self.state = OriginState.CHECKING
        spec = self.spec.host
        args = agentargv.origin(self.spec.path, deploy_id, *tracker,
                                address=spec.announce or None, interface=spec.interface or None)
        blob = prepare_input(manifest, torrent, pki.issue(f"origin-{spec.name}").to_dict()
                             if pki is not None else None)
        if len(blob) > MAX_PREPARE_INPUT:
            raise HostFailure(ErrorKind.ORIGIN, "the deploy request is over what a host takes")
        self.stream = await self.run.transport.start(self.run.agent_cmd(agent, *args),
                                                     stdin=True)
        self.lines = self.stream.lines()
        await self.stream.send(base64.b64encode(blob).decode() + "\n")
        ready = await self._expect(OriginReady.from_json, timeout, "checking its copy")
        self.address, self.pieces = ready.address, ready.pieces
        self.state = OriginState.READY
        self.run.mark("checked")

    async def seed(self, order: OriginOrder) -> None:
        """Tell a checked origin to seed; returns at its `started` event."""
        assert self.stream is not None
        await self.stream.send(f"seed {order.to_json()}\n")
        await self._expect(_started, START_WAIT, "starting its seeder")
        self.state = OriginState.SEEDING
        self.run.mark("seeding")
        self.follower = asyncio.create_task(self._follow())

    async def _expect(self, parse: Callable[[str], _T], timeout: float, doing: str) -> _T:
        """The next line `parse` takes; an error record, the end, or the time limit fail."""
        assert self.lines is not None and self.stream is not None
        lines = self.lines

        async def first() -> _T | None:
            async for line in lines:
                with contextlib.suppress(ProtocolError):
                    error = ErrorRecord.from_json(line)
                    raise HostFailure(ErrorKind.ORIGIN, error.message)
                with contextlib.suppress(ProtocolError):
                    return parse(line)
            return None

        try:
            found = await asyncio.wait_for(first(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise HostFailure(ErrorKind.TIMEOUT, f"over {timeout:g} s {doing}") from None
        if found is None:
            self.exit = await self.stream.wait()
            raise HostFailure(ErrorKind.ORIGIN, f"the origin ended while {doing} "
                              f"(exit {self.exit})")
        return found

    async def _follow(self) -> None:
        """Read the seeder's lines to its end: what it uploaded, and how it ended."""
        assert self.lines is not None and self.stream is not None
        said = ""  # the seeder's own error line, if it ended on one
        with contextlib.suppress(HostFailure):
            async for line in self.lines:
                with contextlib.suppress(ProtocolError):
                    said = ErrorRecord.from_json(line).message
                with contextlib.suppress(ProtocolError):
                    self.uploaded = OriginSeeded.from_json(line).uploaded
        try:
            self.exit = await self.stream.wait()
        except HostFailure as exc:
            self.fail(exc)
            return
        if self.stopping and self.exit == 0:
            self.state = OriginState.STOPPED
        else:
            self.fail(HostFailure(ErrorKind.ORIGIN, f"the origin's seeder exited with "
                                  f"{self.exit} during the transfer"
                                  + (f": {said}" if said else "")))

    async def stop(self) -> None:
        """Close the origin's input: it stops, reports and removes its files; then the
        session and the connection go."""
        self.stopping = True
        if self.stream is not None and self.exit is None:
            with contextlib.suppress(Exception):
                await self.stream.send("", eof=True)
            waiter: asyncio.Future[object] = (
                self.follower if self.follower is not None
                else asyncio.ensure_future(self.stream.wait()))
            try:
                await asyncio.wait_for(asyncio.shield(waiter), STOP_WAIT)
            except (asyncio.TimeoutError, TimeoutError, Exception):
                self.stream.close()  # SIGTERM: it still removes its files
        if self.state not in (OriginState.FAILED, OriginState.STOPPED, OriginState.CHECKED):
            self.state = OriginState.STOPPED
        if self.run.transport is not None:
            with contextlib.suppress(Exception):
                await self.run.transport.close()


def _started(line: str) -> FetchEvent:
    event = FetchEvent.from_json(line)
    if event is None or event.event is not EventName.STARTED:
        raise ProtocolError("not the started event")
    return event


def make_order(tracker: str, expected: int, config: DeployConfig, allow: list[str] | None
               ) -> OriginOrder:
    rate = parse_rate(config.upload_rate) if config.upload_rate else None
    return OriginOrder(tracker, expected, config.port_range,
                       tuple(allow) if allow is not None else None, rate, config.super_seed)


def origin_rows(origins: list[RemoteOrigin]) -> list[dict[str, object]]:
    """One row per --origin for `--json` and the final table."""
    rows: list[dict[str, object]] = []
    for o in origins:
        start, end = o.run.times.get("connect"), o.run.times.get("checked")
        rows.append({
            "origin": o.name,
            "host": o.spec.host.name,
            "path": o.spec.path,
            "address": o.spec.host.address,
            "announce": o.address,
            "status": o.state.value,
            "kind": o.run.kind or None,
            "reason": o.run.reason or None,
            "detail": o.detail or None,
            "uploaded": o.uploaded,
            "agent": "pushed" if o.run.pushed_agent else ("cached" if o.run.pyz else "-"),
            "check_seconds": round(end - start, 3) if start and end else None,
        })
    return rows


# --- all of a deploy's origins at once ----------------------------------------------------


async def reach_all(origins: list[RemoteOrigin], agent: Agent, connect: Connector,
                    config: DeployConfig) -> None:
    """Connect to every origin (and, unless this is a dry run, start its agent session)."""
    launch = asyncio.Semaphore(max(1, config.concurrency))

    async def one(origin: RemoteOrigin) -> None:
        try:
            async with launch:
                await origin.reach(agent, connect, config.dry_run)
        except Exception as exc:  # one origin's trouble stays on that origin
            origin.fail(exc)

    await asyncio.gather(*(one(o) for o in origins))


async def check_all(origins: list[RemoteOrigin], agent: Agent, deploy_id: str,
                    manifest: Manifest, torrent: bytes, pki: DeployCA | None,
                    tracker: tuple[str, int], timeout: float,
                    dropped: Callable[[], Awaitable[None]]) -> None:
    """Every reached origin proves its copy; one that cannot is dropped (`dropped` is
    told, so the tracker stops counting it)."""

    async def one(origin: RemoteOrigin) -> None:
        try:
            await origin.check(agent, deploy_id, manifest, torrent, pki, tracker, timeout)
        except Exception as exc:
            origin.fail(exc)
            await dropped()

    await asyncio.gather(*(one(o) for o in origins if not o.failed))


async def seed_all(origins: list[RemoteOrigin], order: OriginOrder,
                   dropped: Callable[[], Awaitable[None]]) -> None:
    async def one(origin: RemoteOrigin) -> None:
        try:
            await origin.seed(order)
        except Exception as exc:
            origin.fail(exc)
            await dropped()

    await asyncio.gather(*(one(o) for o in origins if o.state is OriginState.READY))


async def stop_all(origins: list[RemoteOrigin]) -> None:
    await asyncio.gather(*(o.stop() for o in origins), return_exceptions=True)


def addresses(origins: list[RemoteOrigin]) -> list[str | None]:
    """What the swarm's allowlist must admit for the origins that may seed."""
    return [o.address for o in origins if not o.failed]


def no_origin_left(origins: list[RemoteOrigin]) -> str:
    """The deploy's message when --no-local-origin left it no seeder at all."""
    why = "; ".join(f"{o.name}: {o.run.reason}" for o in origins if o.failed)
    return f"no origin can seed the payload ({why}); nothing was changed"
