"""A deploy's fixed costs overlap instead of adding up (local transport, real processes):
the source is hashed while the hosts are reached, and the hosts start fetching
while the origin seeder starts. Each test makes one step wait for the other, so
run one after the other they would deadlock (and fail on a bounded wait)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from roost.commands.demo import local_connector
from roost.deploy import swarm, treepack
from roost.deploy.config import DeployConfig, HostSpec
from roost.deploy.host import HostRun
from roost.deploy.run import new_deploy, run_deploy
from roost.deploy.transport import Transport
from roost.errors import UsageError
from tests.deploy.test_local_deploy import hosts
from tests.deploy.trees import make_sample_tree, tree_signature

pytestmark = pytest.mark.slow
WAIT = 30.0


def _config() -> DeployConfig:
    return DeployConfig(dest="/unused", python=sys.executable, port_range="0", timeout=120)


def test_the_source_is_hashed_while_the_hosts_are_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reached = threading.Event()
    real_build = treepack.build

    def build(*args: Any, **kw: Any) -> treepack.TreePayload:
        # hashing waits for the first host to be reached: it can only finish if
        # the deploy reaches hosts while it hashes
        if not reached.wait(WAIT):
            raise AssertionError("no host was reached while the source was hashed")
        return real_build(*args, **kw)

    base = tmp_path / "hosts"
    connect = local_connector(base)

    async def connector(spec: HostSpec) -> Transport:
        transport = await connect(spec)
        reached.set()
        return transport

    monkeypatch.setattr(treepack, "build", build)
    src = make_sample_tree(tmp_path / "src", big=100_000)
    d = new_deploy(_config(), hosts(base, 2), "r1")
    asyncio.run(run_deploy(d, src, connector, listen="127.0.0.1"))
    assert d.exit_code == 0, [h.reason for h in d.hosts]
    assert tree_signature(base / "p1" / "app" / "current") == tree_signature(src)


def test_a_bad_source_is_refused_before_any_host_is_reached(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", big=10_000)
    os.symlink("../../etc/passwd", src / "escape")
    calls: list[str] = []

    async def connector(spec: HostSpec) -> Transport:
        calls.append(spec.name)
        raise AssertionError("a host was reached")

    d = new_deploy(_config(), hosts(tmp_path / "hosts", 2), "r1")
    with pytest.raises(UsageError, match="leads out of the release"):
        asyncio.run(run_deploy(d, src, connector, listen="127.0.0.1"))
    assert calls == []


def test_hosts_start_fetching_while_the_origin_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetching: asyncio.Event | None = None
    real_started, real_fetch = swarm.Origin.started, HostRun.start_fetch

    async def started(self: swarm.Origin) -> None:
        # the origin is "up" only once a host's fetch was launched
        assert fetching is not None
        await asyncio.wait_for(fetching.wait(), WAIT)
        await real_started(self)

    async def start_fetch(self: HostRun, *args: Any, **kw: Any) -> None:
        await real_fetch(self, *args, **kw)
        assert fetching is not None
        fetching.set()

    monkeypatch.setattr(swarm.Origin, "started", started)
    monkeypatch.setattr(HostRun, "start_fetch", start_fetch)
    src = make_sample_tree(tmp_path / "src", big=100_000)
    base = tmp_path / "hosts"
    d = new_deploy(_config(), hosts(base, 2), "r1")

    async def main() -> None:
        nonlocal fetching
        fetching = asyncio.Event()
        await run_deploy(d, src, local_connector(base), listen="127.0.0.1")

    asyncio.run(main())
    assert d.exit_code == 0, [h.reason for h in d.hosts]
    assert tree_signature(base / "p0" / "app" / "current") == tree_signature(src)


def test_an_origin_that_cannot_start_fails_the_deploy_and_stops_the_fetches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def started(self: swarm.Origin) -> None:
        await self.stop()
        raise swarm.RoostError("the origin seeder failed: test")

    monkeypatch.setattr(swarm.Origin, "started", started)
    src = make_sample_tree(tmp_path / "src", big=100_000)
    base = tmp_path / "hosts"
    d = new_deploy(_config(), hosts(base, 2), "r1")
    with pytest.raises(swarm.RoostError, match="origin seeder failed"):
        asyncio.run(run_deploy(d, src, local_connector(base), listen="127.0.0.1"))
    for i in range(2):  # cleaned up: no deploy directory, no release, nothing current
        app = base / f"p{i}" / "app"
        assert not (app / "current").exists()
        left = [str(p) for p in (app / ".roost" / "deploys").rglob("*")]
        assert not left, left


def test_a_tree_fetch_stages_its_release_before_saying_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No stage command, no second proof of every file: the fetch made releases/<tag>."""
    from roost.target import agentargv

    def no_stage(*args: Any) -> list[str]:
        raise AssertionError("the deploy ran a stage command")

    monkeypatch.setattr(agentargv, "stage", no_stage)
    src = make_sample_tree(tmp_path / "src", big=100_000)
    base = tmp_path / "hosts"
    d = new_deploy(_config(), hosts(base, 2), "r1")
    asyncio.run(run_deploy(d, src, local_connector(base), listen="127.0.0.1"))
    assert d.exit_code == 0, [h.reason for h in d.hosts]
    assert all(h.staged_by_fetch for h in d.hosts)
    for i in range(2):
        assert tree_signature(base / f"p{i}" / "app" / "current") == tree_signature(src)


def test_when_the_fetch_cannot_stage_the_deploy_stages_and_reports_why(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", big=100_000)
    base = tmp_path / "hosts"
    (base / "p0" / "app" / "releases" / "r1").mkdir(parents=True)  # not roost's
    d = new_deploy(_config(), hosts(base, 2), "r1")
    asyncio.run(run_deploy(d, src, local_connector(base), listen="127.0.0.1"))
    bad, good = d.hosts
    assert not bad.staged_by_fetch and bad.failed and bad.kind == "stage"
    assert "roost did not make it" in bad.reason
    # the other host staged (by its fetch); below --min-success, nothing is switched
    assert good.staged_by_fetch and good.status == "not-activated" and d.exit_code == 3
    assert tree_signature(base / "p1" / "app" / "releases" / "r1") == tree_signature(src)
