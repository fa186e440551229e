"""A deploy's swarm admits only the deploy's own hosts and origin (roost.deploy.allowlist)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from roost.commands.demo import local_connector
from roost.deploy import swarm
from roost.deploy.allowlist import fleet_allowlist
from roost.deploy.config import DeployConfig
from roost.deploy.host import FetchPlan, HostRun
from roost.deploy.run import new_deploy, run_deploy
from roost.errors import UsageError
from tests.deploy.test_local_deploy import hosts
from tests.deploy.trees import make_sample_tree, tree_signature


def test_allowlist_is_the_fleet_collapsed() -> None:
    got = fleet_allowlist(
        ["10.0.0.1", "10.0.0.2", "10.0.0.3", None, "10.0.0.1", "::ffff:10.0.0.0", "fd00::5", "x"],
        [],
    )
    assert got == ["10.0.0.0/30", "fd00::5/128"]


def test_operator_widens_or_opens_the_allowlist() -> None:
    assert fleet_allowlist(["10.0.0.1"], ["192.168.0.0/16"]) == ["10.0.0.1/32", "192.168.0.0/16"]
    assert fleet_allowlist(["10.0.0.1"], ["any"]) is None
    with pytest.raises(UsageError, match="not an address"):
        fleet_allowlist(["10.0.0.1"], ["10.0.0.0/33"])


@pytest.mark.slow
@pytest.mark.parametrize("extra, expect", [([], ["127.0.0.1/32"]), (["any"], None)])
def test_a_deploy_passes_its_fleet_to_origin_and_peers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], expect: list[str] | None
) -> None:
    seen: dict[str, Any] = {"fetch": []}
    real_origin, real_fetch = swarm.Origin.start.__func__, HostRun.start_fetch  # type: ignore[attr-defined]

    async def origin(cls: type[swarm.Origin], *args: Any, **kw: Any) -> swarm.Origin:
        seen["origin"] = args[8] if len(args) > 8 else kw.get("allow")
        return await real_origin(cls, *args, **kw)  # type: ignore[no-any-return]

    async def fetch(self: HostRun, agent: Any, plan: FetchPlan, *args: Any) -> None:
        seen["fetch"].append(plan.allow)
        await real_fetch(self, agent, plan, *args)

    monkeypatch.setattr(swarm.Origin, "start", classmethod(origin))
    monkeypatch.setattr(HostRun, "start_fetch", fetch)
    src = make_sample_tree(tmp_path / "src", big=100_000)
    base = tmp_path / "hosts"
    config = DeployConfig(dest="/unused", python=sys.executable, port_range="0", timeout=120,
                          allow=extra)  # fmt: skip
    d = new_deploy(config, hosts(base, 2), "r1")
    asyncio.run(run_deploy(d, src, local_connector(base), listen="127.0.0.1"))
    assert d.exit_code == 0, [h.reason for h in d.hosts]
    assert seen["origin"] == expect and seen["fetch"] == [expect, expect]
    assert tree_signature(base / "p1" / "app" / "current") == tree_signature(src)
