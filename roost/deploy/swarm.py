"""The deploy host's side of the swarm: the embedded tracker and the origin seeder.

The tracker runs in a child process (roost.deploy.trackerproc), driven
through its admin API as an external `roost tracker` is; the
swarm is registered under a secret token with the number of peers expected
to finish (hosts + the origins: this one and any --origin hosts), so peers
stop seeding once all are done, and hosts that fail are marked so they do
not hold the others up. The origin is `roost seed` (`--super-seed` with
network.super_seed) in its own process group: stopping it is one killpg of
a group we made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp

from roost.deploy.config import HostSpec
from roost.deploy.transport import spawn_roost_child
from roost.errors import RoostError, UsageError
from roost.target import agentargv, hostops
from roost.target.protocol import EventName, FetchEvent, ProtocolError

N = TypeVar("N", int, float)

STOP_WAIT = 5.0
TRACKER_START_TIMEOUT = 60.0


def route_source(address: str) -> str:
    """Our source address toward `address` (what hosts reach us at); no DNS guessing."""
    try:
        infos = socket.getaddrinfo(address, 22, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve {address}: {exc.strerror}") from None
    try:
        return hostops.route_source(str(infos[0][4][0]), 22)
    except OSError as exc:
        raise UsageError(f"no route to {address}: {exc.strerror}") from None


def listen_address(hosts: list[HostSpec], configured: str | None) -> str:
    if configured:
        return configured
    for host in hosts:
        with contextlib.suppress(UsageError):
            return route_source(host.address)
    raise UsageError("no route to any host; set network.listen in roost.toml")


class SwarmControl(Protocol):
    """What a deploy needs from its tracker, embedded (Swarm) or external (RemoteSwarm)."""

    @property
    def announce_url(self) -> str: ...
    @property
    def expected(self) -> int: ...
    @property
    def route_target(self) -> tuple[str, int]: ...
    async def one_fewer(self) -> None: ...
    async def host_failed(self, peer_id: bytes | None, address: str | None) -> None: ...
    async def stop(self) -> None: ...


class RemoteSwarm:
    """A swarm on an external `roost tracker`, driven through its admin API."""

    def __init__(
        self,
        base: str,
        session: aiohttp.ClientSession,
        info_hash: bytes,
        announce_url: str,
        expected: int,
    ) -> None:
        self.base = base
        self.session = session
        self.info_hash = info_hash
        self.announce_url = announce_url
        self.expected = expected

    @classmethod
    async def start(
        cls, url: str, admin_token: str, info_hash: bytes, name: str, hosts: int,
        seeders: int = 1,
    ) -> RemoteSwarm:
        base = url.rstrip("/")
        if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).hostname:
            raise UsageError(f"tracker URL {url!r} is not http(s)://host:port")
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=15),
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        try:
            summary = await _admin(
                session,
                "POST",
                f"{base}/admin/swarms",
                {"info_hash": info_hash.hex(), "name": name, "expected_peers": hosts + seeders},
            )
        except BaseException:
            await session.close()
            raise
        return cls(base, session, info_hash, str(summary["announce_url"]), hosts + seeders)

    @property
    def route_target(self) -> tuple[str, int]:
        parts = urlsplit(self.announce_url)
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)

    async def one_fewer(self) -> None:
        self.expected = max(1, self.expected - 1)
        with contextlib.suppress(RoostError):
            await _admin(
                self.session,
                "PATCH",
                f"{self.base}/admin/swarms/{self.info_hash.hex()}",
                {"expected_peers": self.expected},
            )

    async def host_failed(self, peer_id: bytes | None, address: str | None) -> None:
        if peer_id is None and not address:
            return
        body: dict[str, object] = (
            {"peer_id": peer_id.hex()} if peer_id is not None else {"address": address}
        )
        with contextlib.suppress(RoostError):
            await _admin(
                self.session,
                "POST",
                f"{self.base}/admin/swarms/{self.info_hash.hex()}/failed",
                body,
            )

    async def stop(self) -> None:
        """Unregister the swarm: the tracker forgets the deploy's secret announce URL."""
        try:
            with contextlib.suppress(RoostError):
                await _admin(
                    self.session, "DELETE", f"{self.base}/admin/swarms/{self.info_hash.hex()}", None
                )
        finally:
            await self.session.close()


class TrackerProcess:
    """The deploy's tracker process (roost.deploy.trackerproc), spawned as soon as the
    deploy knows its listen address, so that its interpreter start overlaps the hosts'
    connects instead of delaying the fetches."""

    def __init__(self, proc: asyncio.subprocess.Process, token: str) -> None:
        self.proc = proc
        self.token = token
        loop = asyncio.get_running_loop()
        self.port: asyncio.Task[int] = loop.create_task(_tracker_port(proc, token))
        self.cpu_s: float | None = None  # its CPU time, once ended
        # once it listens, its stderr (warnings, logged errors) is read and dropped:
        # a full pipe would block the tracker mid-announce
        self._drain = loop.create_task(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        with contextlib.suppress(BaseException):
            await self.port
        if not self.port.done() or self.port.cancelled() or self.port.exception() is not None:
            return  # _tracker_port read it for its error
        assert self.proc.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            while await self.proc.stderr.read(65536):
                pass

    @classmethod
    async def spawn(cls, listen: str) -> TrackerProcess:
        # it also exits when its stdin closes, which a dying deploy's does too
        proc = await spawn_roost_child("roost.deploy.trackerproc", listen,
                                       stdin=asyncio.subprocess.PIPE)
        return cls(proc, secrets.token_urlsafe(24))

    async def end(self) -> None:
        """Close its stdin (it exits at once: it keeps nothing) and reap it."""
        if not self.port.done():
            self.port.cancel()
        with contextlib.suppress(BaseException):
            await self.port
        self.cpu_s = await _end(self.proc)
        self._drain.cancel()
        with contextlib.suppress(BaseException):
            await self._drain


class Swarm:
    """The deploy's own tracker, in a TrackerProcess driven through its admin API:
    announces are not SSH work, and they get the other core."""

    def __init__(self, control: RemoteSwarm, tracker: TrackerProcess) -> None:
        self.control = control
        self.tracker = tracker

    @classmethod
    async def start(cls, listen: str, info_hash: bytes, name: str, hosts: int,
                    seeders: int = 1, spawned: asyncio.Task[TrackerProcess] | None = None
                    ) -> Swarm:
        """Register the deploy's swarm on its tracker (`spawned` early, or now)."""
        tracker = await (spawned if spawned is not None else TrackerProcess.spawn(listen))
        try:
            port = await tracker.port
            host = f"[{listen}]" if ":" in listen else listen
            control = await RemoteSwarm.start(f"http://{host}:{port}", tracker.token,
                                              info_hash, name, hosts, seeders)
        except BaseException:
            await tracker.end()
            raise
        return cls(control, tracker)

    @property
    def proc(self) -> asyncio.subprocess.Process:
        return self.tracker.proc

    @property
    def cpu_s(self) -> float | None:
        """The tracker process's CPU time, once stopped."""
        return self.tracker.cpu_s

    @property
    def announce_url(self) -> str:
        return self.control.announce_url

    @property
    def expected(self) -> int:
        return self.control.expected

    @property
    def route_target(self) -> tuple[str, int]:
        return self.control.route_target

    async def one_fewer(self) -> None:
        await self.control.one_fewer()

    async def host_failed(self, peer_id: bytes | None, address: str | None) -> None:
        await self.control.host_failed(peer_id, address)

    async def stop(self) -> None:
        """Stop the tracker process (its swarm, secret URL and all, goes with it)."""
        try:
            await self.control.session.close()
        finally:
            await self.tracker.end()


async def _tracker_port(proc: asyncio.subprocess.Process, token: str) -> int:
    """Hand the tracker its admin token; its port once it listens."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(token.encode() + b"\n")
    await proc.stdin.drain()
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), TRACKER_START_TIMEOUT)
    except (asyncio.TimeoutError, TimeoutError):
        raise RoostError(f"the deploy's tracker did not start within "
                         f"{TRACKER_START_TIMEOUT:g} s") from None
    port = _number(line, b"port", int)
    if port is not None and 0 < port < 65536:
        return port
    err = (await proc.stderr.read(4096)).decode(errors="replace").strip().splitlines()
    raise RoostError(f"the deploy's tracker failed: {err[-1] if err else 'no output'}")


def _number(line: bytes, name: bytes, kind: Callable[[str], N]) -> N | None:
    """The value of a `name value` line from the tracker process, or None."""
    parts = line[:200].split()
    if len(parts) != 2 or parts[0] != name:
        return None
    try:
        return kind(parts[1].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None


async def _end(proc: asyncio.subprocess.Process) -> float | None:
    """Close the tracker's stdin (it exits) and reap it; its CPU time, if it said."""
    assert proc.stdin is not None and proc.stdout is not None
    with contextlib.suppress(OSError):
        proc.stdin.close()
    cpu: float | None = None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), STOP_WAIT)
        cpu = _number(line, b"cpu_s", float)
        await asyncio.wait_for(proc.wait(), STOP_WAIT)
    except (asyncio.TimeoutError, TimeoutError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    return cpu


async def _admin(
    session: aiohttp.ClientSession, method: str, url: str, body: dict[str, object] | None
) -> dict[str, Any]:
    try:
        async with session.request(method, url, json=body) as response:
            data = await response.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        raise RoostError(f"tracker admin call {method} {url} failed: {exc}") from None
    if response.status >= 300 or not isinstance(data, dict):
        error = data.get("error") if isinstance(data, dict) else data
        raise RoostError(f"the tracker refused {method} {urlsplit(url).path}: {error}")
    return data


class Origin:
    """`roost seed` for the payload, as a child process group.

    Super-seeding (BEP 16, network.super_seed / --super-seed) sends each piece once
    before any twice, which the lab measured faster. It is off by default for
    deploys: a host that dies without closing its connections (power or link
    loss) keeps the pieces only it had "covered" until the idle timeout, and a
    CI run saw the other hosts stall behind it; a plain origin serves them."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls,
        torrent: Path,
        payload_dir: Path,
        listen: str,
        tracker_url: str,
        expected: int,
        upload_rate: str | None,
        super_seed: bool = False,
        tls: tuple[Path, Path, Path] | None = None,
        allow: list[str] | None = None,
        tree: bool = False,
        wait: bool = True,
        warm: asyncio.subprocess.Process | None = None,
    ) -> Origin:
        """Start the seeder; with `wait`, return once it seeds (else call `started`).
        `warm`: a process from `prestart`, told its arguments now (else a new one)."""
        argv = agentargv.seed(
            str(torrent), str(payload_dir), tracker_url, expected, listen,
            super_seed=super_seed, tree=tree, upload_rate=upload_rate, allow=allow,
            tls=agentargv.TlsFiles(*map(str, tls)) if tls is not None else None)
        proc = None
        if warm is not None and warm.returncode is None and warm.stdin is not None:
            with contextlib.suppress(ConnectionError):  # it died: start one as usual
                warm.stdin.write(json.dumps(argv).encode() + b"\n")
                await warm.stdin.drain()
                proc = warm
        if proc is None:
            if warm is not None:
                await cls.discard(warm)
            proc = await spawn_roost_child("roost", *argv, stdin=asyncio.subprocess.DEVNULL)
        origin = cls(proc)
        if wait:
            await origin.started()
        return origin

    @staticmethod
    async def prestart(workdir: Path) -> asyncio.subprocess.Process:
        """An origin process that imports the engine now and waits for its arguments
        (roost.deploy.originproc): give it to `start` once they are known. It runs in
        `workdir` (the deploy's scratch), which is how ps tells whose origin it is."""
        return await spawn_roost_child("roost.deploy.originproc",
                                       stdin=asyncio.subprocess.PIPE, cwd=workdir)

    @staticmethod
    async def discard(warm: asyncio.subprocess.Process) -> None:
        """A prestarted process that was never needed: it exits when its stdin closes."""
        if warm.stdin is not None:
            warm.stdin.close()
        await _end(warm)

    async def started(self) -> None:
        """Until the seeder says it started; RoostError (the seeder stopped) if it fails."""
        assert self.proc.stdout is not None
        while True:  # bounded by the process: it starts, or exits with an error
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
            except (asyncio.TimeoutError, TimeoutError):
                await self.stop()
                raise RoostError("the origin seeder did not start within 120 s") from None
            if not line:
                err = b""
                if self.proc.stderr is not None:
                    err = await self.proc.stderr.read()
                await self.stop()
                text = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise RoostError(f"the origin seeder failed: {text[0]}")
            try:
                event = FetchEvent.from_json(line.decode(errors="replace"))
            except ProtocolError:
                continue  # not an event (the seeder's other output)
            if event is not None and event.event is EventName.STARTED:
                asyncio.get_running_loop().create_task(self._drain())
                return

    async def _drain(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        with contextlib.suppress(Exception):
            await asyncio.gather(self.proc.stdout.read(), self.proc.stderr.read())

    async def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_WAIT)
        except (asyncio.TimeoutError, TimeoutError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
