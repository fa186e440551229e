"""Hosts whose releases live on XFS (reflink=1), as bench.tree_delta --dest-fs xfs
makes them (root, mkfs.xfs): the next release's unchanged files are placed as
reflinks, sharing the kept release's blocks, and the tree is the source's."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.deploy.trees import make_sample_tree
from tests.fleet.conftest import require_fleet_tools
from tests.fleet.fleet import Fleet
from tests.fleet.helpers import (
    by_host,
    deploy_argv,
    local_tree_digest,
    remote_tree_digest,
    run_roost,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def xfs_fleet() -> Iterator[Fleet]:
    require_fleet_tools()
    require_tool("mkfs.xfs")
    require_tool("filefrag")
    with Fleet(2, dest_size="320m", dest_fs="xfs") as fleet:  # mkfs.xfs: 300 MiB at least
        yield fleet


def test_the_next_release_reuses_files_as_reflinks(xfs_fleet: Fleet, tmp_path: Path) -> None:
    fleet = xfs_fleet
    for i in range(fleet.n):
        kind = fleet.ssh(i, f"stat -f -c %T {fleet.dest}").stdout.strip()
        assert kind == "xfs", f"h{i}'s destination is {kind}"
    src = make_sample_tree(tmp_path / "app", big=3_000_000)
    hosts = [h.address for h in fleet.hosts]
    code, report, err = run_roost(deploy_argv(fleet, src, hosts, "--tag", "v1"))
    assert code == 0, (report.get("message"), err[-2000:])
    big = max((p for p in src.rglob("*") if p.is_file() and not p.is_symlink()),
              key=lambda p: p.stat().st_size)
    rel = big.relative_to(src).as_posix()
    changed = next(p for p in sorted(src.rglob("*")) if p.is_file() and not p.is_symlink()
                   and p != big and p.stat().st_size > 0)
    changed.write_bytes(os.urandom(changed.stat().st_size))
    code, report, err = run_roost(deploy_argv(fleet, src, hosts, "--tag", "v2"))
    assert code == 0, (report.get("message"), err[-2000:])
    want = local_tree_digest(src)
    for row in by_host(report).values():
        assert row["bytes_reused"] >= big.stat().st_size, row
    for i in range(fleet.n):
        assert remote_tree_digest(fleet, i, f"{fleet.dest}/current") == want
        # FICLONE: the unchanged file's extents are shared with the kept release's
        frag = fleet.ssh(i, f"filefrag -v {fleet.dest}/releases/v2/{rel}")
        assert frag.returncode == 0, frag.stderr
        assert "shared" in frag.stdout, frag.stdout
    shutil.rmtree(tmp_path / "app")
