"""A deploy's fixed costs overlap instead of adding up (local transport, real processes):
the source is hashed while the hosts are reached, and the hosts start fetching
while the origin seeder starts. Each test makes one step wait for the other, so
run one after the other they would deadlock (and fail on a bounded wait)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
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


def test_the_fetches_are_stopped_once_every_host_has_staged_before_activation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the fetch phase ends, each host's fetch still running is told to stop (a
    kill on its session) before its host is activated, so its shutdown overlaps the
    activation instead of host-clean waiting for it; and never before the last host
    staged: until then every fetch may be serving a host that lacks pieces."""
    from roost.deploy.run import Deploy
    from roost.deploy.session import AgentSession, _SessionStream

    sent: list[tuple[AgentSession, dict[str, Any], float]] = []
    running_at_fetched: list[HostRun] = []  # hosts whose fetch ran when the phase ended
    judged: dict[str, bool] = {}  # host -> its fetch was told to stop (or had exited)
    real_send, real_mark, real_activate = AgentSession._send, Deploy.mark, HostRun.activate

    async def send(self: AgentSession, record: dict[str, Any]) -> None:
        sent.append((self, dict(record), time.monotonic()))
        await real_send(self, record)

    def mark(self: Deploy, name: str) -> None:
        real_mark(self, name)
        if name == "fetched":
            running_at_fetched[:] = [h for h in self.hosts if h.fetch_task is not None
                                     and not h.fetch_task.done()]

    def told_to_stop(run: HostRun) -> bool:
        stream = run.fetch_stream
        assert isinstance(stream, _SessionStream)
        return any(s is stream.session and r.get("op") == "kill" and r.get("id") == stream.rid
                   for s, r, _ in sent)

    async def activate(self: HostRun, *args: Any, **kw: Any) -> None:
        if any(self is h for h in running_at_fetched):
            exited = self.fetch_task is not None and self.fetch_task.done()
            judged[self.spec.name] = exited or told_to_stop(self)
        await real_activate(self, *args, **kw)

    monkeypatch.setattr(AgentSession, "_send", send)
    monkeypatch.setattr(Deploy, "mark", mark)
    monkeypatch.setattr(HostRun, "activate", activate)
    src = make_sample_tree(tmp_path / "src", big=3_000_000)
    base = tmp_path / "hosts"
    d = new_deploy(_config(), hosts(base, 3), "r1")
    asyncio.run(run_deploy(d, src, local_connector(base), listen="127.0.0.1"))
    assert d.exit_code == 0, [h.reason for h in d.hosts]
    for i in range(3):
        assert tree_signature(base / f"p{i}" / "app" / "current") == tree_signature(src)
    # the hosts that finished before the last one keep seeding until it is done: they
    # learn the swarm is complete only at their next announce, seconds later
    assert running_at_fetched, "no fetch ran at the fetch phase's end: nothing to judge"
    assert judged == {h.spec.name: True for h in running_at_fetched}, judged
    last_staged = max(h.times["staged"] for h in d.hosts)
    streams = [h.fetch_stream for h in d.hosts]
    fetches = {(id(f.session), f.rid) for f in streams if isinstance(f, _SessionStream)}
    kills = [t for s, r, t in sent if r.get("op") == "kill" and (id(s), r.get("id")) in fetches]
    assert all(t >= last_staged for t in kills), (kills, last_staged)
