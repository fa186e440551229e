"""The pull-mode coordinator behind `roost publish`: a release channel for agents.

Theory of operation. The payload is packed and seeded exactly as a push
deploy does it (roost.deploy.pack, the embedded or external tracker, the
origin seeder); instead of SSH, hosts run `roost agent` and long-poll this
process over HTTP (aiohttp; TLS when given a certificate):

    GET  /v1/channel?host=&since=&wait=   the deploy's signed envelopes, in order
    GET  /v1/torrent/<deploy id>          the .torrent (its SHA-256 is in the release)
    POST /v1/report                       an agent's progress and results

Every envelope is signed with the publisher's OpenSSH key (roost.target.signing);
the coordinator itself is not trusted by the agents, only the key is. The
rollout is the push deploy's: the fetch phase ends when every host has staged
or failed, or at --timeout (a silent host counts as failed); then the success
policy, then the canary and batches (roost.deploy.batches), each an `activate`
instruction naming its hosts, with the health check run by each agent on its
own host. A batch with a failure gets a `rollback` instruction and the later
batches are never told to activate. Results go into the same Deploy and
HostRun records as a push deploy, so the table, --json and exit codes match.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import ssl
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from roost.core.metainfo import check_web_seed_url, parse
from roost.deploy import rollout
from roost.deploy.batches import plan_batches
from roost.deploy.host import HostRun
from roost.deploy.pack import make_metainfo, pack
from roost.deploy.run import (
    EXIT_ACTIVATE_BELOW_MIN,
    EXIT_FETCH_BELOW_MIN,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Deploy,
    _check_web_seed_format,
    _start_swarm,
)
from roost.deploy.scratch import make_scratch
from roost.deploy.swarm import Origin, SwarmControl
from roost.deploy.transport import HostFailure
from roost.errors import UsageError
from roost.target.protocol import (
    ActivateOrder,
    AgentReport,
    ErrorKind,
    HostStatus,
    Instruction,
    Phase,
    ProtocolError,
    ReleaseOrder,
    RollbackOrder,
)
from roost.target.signing import sign

MAX_REPORT = 64 * 1024
Order = ActivateOrder | ReleaseOrder | RollbackOrder  # the bodies a coordinator signs
MAX_WAIT = 30.0  # seconds a long poll may hang
ANSWER_MARGIN = 30.0  # on top of hook and health timeouts, for an agent to answer
FINISH_GRACE = 5.0  # after the last instruction, time for agents to read `finish`


class Sequence:
    """Instruction numbers that only grow, across runs too: microseconds of the clock,
    never less than the last one plus one."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last = max(self.last + 1, time.time_ns() // 1000)
        return self.last


class Coordinator:
    def __init__(self, deploy: Deploy, key: Path, listen: str, port: int,
                 tls: tuple[Path, Path] | None = None) -> None:
        self.deploy = deploy
        self.key = key
        self.listen, self.port = listen, port
        self.tls = tls
        self.runs = {run.spec.name: run for run in deploy.hosts}
        self.envelopes: list[dict[str, str]] = []
        self.version = 0
        self.changed = asyncio.Condition()  # a new envelope, or a new report
        self.answers: dict[str, dict[int, AgentReport]] = {n: {} for n in self.runs}
        self.finished: set[str] = set()
        self.torrent = b""
        self.seq = Sequence()
        self.runner: web.AppRunner | None = None
        self.peer_ids: dict[str, bytes] = {}
        self.closing = False

    # --- the HTTP side -------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_REPORT)
        app.router.add_get("/v1/channel", self._channel)
        app.router.add_get("/v1/torrent/{deploy_id}", self._torrent)
        app.router.add_post("/v1/report", self._report)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
        site = web.TCPSite(self.runner, self.listen, self.port, ssl_context=context)
        await site.start()
        for address in self.runner.addresses:  # the bound port, when port 0 was asked for
            self.port = int(address[1])
            break

    @property
    def url(self) -> str:
        host = f"[{self.listen}]" if ":" in self.listen else self.listen
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            self.closing = True  # long polls answer now instead of holding the shutdown
            async with self.changed:
                self.changed.notify_all()
            await self.runner.cleanup()

    async def _channel(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "-1"))
            wait = min(max(float(request.query.get("wait", "0")), 0.0), MAX_WAIT)
        except ValueError:
            return web.json_response({"error": "since and wait must be numbers"}, status=400)
        if since == self.version and wait > 0:
            async with self.changed:
                with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                    await asyncio.wait_for(
                        self.changed.wait_for(lambda: since != self.version or self.closing),
                        wait)
        return web.json_response({"version": self.version, "envelopes": self.envelopes})

    async def _torrent(self, request: web.Request) -> web.Response:
        if request.match_info["deploy_id"] != self.deploy.deploy_id or not self.torrent:
            return web.json_response({"error": "no such deploy"}, status=404)
        return web.Response(body=self.torrent, content_type="application/x-bittorrent")

    async def _report(self, request: web.Request) -> web.Response:
        try:
            # (a body over MAX_REPORT is refused with 413 by aiohttp)
            report = AgentReport.from_json(await request.read())
        except ProtocolError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if report.host not in self.runs:
            return web.json_response({"error": "unknown host"}, status=404)
        if report.deploy_id not in (self.deploy.deploy_id, None) \
                and report.state is not HostStatus.REFUSED:
            return web.json_response({"error": "another deploy"}, status=409)
        self._apply(self.runs[report.host], report)
        async with self.changed:
            self.changed.notify_all()
        return web.json_response({"ok": True})

    def _apply(self, run: HostRun, report: AgentReport) -> None:
        """An agent's report -> its HostRun (what the table and --json show)."""
        state = report.state
        if report.seq is not None:
            self.answers[run.spec.name][report.seq] = report
        if report.peer_id is not None:
            self.peer_ids[run.spec.name] = report.peer_id.encode("latin-1", "replace")
        if "current" in report.present:
            run.current = report.current
        if "previous" in report.present:
            run.previous = report.previous
        if report.hooks is not None:
            run.hooks = report.hooks
        if report.health is not None:
            run.health = report.health
        if state is HostStatus.FETCHING and run.status in (HostStatus.WAITING, HostStatus.FETCHING):
            run.status, run.phase = HostStatus.FETCHING, Phase.FETCH
            run.times.setdefault("fetch_started", time.monotonic())
            run.bytes_done = report.bytes_done or 0
            run.bytes_total = report.bytes_total or 0
            run.rate = float(report.rate or 0)
        elif state is HostStatus.STAGED and run.status in (HostStatus.WAITING, HostStatus.FETCHING):
            run.status, run.phase = HostStatus.STAGED, Phase.STAGE
            run.already_had = bool(report.already_had)
            run.bytes_done = run.bytes_total = report.bytes_total or run.bytes_total
            run.mark("fetched")
            run.mark("staged")
        elif state is HostStatus.OK:
            run.status, run.phase = HostStatus.OK, Phase.ACTIVATE
            run.mark("activated")
        elif state in (HostStatus.FAILED, HostStatus.REFUSED) and not run.failed:
            reason = (report.reason or state.value)[:1000]
            refused = ErrorKind.REFUSED if state is HostStatus.REFUSED else ErrorKind.ERROR
            run.fail(HostFailure(report.kind or refused, reason))
            run.mark("failed")
        elif state is HostStatus.FINISHED:
            self.finished.add(run.spec.name)

    # --- publishing ----------------------------------------------------------------

    async def publish(self, kind: Instruction, expires_in: float,
                      order: Order | None = None) -> int:
        """Sign `order` as instruction `kind` (the envelope's fields first) and serve it."""
        seq = self.seq.next()
        body = {"kind": Instruction(kind).value, "deploy_id": self.deploy.deploy_id, "seq": seq,
                "expires": round(time.time() + expires_in, 3),
                **(order.to_dict() if order is not None else {})}
        envelope = await asyncio.to_thread(sign, self.key, body)
        async with self.changed:
            self.envelopes.append(envelope)
            self.version += 1
            self.changed.notify_all()
        return seq

    async def wait_until(self, done: Any, timeout: float) -> None:
        """Wait (bounded) until done() holds; re-checked after every report."""
        async with self.changed:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(done), max(timeout, 0.0))


async def run_publish(deploy: Deploy, src: Path, key: Path, listen: str, port: int,
                      tls: tuple[Path, Path] | None = None,
                      on_ready: Any = None) -> Deploy:
    """Pack, seed, publish, roll out; sets deploy.exit_code. Raises only for local mistakes."""
    config = deploy.config
    plan_batches(len(deploy.hosts), config.batch, config.canary)  # bad --batch: fail now
    # a key that cannot sign: fail now
    await asyncio.to_thread(sign, key, {"kind": Instruction.PROBE.value})
    for url in config.web_seeds:
        check_web_seed_url(url, UsageError)  # a bad --web-seed: fail now
    scratch = make_scratch("roost-publish-")
    coordinator = Coordinator(deploy, key, listen, port, tls)
    swarm: SwarmControl | None = None
    origin: Origin | None = None
    deploy.mark("start")
    try:
        # pull agents stage a tarball (tree releases are push-only for now), or with web
        # seeds the directory as itself: a tarball made here is on no web server
        fmt = config.format
        if fmt in ("auto", "tree") and src.is_dir():
            fmt = "dir" if config.web_seeds and not config.compress else "tar"
        _check_web_seed_format(config, fmt)  # before packing: a tarball would be wasted
        deploy.payload = await asyncio.to_thread(
            pack, src, scratch, deploy.tag, fmt=fmt, compress=config.compress)
        torrent = await asyncio.to_thread(make_metainfo, deploy.payload.payload)
        (scratch / "payload.torrent").write_bytes(torrent)
        coordinator.torrent = torrent
        deploy.mark("packed")
        meta = parse(torrent)
        swarm = await _start_swarm(config, listen, meta.info_hash, deploy.tag, len(deploy.hosts))
        origin = await Origin.start(
            scratch / "payload.torrent", deploy.payload.payload.parent, listen,
            swarm.announce_url, swarm.expected, config.upload_rate, config.super_seed, None)
        await coordinator.start()
        deploy.mark("origin_started")
        if on_ready:
            on_ready(coordinator)
        deploy.phase = "fetch"
        now = time.monotonic()
        for run in deploy.hosts:
            run.times["connect"] = now
        await coordinator.publish(Instruction.RELEASE, config.timeout, ReleaseOrder(
            tag=deploy.tag, manifest=deploy.payload.manifest.to_dict(),
            torrent_sha256=hashlib.sha256(torrent).hexdigest(),
            announce_url=swarm.announce_url, expected_peers=swarm.expected,
            expires=round(time.time() + config.timeout, 3), route=swarm.route_target,
            port_range=config.port_range, upload_rate=config.upload_rate,
            download_rate=config.download_rate, web_seeds=tuple(config.web_seeds)))
        await _fetch_phase(deploy, coordinator, swarm)
        deploy.mark("fetched")
        await _activate_phase(deploy, coordinator)
        deploy.mark("activated")
    except asyncio.CancelledError:
        deploy.interrupted = True
        deploy.exit_code = EXIT_INTERRUPTED
        deploy.message = "interrupted; the agents were told to stop"
        raise
    finally:
        deploy.phase = "clean"
        await asyncio.shield(_finish(deploy, coordinator, origin, swarm, scratch))
    return deploy


async def _finish(deploy: Deploy, coordinator: Coordinator, origin: Origin | None,
                  swarm: SwarmControl | None, scratch: Path) -> None:
    with contextlib.suppress(Exception):
        if coordinator.runner is not None:
            await coordinator.publish(Instruction.FINISH, 3600)
            live = {r.spec.name for r in deploy.hosts if r.kind is not ErrorKind.TIMEOUT}
            await coordinator.wait_until(lambda: live <= coordinator.finished, FINISH_GRACE)
    await coordinator.stop()
    if origin is not None:
        await origin.stop()
    if swarm is not None:
        await swarm.stop()
    shutil.rmtree(scratch, ignore_errors=True)
    deploy.mark("end")
    deploy.phase = "done"


async def _fetch_phase(deploy: Deploy, coordinator: Coordinator, swarm: SwarmControl) -> None:
    told_swarm: set[str] = set()
    tasks: list[asyncio.Task[None]] = []

    def settled() -> bool:
        for run in deploy.hosts:  # the tracker stops waiting for hosts out of the race
            name = run.spec.name
            if name in told_swarm:
                continue
            if run.failed or run.already_had:
                told_swarm.add(name)
                tasks.append(asyncio.create_task(_out_of_race(swarm, run, coordinator)))
        return all(r.status in (HostStatus.STAGED, HostStatus.FAILED) for r in deploy.hosts)

    await coordinator.wait_until(settled, deploy.config.timeout)
    await asyncio.gather(*tasks)
    for run in deploy.hosts:
        if run.status not in (HostStatus.STAGED, HostStatus.FAILED):
            late = f"not staged within {deploy.config.timeout:g} s"
            silent = run.status is HostStatus.WAITING
            run.fail(HostFailure(ErrorKind.TIMEOUT,
                                 f"{late} (no answer from its agent)" if silent else late))
            run.mark("failed")


async def _out_of_race(swarm: SwarmControl, run: HostRun, coordinator: Coordinator) -> None:
    with contextlib.suppress(Exception):
        if run.already_had:
            await swarm.one_fewer()
        else:
            await swarm.host_failed(coordinator.peer_ids.get(run.spec.name), None)


def _answer_timeout(deploy: Deploy) -> float:
    c = deploy.config
    hooks = len(c.pre_activate) + len(c.post_activate)
    return c.hook_timeout * hooks + (c.health_timeout if c.health_check else 0) + ANSWER_MARGIN


async def _instruct(deploy: Deploy, coordinator: Coordinator, kind: Instruction,
                    batch: list[HostRun],
                    **fields: Any) -> int:
    """Publish one instruction to `batch` and wait for each host's answer (or the deadline)."""
    timeout = _answer_timeout(deploy)
    names = [r.spec.name for r in batch]
    order: Order = (ActivateOrder(deploy.tag, tuple(names), **fields)
                    if kind is Instruction.ACTIVATE else RollbackOrder(deploy.tag, tuple(names)))
    seq = await coordinator.publish(kind, timeout, order)
    await coordinator.wait_until(
        lambda: all(seq in coordinator.answers[n]
                    or (kind is Instruction.ACTIVATE and coordinator.runs[n].failed)
                    for n in names),
        timeout)
    return seq


async def _activate_phase(deploy: Deploy, coordinator: Coordinator) -> None:
    config = deploy.config
    staged = [h for h in deploy.hosts if h.status == HostStatus.STAGED]
    if len(staged) < deploy.need:
        deploy.exit_code = EXIT_FETCH_BELOW_MIN
        deploy.message = (f"only {len(staged)} of {len(deploy.hosts)} hosts staged the "
                          f"release (need {deploy.need}); nothing was switched")
        for h in staged:
            h.status = HostStatus.NOT_ACTIVATED
        return
    if not config.activate:
        deploy.exit_code = EXIT_OK
        deploy.message = f"staged on {len(staged)} hosts; not activated (--no-activate)"
        return
    deploy.phase = "activate"
    plan = plan_batches(len(staged), config.batch, config.canary)
    batches = [[staged[i] for i in indexes] for indexes in plan]
    staged_rollout = rollout.staged_rollout_wanted(deploy)
    for number, batch in enumerate(batches):
        for run in batch:
            run.batch = number if staged_rollout else None
    deploy.activated = True
    for number, batch in enumerate(batches):
        name = _batch_name(deploy, number, len(batches))
        deploy.phase = name
        seq = await _instruct(
            deploy, coordinator, Instruction.ACTIVATE, batch, keep=config.keep,
            pre=tuple(config.pre_activate), post=tuple(config.post_activate),
            hook_timeout=config.hook_timeout,
            health_check=config.health_check, health_timeout=config.health_timeout)
        for run in batch:
            if seq not in coordinator.answers[run.spec.name] and not run.failed:
                run.fail(HostFailure(ErrorKind.TIMEOUT, f"no answer to the activation within "
                                     f"{_answer_timeout(deploy):g} s"))
        bad = [h for h in batch if h.failed]
        if bad and staged_rollout:
            await _stop(deploy, coordinator, batches, number, bad)
            return
    ok = sum(1 for h in deploy.hosts if h.status == HostStatus.OK)
    if ok >= deploy.need:
        deploy.exit_code = EXIT_OK
        deploy.message = f"{deploy.tag} is current on {ok} of {len(deploy.hosts)} hosts"
    else:
        deploy.exit_code = EXIT_ACTIVATE_BELOW_MIN
        deploy.message = (f"{deploy.tag} is current on only {ok} of {len(deploy.hosts)} hosts "
                          f"(need {deploy.need})")


async def _stop(deploy: Deploy, coordinator: Coordinator, batches: list[list[HostRun]],
                number: int, bad: list[HostRun]) -> None:
    """A batch failed: roll that batch back, leave later batches untouched (as push mode)."""
    name = _batch_name(deploy, number, len(batches))
    deploy.phase = "rollback"
    batch = batches[number]
    seq = await _instruct(deploy, coordinator, Instruction.ROLLBACK, batch)
    for run in batch:
        answer = coordinator.answers[run.spec.name].get(seq)
        if answer is None:
            run.status, run.kind = HostStatus.FAILED, run.kind or ErrorKind.ROLLBACK
            run.reason = (f"{run.reason + '; ' if run.reason else ''}"
                          "no answer to the rollback instruction")
        elif not run.failed:
            run.status, run.reason = HostStatus.ROLLED_BACK, f"{name} failed on another host"
    untouched = [h for later in batches[number + 1:] for h in later]
    for run in untouched:
        run.status, run.reason = HostStatus.NOT_ACTIVATED, f"rollout stopped at {name}"
    names = ", ".join(h.spec.name for h in bad)
    deploy.exit_code = rollout.EXIT_ROLLOUT_STOPPED
    deploy.message = (
        f"rollout stopped: {name} failed on {names}; that batch is back on its previous "
        f"release and {len(untouched)} more host(s) were left on theirs")


def _batch_name(deploy: Deploy, number: int, total: int) -> str:
    if number == 0 and deploy.config.canary:
        return "the canary"
    return f"batch {number + 1}/{total}"


def report_json(deploy: Deploy) -> str:
    from roost.deploy.view import report

    return json.dumps(report(deploy), indent=1)
