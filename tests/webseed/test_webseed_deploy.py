"""`roost deploy --web-seed` through the local transport: every host's fetch is
told the web seed, and takes pieces from a real nginx besides the swarm."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

from roost.commands.demo import local_connector
from roost.deploy.config import DeployConfig, HostSpec
from roost.deploy.run import Deploy, new_deploy, run_deploy
from roost.errors import UsageError
from tests.deploy.trees import make_sample_tree, tree_signature
from tests.webseed.nginx import Nginx


def deploy(base: Path, src: Path, tag: str, **settings: object) -> Deploy:
    config = DeployConfig(dest="/unused", python=sys.executable, port_range="0", timeout=120,
                          **settings)  # type: ignore[arg-type]
    hosts = [HostSpec(name=f"p{i}", address="127.0.0.1", dest=str(base / f"p{i}" / "app"))
             for i in range(2)]
    d = new_deploy(config, hosts, tag)
    asyncio.run(run_deploy(d, src, local_connector(base), listen="127.0.0.1"))
    return d


def test_a_tree_deploy_takes_pieces_from_the_web_seed(
        tmp_path: Path, www: tuple[Path, Nginx]) -> None:
    root, nginx = www
    src = make_sample_tree(tmp_path / "src", big=3_000_000)
    shutil.copytree(src, root / "w1", symlinks=True)  # BEP 19: <url>/<torrent name = tag>/...
    base = tmp_path / "hosts"
    # the origin and peers capped at 64 KiB/s: 3 MB would take most of a minute without it
    d = deploy(base, src, "w1", web_seeds=[nginx.url()], upload_rate="64K")
    assert d.exit_code == 0, [h.reason for h in d.hosts]
    for i in range(2):
        assert tree_signature(base / f"p{i}" / "app" / "releases" / "w1") == tree_signature(src)
    asked = [line for line in nginx.requests() if '"GET /w1/' in line]
    assert asked and all('" 206 ' in line for line in asked), asked[:3]


def test_web_seeds_refuse_a_tarball_made_for_the_deploy(
        tmp_path: Path, www: tuple[Path, Nginx]) -> None:
    src = make_sample_tree(tmp_path / "src", big=1000)
    with pytest.raises(UsageError, match="--web-seed needs a payload"):
        deploy(tmp_path / "hosts", src, "t1", web_seeds=[www[1].url()], format="tar")
    with pytest.raises(UsageError, match="is not an http"):
        deploy(tmp_path / "hosts", src, "t2", web_seeds=["ftp://x/"])
