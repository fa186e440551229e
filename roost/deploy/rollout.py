"""Staged activation: a canary, then batches, each behind a health check.

Theory of operation. The staged hosts are split by roost.deploy.batches.
Each batch switches `current` (with its hooks), then the health check runs
on every host of the batch that switched. If any host of the batch failed
(hook or health check), the rollout stops: every host of that batch that is
on the new release is switched back to the release it had before, and the
later batches are never touched — they keep their previous release (the new
one stays staged there, unused). Earlier batches passed their checks and
keep the new release. Every host's `current` is tracked so the report says
exactly which host runs what.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from roost.deploy.batches import plan_batches
from roost.deploy.host import Agent, HostRun, agent_reply
from roost.deploy.transport import HostFailure
from roost.target import agentargv
from roost.target.protocol import ErrorKind, HealthResult, HostStatus, Phase, RollbackResult

if TYPE_CHECKING:
    from roost.deploy.state import Deploy

EXIT_ROLLOUT_STOPPED = 5


def staged_rollout_wanted(deploy: Deploy) -> bool:
    c = deploy.config
    return bool(c.batch or c.canary or c.health_check)


async def health_check(run: HostRun, agent: Agent, dest: str, command: str,
                       timeout: float) -> None:
    """Run the check in `current` on this host; a failure fails the host (kind health)."""
    assert run.transport is not None
    run.phase = Phase.HEALTH
    args = agentargv.health(dest, command, timeout, run.previous or None)
    result = await run.transport.run(run.agent_cmd(agent, *args), timeout=timeout + 60)
    run.health = agent_reply(result, ErrorKind.HEALTH, HealthResult.from_json)
    if not run.health.ok:
        raise HostFailure(ErrorKind.HEALTH, run.health.reason or "health check failed")


async def roll_back(run: HostRun, agent: Agent, dest: str, tag: str) -> None:
    """Put this host back on the release it ran before this deploy."""
    assert run.transport is not None
    if run.current != tag or run.previous == tag:
        # never switched; its failing post hook already switched it back; or the
        # tag was already live before this deploy, so there is nothing to undo
        return
    run.phase = Phase.ROLLBACK
    # unswitch (--none --expect): only a `current` that is still this deploy's tag is removed
    args = agentargv.rollback(dest, run.previous) if run.previous else agentargv.unswitch(
        dest, tag)
    result = await run.transport.run(run.agent_cmd(agent, *args), timeout=120)
    run.current = agent_reply(result, ErrorKind.ROLLBACK, RollbackResult.from_json).tag


async def staged_activation(
    deploy: Deploy, agent: Agent, activate_one: Callable[[HostRun], Awaitable[None]]
) -> bool:
    """Activate batch by batch; True when a batch failed and the rollout stopped."""
    config = deploy.config
    staged = [h for h in deploy.hosts if h.status == HostStatus.STAGED]
    plan = plan_batches(len(staged), config.batch, config.canary)
    batches = [[staged[i] for i in indexes] for indexes in plan]
    for number, batch in enumerate(batches):
        for run in batch:
            run.batch = number
    for number, batch in enumerate(batches):
        deploy.phase = _batch_name(deploy, number, len(batches))
        await asyncio.gather(*(activate_one(h) for h in batch))
        if config.health_check:
            await asyncio.gather(*(_checked(h, agent, deploy) for h in batch
                                   if h.status is HostStatus.OK))
        bad = [h for h in batch if h.failed]
        if bad:
            await _stop(deploy, agent, batches, number, bad)
            return True
    return False


async def _checked(run: HostRun, agent: Agent, deploy: Deploy) -> None:
    assert deploy.config.health_check is not None
    try:
        await health_check(run, agent, run.dest(deploy.config), deploy.config.health_check,
                           deploy.config.health_timeout)
    except (HostFailure, Exception) as exc:
        run.fail(exc if isinstance(exc, HostFailure) else HostFailure(ErrorKind.HEALTH, str(exc)))


async def _stop(deploy: Deploy, agent: Agent, batches: list[list[HostRun]], number: int,
                bad: list[HostRun]) -> None:
    name = _batch_name(deploy, number, len(batches))
    deploy.phase = "rollback"

    async def back(run: HostRun) -> None:
        try:
            was_ok = not run.failed
            await roll_back(run, agent, run.dest(deploy.config), deploy.tag)
            if was_ok:
                run.status, run.reason = HostStatus.ROLLED_BACK, f"{name} failed on another host"
        except (HostFailure, Exception) as exc:
            run.status, run.kind = HostStatus.FAILED, ErrorKind.ROLLBACK
            run.reason = f"{run.reason + '; ' if run.reason else ''}rollback failed: {exc}"

    await asyncio.gather(*(back(h) for h in batches[number]))
    untouched = [h for later in batches[number + 1:] for h in later]
    for run in untouched:
        run.status, run.reason = HostStatus.NOT_ACTIVATED, f"rollout stopped at {name}"
    names = ", ".join(h.spec.name for h in bad)
    deploy.exit_code = EXIT_ROLLOUT_STOPPED
    deploy.message = (
        f"rollout stopped: {name} failed on {names}; that batch is back on its previous "
        f"release and {len(untouched)} more host(s) were left on theirs"
    )


def _batch_name(deploy: Deploy, number: int, total: int) -> str:
    if number == 0 and deploy.config.canary:
        return "the canary"
    return f"batch {number + 1}/{total}"


def placement(deploy: Deploy) -> dict[str, Any]:
    """release -> hosts running it, for the report (None: unknown or no release)."""
    where: dict[str, list[str]] = {}
    for run in deploy.hosts:
        where.setdefault(run.current or "(none or unknown)", []).append(run.spec.name)
    return where
