"""The deploy's origin is started early (roost.deploy.originproc): it imports while
the hosts are reached, does nothing until told its arguments, and seeds as a plain
`roost seed` would once told."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from roost.deploy import swarm as swarm_module
from roost.deploy.originproc import read_argv
from roost.deploy.swarm import Origin
from roost.deploy.treepack import build
from tests.deploy.test_local_deploy import deploy
from tests.deploy.trees import make_sample_tree, tree_signature


def _listening(pid: int) -> bool:
    """Whether the process has any socket open."""
    fds = Path(f"/proc/{pid}/fd")
    return any("socket:" in str(fd.readlink()) for fd in fds.iterdir())


def test_an_unneeded_warm_origin_opens_nothing_and_exits_when_its_stdin_closes() -> None:
    async def scenario() -> None:
        warm = await Origin.prestart(Path.cwd())
        await asyncio.sleep(1.0)  # long enough to have imported the engine
        assert warm.returncode is None
        assert not _listening(warm.pid)
        await Origin.discard(warm)
        assert warm.returncode == 0

    asyncio.run(scenario())


def test_a_garbled_command_line_is_one_error_line() -> None:
    done = subprocess.run([sys.executable, "-m", "roost.deploy.originproc"],
                          input=b'["fetch", "x"]\n', capture_output=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.decode().strip() == "roost origin: error: the deploy sent no seed command"
    assert read_argv('["seed", "t.torrent", "-d", "/x"]') == ["seed", "t.torrent", "-d", "/x"]
    for bad in ("", "{}", "[]", '["seed", 3]', "not json"):
        assert read_argv(bad) is None


def test_a_warm_origin_seeds_once_told_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", big=100_000)
    torrent = tmp_path / "t.torrent"
    torrent.write_bytes(build(src, "v1").torrent)

    async def one(warm: Any) -> tuple[int, int]:
        origin = await Origin.start(torrent, src, "127.0.0.1", "http://127.0.0.1:9/announce",
                                    2, None, tree=True, warm=warm)
        try:
            assert _listening(origin.proc.pid)  # it seeds
            return origin.proc.pid, warm.pid if warm is not None else 0
        finally:
            await origin.stop()

    async def scenario() -> None:
        warm = await Origin.prestart(Path.cwd())
        used, given = await one(warm)
        assert used == given  # the warm process itself seeded
        dead = await Origin.prestart(Path.cwd())
        dead.kill()
        await dead.wait()
        used, given = await one(dead)
        assert used != given  # a new process instead

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_deploy_seeds_from_the_process_it_started_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given: list[object] = []
    real_start = Origin.start.__func__  # type: ignore[attr-defined]

    async def start(cls: type[Origin], *args: Any, **kw: Any) -> Origin:
        given.append(kw.get("warm"))
        origin: Origin = await real_start(cls, *args, **kw)
        return origin

    monkeypatch.setattr(swarm_module.Origin, "start", classmethod(start))
    src = make_sample_tree(tmp_path / "src", big=100_000)
    d = deploy(tmp_path / "hosts", src, "r1")
    assert d.exit_code == 0, [h.reason for h in d.hosts]
    assert len(given) == 1 and given[0] is not None
    assert tree_signature(tmp_path / "hosts" / "p0" / "app" / "current") == tree_signature(src)
