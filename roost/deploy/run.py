"""The deploy flow: pack, metainfo, tracker + origin, hosts in parallel, policy, activate, clean.

Theory of operation. Phase 0 (reach), before any byte moves: connect to
every host, push the agent if needed, start its agent session (one SSH
channel for the rest of the deploy, roost.deploy.session) and take the
host's deploy lock
(roost.deploy.locking); one host locked by another deploy refuses the whole
deploy (exit 6). With --dry-run, phase 0 only connects, then runs the
read-only preflight probe (roost.deploy.dryrun) and stops there.

Phase 1 (fetch) first prepares every host (manifest, torrent, TLS files); each
reports the address it will announce, and those addresses (with the SSH ones
and the origin's) are the swarm's allowlist (roost.deploy.allowlist), so the
origin starts only then. Then one task per host: launch `roost fetch`, follow its events,
and stage (verify SHA-256, unpack into releases/<tag>) as soon as the
payload is complete — while fetch keeps seeding for the others. Launch
steps share a semaphore (`concurrency`); the fetches themselves all run at
once, since they form the swarm. A host failure ends that host's task only;
it is marked on the tracker so peers do not wait for it. Phase 1 ends when
every host is staged or failed, or at `timeout`.

Phase 2 (activate) runs only when at least `min_success` hosts staged:
those hosts switch `current` and run their hooks — all at once, or batch by
batch behind a health check (roost.deploy.rollout), stopping and rolling
back the failing batch. Whatever happens —
success, failure, Ctrl-C (a CancelledError here) — `finally` stops every
remote fetch by its pid file, removes every deploy directory, releases
the locks (the hosts record the outcome in their history), stops the
origin and the tracker, and deletes the local scratch directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from roost import __version__
from roost.core.metainfo import check_web_seed_url, parse
from roost.deploy import dryrun, hashcache, locking, origins, pace, rollout
from roost.deploy.allowlist import check_extra, fleet_allowlist, resolve
from roost.deploy.batches import plan_batches
from roost.deploy.config import DeployConfig, HostSpec, check_location_nets, parse_min_success
from roost.deploy.host import Agent, FetchPlan, HostRun
from roost.deploy.pack import Packed, Source, check_source, make_metainfo, pack
from roost.deploy.pki import DeployCA
from roost.deploy.scratch import make_scratch
from roost.deploy.session import open_session
from roost.deploy.state import EXIT_ERROR as EXIT_ERROR  # re-exported: importers name them here
from roost.deploy.state import Deploy as Deploy
from roost.deploy.swarm import (
    Origin,
    RemoteSwarm,
    Swarm,
    SwarmControl,
    TrackerProcess,
    listen_address,
)
from roost.deploy.transport import HostFailure, Transport, ssh_connect, ssh_hostname
from roost.deploy.zipapp import build_source_zip, source_digest
from roost.errors import UsageError
from roost.target import signing
from roost.target.protocol import ErrorKind, HostStatus, Manifest, PayloadFormat

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_FETCH_BELOW_MIN = 3
EXIT_ACTIVATE_BELOW_MIN = 4
EXIT_ROLLOUT_STOPPED = rollout.EXIT_ROLLOUT_STOPPED  # 5: a batch failed its health check
EXIT_LOCKED = locking.EXIT_LOCKED  # 6: another deploy holds a host's lock
EXIT_PREFLIGHT_FAILED = dryrun.EXIT_PREFLIGHT_FAILED  # 7: --dry-run found a problem
EXIT_INTERRUPTED = 130
CLEAN_TIMEOUT = 30.0

Connector = Callable[[HostSpec], Awaitable[Transport]]


def default_tag(src: Path) -> str:
    """<UTC time>[-<git short commit>]: sortable, and traceable to the source."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(
            ["git", "-C", str(src if src.is_dir() else src.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if result.returncode == 0 and result.stdout.strip():
            return f"{stamp}-{result.stdout.strip()}"
    return stamp


def make_agent(python: str) -> Agent:
    digest = source_digest()[:12]
    return Agent(f"roost-{__version__}-{digest}.pyz", python, build_source_zip())


def ssh_connector(config: DeployConfig, fleet: int = 1) -> Connector:
    """Connects to one host of a fleet of `fleet` hosts."""

    async def connect(spec: HostSpec) -> Transport:
        return await ssh_connect(spec, config, fleet)

    return connect


async def run_deploy(
    deploy: Deploy,
    src: Path,
    connect: Connector,
    *,
    listen: str | None = None,
    on_ready: Callable[[Deploy], None] | None = None,
) -> Deploy:
    """Run the whole flow; sets deploy.exit_code. Raises only for local mistakes."""
    config = deploy.config
    _check_settings(deploy)
    agent_build = asyncio.create_task(asyncio.to_thread(make_agent, config.python))
    scratch = make_scratch("roost-deploy-")
    swarm: SwarmControl | None = None
    tracker_proc: asyncio.Task[TrackerProcess] | None = None
    warm_origin: asyncio.Task[asyncio.subprocess.Process] | None = None
    origin: Origin | None = None
    packing: asyncio.Task[tuple[Packed, bytes, str | None]] | None = None
    deploy.mark("start")
    try:
        # every refusal that needs no byte read comes before any host is reached;
        # the hashing then runs while the hosts are reached and locked
        source = await asyncio.to_thread(check_source, src, deploy.tag, fmt=config.format,
                                         compress=config.compress)
        _check_web_seed_format(config, source.format)
        origins.check_format([o.spec for o in deploy.origins], source.format)
        packing = asyncio.create_task(asyncio.to_thread(
            _pack, config, src, scratch, deploy.tag, source))
        packing.add_done_callback(lambda _: deploy.mark("packed"))
        where = listen or listen_address(
            [replace(h.spec, address=ssh_hostname(h.spec.address, config)) for h in deploy.hosts],
            config.listen)
        if not config.tracker and not config.dry_run:  # its start overlaps the connects
            tracker_proc = asyncio.create_task(TrackerProcess.spawn(where))
        if config.local_origin and not config.dry_run:  # so do the origin's imports
            warm_origin = asyncio.create_task(Origin.prestart(scratch))
        deploy.phase = "preflight" if config.dry_run else "lock"

        async def reach_origins() -> None:  # origins too need the agent first
            await origins.reach_all(deploy.origins, await agent_build, connect, config)

        # connects while the agent is built
        await asyncio.gather(_reach_phase(deploy, agent_build, connect), reach_origins())
        agent = await agent_build
        deploy.mark("reached")
        if not config.dry_run and (_refused_by_lock(deploy) or _no_origin(deploy)):
            return deploy
        deploy.payload, torrent, signature = await packing
        (scratch / "payload.torrent").write_bytes(torrent)
        meta = parse(torrent)
        if config.dry_run:
            await _dry_run(deploy, where)
            return deploy
        reached = sum(1 for h in deploy.hosts if not h.failed)
        pki, origin_tls = _peer_tls(config, deploy.deploy_id, scratch)
        seeders = int(config.local_origin) + sum(1 for o in deploy.origins if not o.failed)
        swarm = await _start_swarm(config, where, meta.info_hash, deploy.tag, reached, seeders,
                                   tracker_proc)
        deploy.mark("tracker_started")
        tree = deploy.payload.manifest.format is PayloadFormat.TREE
        plan = _fetch_plan(config, swarm, pki, signature, len(deploy.hosts))
        deploy.phase = "fetch"
        # every host reports the address it will announce before any peer starts:
        # the fleet-only allowlist of the origin and the peers is made of them
        # meanwhile each --origin host proves its copy and says what it announces
        await asyncio.gather(
            _prepare_phase(deploy, agent, torrent, plan, swarm),
            origins.check_all(deploy.origins, agent, deploy.deploy_id, deploy.payload.manifest,
                              torrent, pki, swarm.route_target, config.timeout,
                              swarm.one_fewer))
        deploy.mark("prepared")
        if _no_origin(deploy):
            return deploy
        allow = _fleet_allow(deploy, config, where)
        plan = replace(plan, allow=allow)
        # the fetches start beside the origin, not after it: a host starts its agent,
        # places what it already holds, then announces; the origin, once up, dials
        # every host the tracker knows (a seed dials too), whoever came first
        if config.local_origin:
            origin = await Origin.start(
                scratch / "payload.torrent",
                deploy.payload.payload if tree else deploy.payload.payload.parent,
                where,
                swarm.announce_url,
                swarm.expected,
                config.upload_rate,
                config.super_seed,
                origin_tls,
                allow=allow,
                tree=tree,
                wait=False,
                warm=await warm_origin if warm_origin is not None else None,
            )
            warm_origin = None
        await origins.seed_all(deploy.origins, origins.make_order(
            swarm.announce_url, swarm.expected, config, allow), swarm.one_fewer)
        if _no_origin(deploy):
            return deploy
        await _fetch_beside_origin(deploy, agent, torrent, plan, swarm, connect, origin,
                                   on_ready)
        deploy.mark("fetched")
        _stop_fetches(deploy)
        await _activate_phase(deploy, agent)
        deploy.mark("activated")
    except asyncio.CancelledError:
        deploy.interrupted = True
        deploy.exit_code = EXIT_INTERRUPTED
        deploy.message = "interrupted; cleaned up"
        raise
    finally:
        deploy.phase = "clean"
        for early in (agent_build, packing):  # an early failure: their threads end alone
            if early is not None and not early.done():
                early.cancel()
        if agent_build.done() and not agent_build.cancelled() and not agent_build.exception():
            # no agent: no host and no origin was reached
            await asyncio.gather(_cleanup(deploy, agent_build.result()), _stop_origins(deploy))
        deploy.mark("cleaned")
        if origin is not None:
            await origin.stop()
        if swarm is not None:
            await swarm.stop()
        elif tracker_proc is not None:  # spawned, never used (a refusal, a failure)
            with contextlib.suppress(Exception):
                await (await tracker_proc).end()
        if warm_origin is not None:  # likewise
            with contextlib.suppress(Exception):
                await Origin.discard(await warm_origin)
        shutil.rmtree(scratch, ignore_errors=True)
        deploy.mark("end")
        deploy.phase = "done"
    return deploy


def _check_settings(deploy: Deploy) -> None:
    """Every refusal the settings alone justify, before anything is started or touched."""
    config = deploy.config
    for run in deploy.hosts:
        if not run.dest(config).startswith("/"):
            raise UsageError("the destination (--dest) must be an absolute path")
    plan_batches(len(deploy.hosts), config.batch, config.canary)  # a bad --batch
    check_extra(config.allow)  # a bad --allow: now, not after the hosts are locked
    check_location_nets(config.location_nets)
    if config.keep < 0:
        raise UsageError(f"--keep must be 0 or more, not {config.keep}")
    if config.health_timeout <= 0:
        raise UsageError("--health-timeout must be more than 0 seconds")
    _check_signing(config)
    for url in config.web_seeds:
        check_web_seed_url(url, UsageError)
    deploy.origins = [origins.RemoteOrigin(spec) for spec in origins.parse_origins(
        config, [h.spec for h in deploy.hosts])]


def _fetch_plan(config: DeployConfig, swarm: SwarmControl, pki: DeployCA | None,
                signature: str | None, hosts: int) -> FetchPlan:
    """What every host's fetch is told (its allowlist is added once all have prepared)."""
    return FetchPlan(
        swarm.announce_url,
        *swarm.route_target,
        swarm.expected,
        config.port_range,
        config.upload_rate,
        config.download_rate,
        config.timeout,
        pki,
        signature=signature,
        allowed_signers=config.allowed_signers if config.require_signature else None,
        web_seeds=tuple(config.web_seeds),
        # the fleet's progress lines stay ~pace.PROGRESS_BUDGET a second whatever N is
        progress_every=pace.progress_every(hosts),
    )


async def _fetch_beside_origin(
    deploy: Deploy, agent: Agent, torrent: bytes, plan: FetchPlan, swarm: SwarmControl,
    connect: Connector, origin: Origin | None, on_ready: Callable[[Deploy], None] | None,
) -> None:
    """Every host's fetch while the local origin (if any) finishes starting: an origin
    that fails to start is the deploy's error; one that dies while no --origin seeds
    is named in the hosts' reasons."""

    async def local_started() -> None:
        if origin is not None:
            await origin.started()

    seeding = asyncio.create_task(local_started())
    seeding.add_done_callback(lambda _: deploy.mark("origin_started"))
    fetching = asyncio.create_task(_fetch_phase(
        deploy, agent, torrent, plan, swarm, connect,
        origin_dead=lambda: ((origin is None or origin.proc.returncode is not None)
                             and not any(o.seeding for o in deploy.origins)),
    ))
    try:
        await asyncio.wait((seeding, fetching), return_when=asyncio.FIRST_COMPLETED)
        await seeding  # the origin failed to start: the deploy's error
        if on_ready:
            on_ready(deploy)
        await fetching
    finally:
        for task in (seeding, fetching):
            if not task.done():
                task.cancel()
        await asyncio.gather(seeding, fetching, return_exceptions=True)
    if origin is not None and origin.proc.returncode is not None \
            and not any(o.seeding for o in deploy.origins):
        _blame_dead_origin(deploy, origin.proc.returncode)


def _pack(config: DeployConfig, src: Path, scratch: Path, tag: str, source: Source
          ) -> tuple[Packed, bytes, str | None]:
    """In a thread: the payload, its torrent and the manifest's signature."""
    packed = pack(src, scratch, tag, fmt=config.format, compress=config.compress,
                  checked=source, hash_cache=hashcache.default_dir())
    torrent = packed.torrent if packed.torrent is not None else make_metainfo(packed.payload)
    return packed, torrent, _sign_manifest(config, packed.manifest)


def _check_web_seed_format(config: DeployConfig, fmt: str) -> None:
    """A web seed serves the payload's own bytes: a tarball packed here for this
    deploy is on no web server."""
    if config.web_seeds and fmt in ("tar", "tar.zst"):
        raise UsageError("--web-seed needs a payload a web server can hold as is: "
                         "a file, or a directory sent as tree or dir (not tar)")


def _check_signing(config: DeployConfig) -> None:
    """--require-signature needs the hosts' allowed-signers file; checked before any host."""
    if config.allowed_signers and not config.require_signature:
        raise UsageError("--allowed-signers is used only with --require-signature")
    if not config.require_signature:
        return
    if not config.allowed_signers or not config.allowed_signers.startswith("/"):
        raise UsageError("--require-signature needs --allowed-signers: the allowed-signers "
                         "file's absolute path on the hosts")


def _sign_manifest(config: DeployConfig, manifest: Manifest) -> str | None:
    """--sign-key: the OpenSSH signature of the manifest's canonical JSON, which each
    host checks (host-prepare --allowed-signers) before it fetches a byte."""
    if not config.sign_key:
        return None
    return signing.sign_bytes(Path(config.sign_key), signing.canonical(manifest.to_dict()))


def _fleet_allow(deploy: Deploy, config: DeployConfig, origin: str) -> list[str] | None:
    """The swarm admits only the deploy's own hosts and origins, unless widened; this
    machine only if it seeds (not with --no-local-origin)."""
    here: list[str | None] = [origin] if config.local_origin else []
    addresses: list[str | None] = [*here, *origins.addresses(deploy.origins)]
    for run in [*deploy.hosts, *(o.run for o in deploy.origins)]:
        if not run.failed:
            addresses.append(run.address)
            addresses += resolve(ssh_hostname(run.spec.address, config))
    return fleet_allowlist(addresses, config.allow)


def _no_origin(deploy: Deploy) -> bool:
    """--no-local-origin and every --origin dropped: nothing can seed, so stop here
    (cleanup then undoes what the hosts prepared)."""
    if deploy.config.local_origin or any(not o.failed for o in deploy.origins):
        return False
    deploy.exit_code = EXIT_ERROR
    deploy.message = origins.no_origin_left(deploy.origins)
    return True


async def _stop_origins(deploy: Deploy) -> None:
    """The --origin hosts' seeders stop and clean up; shielded as _cleanup is."""
    if deploy.origins:
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(origins.stop_all(deploy.origins)),
                                   CLEAN_TIMEOUT)


def _peer_tls(
    config: DeployConfig, deploy_id: str, scratch: Path
) -> tuple[DeployCA | None, tuple[Path, Path, Path] | None]:
    """--peer-tls: this deploy's CA (its key stays in memory) and the origin's files,
    written 0600 into the scratch dir that cleanup removes."""
    if not config.peer_tls:
        return None, None
    # named by the deploy id's random part only: any client that connects sees the CA's name
    pki = DeployCA(deploy_id.rpartition("-")[2],
                   lifetime=datetime.timedelta(seconds=2 * config.timeout))
    tls_dir = scratch / "tls"
    tls_dir.mkdir(mode=0o700)
    return pki, pki.issue("origin").write(tls_dir)


async def _start_swarm(config: DeployConfig, listen: str, info_hash: bytes, tag: str,
                       hosts: int, seeders: int = 1,
                       spawned: asyncio.Task[TrackerProcess] | None = None) -> SwarmControl:
    """The embedded tracker (default), or a swarm registered on network.tracker."""
    if not config.tracker:
        return await Swarm.start(listen, info_hash, tag, hosts, seeders, spawned)
    token = config.tracker_token or os.environ.get("ROOST_TRACKER_TOKEN", "")
    if not token:
        raise UsageError("an external tracker needs its admin token: set network.tracker_token "
                         "or ROOST_TRACKER_TOKEN")
    return await RemoteSwarm.start(config.tracker, token, info_hash, tag, hosts, seeders)


async def _fetch_phase(
    deploy: Deploy, agent: Agent, torrent: bytes, plan: FetchPlan, swarm: SwarmControl,
    connect: Connector, origin_dead: Callable[[], bool] = lambda: False,
) -> None:
    config = deploy.config
    assert deploy.payload is not None
    manifest = deploy.payload.manifest
    launch = asyncio.Semaphore(max(1, config.concurrency))
    location_nets = check_location_nets(config.location_nets)

    async def one(run: HostRun) -> None:
        try:
            async with launch:  # connected, agent in place, locked and prepared
                if run.already_had:
                    run.status = HostStatus.STAGED
                    run.bytes_done = run.bytes_total = manifest.size
                    await swarm.one_fewer()
                    return
                await run.start_fetch(agent, plan, run.spec.location, run.dest(config),
                                      config.reuse, location_nets.get(run.spec.location or "", []))
                run.status = HostStatus.FETCHING
            completed = asyncio.Event()
            run.fetch_task = asyncio.create_task(run.follow_fetch(completed))
            await _first(completed.wait(), run.fetch_task)
            if not completed.is_set():
                await run.fetch_task  # raises the fetch's failure
            await run.stage(agent, run.dest(config))
        except (HostFailure, Exception) as exc:  # one host's bug stays on that host
            run.fail(exc if isinstance(exc, HostFailure) else _unexpected(exc))
            run.mark("failed")
            if run.fetch_stream is not None:
                await swarm.host_failed(run.peer_id, run.address)  # count it as done
            else:
                await swarm.one_fewer()  # it never joined: stop waiting for it

    runs = [run for run in deploy.hosts if not run.failed]
    tasks = [asyncio.create_task(one(run)) for run in runs]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.timeout
        pending, orphaned = await _wait_fetches(tasks, runs, deadline, origin_dead)
        if orphaned:  # give up on the incomplete hosts; those staging may finish
            for run, task in zip(runs, tasks, strict=True):
                if task in pending and (not run.bytes_total or run.bytes_done < run.bytes_total):
                    task.cancel()
                    run.fail(HostFailure(ErrorKind.FETCH, orphaned))
                    pending.discard(task)
            if pending:
                _, pending = await asyncio.wait(pending, timeout=max(0, deadline - loop.time()))
        for task in pending:
            task.cancel()
        for run, task in zip(runs, tasks, strict=True):
            if task in pending:
                run.fail(HostFailure(ErrorKind.TIMEOUT, f"not staged within {config.timeout:g} s"))
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()


async def _prepare_phase(
    deploy: Deploy, agent: Agent, torrent: bytes, plan: FetchPlan, swarm: SwarmControl
) -> None:
    """host-prepare on every reached host (manifest, torrent, TLS files; the host
    reports the address it will announce), within the fetch phase's time limit."""
    config = deploy.config
    assert deploy.payload is not None
    manifest = deploy.payload.manifest
    launch = asyncio.Semaphore(max(1, config.concurrency))

    async def one(run: HostRun) -> None:
        try:
            async with launch:
                await run.prepare(
                    agent, run.dest(config), deploy.deploy_id, manifest, torrent, plan
                )
                run.mark("prepared")
        except (HostFailure, Exception) as exc:  # one host's bug stays on that host
            run.fail(exc if isinstance(exc, HostFailure) else _unexpected(exc))
            run.mark("failed")
            await swarm.one_fewer()  # it never joined: stop waiting for it

    runs = [run for run in deploy.hosts if not run.failed]
    tasks = [asyncio.create_task(one(run)) for run in runs]
    try:
        _, pending = await asyncio.wait(tasks, timeout=config.timeout) if tasks else ((), set())
        for run, task in zip(runs, tasks, strict=True):
            if task in pending:
                task.cancel()
                run.fail(HostFailure(ErrorKind.TIMEOUT,
                                     f"not prepared within {config.timeout:g} s"))
                await swarm.one_fewer()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()


async def _reach_phase(deploy: Deploy, agent_build: Awaitable[Agent], connect: Connector
                       ) -> None:
    """Before any byte moves: connect to every host; unless this is a dry run, put
    the agent in place and take the host's deploy lock."""
    config = deploy.config
    launch = asyncio.Semaphore(max(1, config.concurrency))

    async def one(run: HostRun) -> None:
        try:
            async with launch:
                run.status = HostStatus.CONNECTING
                run.mark("connect")
                run.transport = await connect(run.spec)
                run.mark("connected")
                if config.dry_run:
                    return
                agent = await agent_build
                # the probe starts the cached agent's session: from here on every agent
                # command is a record on this one channel
                run.transport = await open_session(run, agent)
                run.mark("session")
                await locking.acquire(run, agent, run.dest(config), deploy.deploy_id,
                                      deploy.tag, deploy.who, config.break_lock)
                run.mark("locked")
        except (HostFailure, Exception) as exc:
            run.fail(exc if isinstance(exc, HostFailure) else _unexpected(exc))
            run.mark("failed")

    await asyncio.gather(*(one(run) for run in deploy.hosts))


def _refused_by_lock(deploy: Deploy) -> bool:
    """Another deploy holds some host: change nothing anywhere (our locks are released
    in cleanup, recording `refused` in those hosts' history)."""
    locked = [h for h in deploy.hosts if h.kind is ErrorKind.LOCK_HELD]
    if not locked:
        return False
    deploy.exit_code = EXIT_LOCKED
    deploy.message = (f"refused: {len(locked)} host(s) locked by another deploy "
                      f"({locked[0].spec.name}: {locked[0].reason}); nothing was changed")
    for run in deploy.hosts:
        if not run.failed:
            run.status, run.reason = HostStatus.REFUSED, "another deploy holds a host's lock"
    return True


async def _dry_run(deploy: Deploy, tracker_host: str) -> None:
    async def one(run: HostRun) -> None:
        if run.failed:
            return
        try:
            await dryrun.preflight(run, deploy, tracker_host)
        except (HostFailure, Exception) as exc:
            run.fail(exc if isinstance(exc, HostFailure) else _unexpected(exc))

    await asyncio.gather(*(one(run) for run in deploy.hosts))
    assert deploy.payload is not None
    for origin in deploy.origins:  # reached and looked at in the reach phase
        try:
            origin.judge(deploy.payload.manifest)
        except HostFailure as exc:
            origin.fail(exc)
    bad = [h for h in deploy.hosts if h.failed]
    bad_origins = [o for o in deploy.origins if o.failed]
    deploy.exit_code = EXIT_PREFLIGHT_FAILED if bad or bad_origins else EXIT_OK
    hosts = (f"{len(bad)} of {len(deploy.hosts)} hosts would fail" if bad else
             f"every check passed on {len(deploy.hosts)} hosts")
    if bad_origins:
        hosts = f"{len(bad_origins)} of {len(deploy.origins)} origins could not seed; {hosts}"
    deploy.message = f"dry run: {hosts}; nothing was changed"


async def _first(*aws: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks[:1]:  # the event waiter; the fetch task lives on
            task.cancel()


async def _activate_phase(deploy: Deploy, agent: Agent) -> None:
    config = deploy.config
    staged = [h for h in deploy.hosts if h.status == HostStatus.STAGED]
    if len(staged) < deploy.need:
        deploy.exit_code = EXIT_FETCH_BELOW_MIN
        deploy.message = (
            f"only {len(staged)} of {len(deploy.hosts)} hosts staged the "
            f"release (need {deploy.need}); nothing was switched"
        )
        for h in staged:
            h.status = HostStatus.NOT_ACTIVATED
        return
    if not config.activate:
        deploy.exit_code = EXIT_OK
        deploy.message = f"staged on {len(staged)} hosts; not activated (--no-activate)"
        return
    deploy.phase = "activate"

    async def one(run: HostRun) -> None:
        try:
            await run.activate(
                agent,
                run.dest(config),
                deploy.tag,
                config.keep,
                config.pre_activate,
                config.post_activate,
                config.hook_timeout,
            )
            run.status = HostStatus.OK
        except (HostFailure, Exception) as exc:
            run.fail(exc if isinstance(exc, HostFailure) else _unexpected(exc))

    if rollout.staged_rollout_wanted(deploy):
        if await rollout.staged_activation(deploy, agent, one):
            deploy.activated = True
            return  # stopped at a failing batch: exit code and message are set
    else:
        await asyncio.gather(*(one(h) for h in staged))
    deploy.activated = True
    ok = sum(1 for h in deploy.hosts if h.status == HostStatus.OK)
    if ok >= deploy.need:
        deploy.exit_code = EXIT_OK
        deploy.message = f"{deploy.tag} is current on {ok} of {len(deploy.hosts)} hosts"
    else:
        deploy.exit_code = EXIT_ACTIVATE_BELOW_MIN
        deploy.message = (
            f"{deploy.tag} is current on only {ok} of {len(deploy.hosts)} hosts "
            f"(need {deploy.need})"
        )


def _stop_fetches(deploy: Deploy) -> None:
    """The fetch phase is over: every host has staged, failed or been given up on, so
    no fetch still serves a peer that lacks pieces (hosts serve each other: one that
    finished early keeps seeding until the last one is done, and only then is this
    called). Each host's fetch is told to stop now (its session's `kill`, a SIGTERM),
    so its shutdown (the `stopped` announce, its threads, the interpreter's exit)
    overlaps activation instead of host-clean waiting for it. Nothing a fetch does
    after `complete` touches the staged release; host-clean still stops by pid
    whatever is left, on every path."""
    for run in deploy.hosts:
        if run.fetch_stream is not None:
            run.fetch_stream.close()  # returns at once; a fetch that exited is left alone


async def _cleanup(deploy: Deploy, agent: Agent) -> None:
    """Stop remote fetches by pid, remove deploy dirs, close connections (bounded)."""

    async def one(run: HostRun) -> None:
        if run.fetch_task is not None:
            if run.fetch_task.done():
                if not run.fetch_task.cancelled():
                    run.fetch_task.exception()  # retrieved: it was reported already
            else:
                run.fetch_task.cancel()
        try:
            if not deploy.config.dry_run:
                await run.clean(agent, run.dest(deploy.config), deploy.deploy_id)
                run.mark("cleaned")
        except (HostFailure, Exception) as exc:
            if not run.failed:
                run.fail(HostFailure(ErrorKind.CLEAN, f"cleanup failed: {exc}"))
        finally:
            # last: the lock covers the cleanup too; the outcome goes to the host's history
            with contextlib.suppress(Exception):
                await locking.release(run, locking.outcome(run, deploy.exit_code))
                run.mark("released")
            if run.fetch_stream is not None:
                run.fetch_stream.close()
            if run.transport is not None:
                await run.transport.close()

    tasks = [asyncio.create_task(one(h)) for h in deploy.hosts]
    if tasks:
        # shielded: a second Ctrl-C must not leave fetches running on the hosts
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(
                asyncio.shield(asyncio.gather(*tasks, return_exceptions=True)), CLEAN_TIMEOUT
            )


#: after the origin died, this long without a byte gained by any host means
#: the pieces only it had are gone: stop waiting for --timeout
ORPHAN_GRACE = 20.0


async def _wait_fetches(
    tasks: list[asyncio.Task[None]], runs: list[HostRun], deadline: float,
    origin_dead: Callable[[], bool],
) -> tuple[set[asyncio.Task[None]], str]:
    """Wait for the hosts' fetch tasks until done or the loop time `deadline`;
    returns the pending ones and, when the swarm lost its source, why."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set(tasks)
    progress, progress_at, dead = -1, loop.time(), False
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            return pending, ""
        _, pending = await asyncio.wait(pending, timeout=min(1.0, left))
        done_bytes = sum(run.bytes_done for run in runs)
        if not dead and origin_dead():
            dead, progress_at = True, loop.time()  # the grace starts at the death
        if done_bytes != progress:
            progress, progress_at = done_bytes, loop.time()
        elif dead and loop.time() - progress_at >= ORPHAN_GRACE:
            return pending, (
                f"the origin seeder died and no host gained a byte for {ORPHAN_GRACE:g} s: "
                "the pieces only it had are gone"
            )
    return pending, ""


def _blame_dead_origin(deploy: Deploy, code: int) -> None:
    """The origin never exits on its own during the fetch phase; if it died, hosts
    left incomplete say so (their missing pieces may have existed nowhere else),
    instead of a bare timeout."""
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    for run in deploy.hosts:
        if run.failed and run.kind in (ErrorKind.TIMEOUT, ErrorKind.FETCH):
            run.reason = f"{run.reason}; the origin seeder {how} during the transfer"


def _unexpected(exc: BaseException) -> HostFailure:
    """A bug or an unforeseen error, kept on its host and reported, not a traceback."""
    return HostFailure(ErrorKind.INTERNAL, f"unexpected {type(exc).__name__}: {exc}")


def new_deploy(config: DeployConfig, hosts: list[HostSpec], tag: str) -> Deploy:
    import secrets

    need = parse_min_success(config.min_success, len(hosts))
    return Deploy(
        config,
        [HostRun(h) for h in hosts],
        tag,
        f"{tag[:40]}-{secrets.token_hex(4)}".replace(".", "_").replace("+", "_"),
        need,
    )
