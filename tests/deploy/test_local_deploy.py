"""deploy's code path with the local transport (the demo's): policy, formats, no-ops, hooks.

Real processes and files: each host is a directory with its own $HOME and
destination, its `roost fetch` a separate process on loopback.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from roost.commands.demo import local_connector
from roost.deploy.config import DeployConfig, HostSpec
from roost.deploy.run import Deploy, new_deploy, run_deploy
from tests.deploy.trees import make_sample_tree, tree_signature

pytestmark = pytest.mark.slow


def hosts(base: Path, n: int) -> list[HostSpec]:
    return [HostSpec(name=f"p{i}", address="127.0.0.1", dest=str(base / f"p{i}" / "app"))
            for i in range(n)]


def deploy(base: Path, src: Path, tag: str, n: int = 2, **settings: object) -> Deploy:
    config = DeployConfig(dest="/unused", python=sys.executable, port_range="0", timeout=120,
                          **settings)  # type: ignore[arg-type]
    d = new_deploy(config, hosts(base, n), tag)
    asyncio.run(run_deploy(d, src, local_connector(base), listen="127.0.0.1"))
    return d


def current(base: Path, i: int) -> str | None:
    link = base / f"p{i}" / "app" / "current"
    return os.readlink(link) if link.is_symlink() else None


def test_no_activate_then_activate_then_redeploy_is_a_noop(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", big=200_000)
    base = tmp_path / "hosts"
    d = deploy(base, src, "r1", activate=False)
    assert d.exit_code == 0 and [h.status for h in d.hosts] == ["staged", "staged"]
    assert current(base, 0) is None
    assert tree_signature(base / "p0" / "app" / "releases" / "r1") == tree_signature(src)
    d = deploy(base, src, "r1")
    assert d.exit_code == 0 and all(h.already_had and h.status == "ok" for h in d.hosts)
    assert current(base, 1) == "releases/r1"
    assert not any((base / "p0" / "app" / ".roost" / "deploys").iterdir())


def test_single_file_and_multifile_payloads(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", big=100_000)
    base = tmp_path / "hosts"
    d = deploy(base, src / "data.bin", "f1")
    assert d.exit_code == 0, [h.reason for h in d.hosts]
    got = base / "p1" / "app" / "current" / "data.bin"
    assert got.read_bytes() == (src / "data.bin").read_bytes()
    plain = tmp_path / "plain"
    (plain / "sub").mkdir(parents=True)
    (plain / "sub" / "a.txt").write_text("a")
    (plain / "b.txt").write_text("b")
    d = deploy(base, plain, "m1", format="dir")
    assert d.exit_code == 0, [h.reason for h in d.hosts]
    assert (base / "p0" / "app" / "current" / "sub" / "a.txt").read_text() == "a"


def test_a_failing_pre_hook_gives_exit_4_and_keeps_the_old_release(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", big=50_000)
    base = tmp_path / "hosts"
    assert deploy(base, src, "h1").exit_code == 0
    (src / "version").write_text("2")
    d = deploy(base, src, "h2", pre_activate=["test \"$HOME\" != \"${HOME%p1/home}p1/home\""])
    assert d.exit_code == 4, d.message
    assert [h.status for h in d.hosts] == ["ok", "failed"]
    assert d.hosts[1].kind == "hook"
    assert (current(base, 0), current(base, 1)) == ("releases/h2", "releases/h1")
    # with --min-success 1 the same outcome is a success
    (src / "version").write_text("3")
    d = deploy(base, src, "h3", min_success="1",
               pre_activate=["test \"$HOME\" != \"${HOME%p1/home}p1/home\""])
    assert d.exit_code == 0


def test_an_external_tracker_via_its_admin_api(tmp_path: Path) -> None:
    """network.tracker: the swarm is registered on a separate `roost tracker`, then removed."""
    import json
    import subprocess
    import urllib.request

    token = "t0ken-for-the-deploy-test"
    tracker = subprocess.Popen(
        [sys.executable, "-u", "-m", "roost", "tracker", "--host", "127.0.0.1", "--port", "0",
         "--admin-token", token, "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    try:
        assert tracker.stdout is not None
        url = json.loads(tracker.stdout.readline())["url"]
        src = make_sample_tree(tmp_path / "src", big=100_000)
        d = deploy(tmp_path / "hosts", src, "x1", n=2, tracker=url, tracker_token=token)
        assert d.exit_code == 0, (d.message, [h.reason for h in d.hosts])
        request = urllib.request.Request(f"{url}/admin/swarms",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["swarms"] == []  # unregistered at the end
        from roost.errors import RoostError

        with pytest.raises(RoostError, match="admin token"):  # the CLI: one line, exit 1
            deploy(tmp_path / "hosts", src, "x2", tracker=url, tracker_token="wrong-token-123")
    finally:
        tracker.terminate()
        tracker.wait(timeout=10)
