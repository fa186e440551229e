"""Tree releases through deploy's whole code path (local transport, real processes):
the default for a directory, bytes reused and fetched in the table and --json,
and --dry-run saying what each host would fetch."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from roost.deploy.view import final_table, report
from tests.deploy.test_local_deploy import current, deploy
from tests.deploy.trees import make_sample_tree, tree_signature

pytestmark = pytest.mark.slow
BIG = 1_500_000


def _table(d: object) -> str:
    console = Console(record=True, width=200)
    final_table(d, console)  # type: ignore[arg-type]
    return console.export_text()


def test_reused_and_fetched_bytes_per_host_and_in_total(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", big=BIG)
    base = tmp_path / "hosts"
    d = deploy(base, src, "r1", n=3)
    assert d.exit_code == 0, [h.reason for h in d.hosts]
    assert d.payload is not None and d.payload.manifest.format == "tree"
    rows = report(d)["hosts"]
    assert [r["bytes_reused"] for r in rows] == [0, 0, 0]
    assert all(r["bytes_to_fetch"] >= BIG for r in rows)
    first = report(d)["bytes"]
    assert first["reused"] == 0 and first["fetched"] >= 3 * BIG

    new = tmp_path / "src2"
    shutil.copytree(src, new, symlinks=True)
    (new / "version").write_text("2")
    os.rename(new / "data.bin", new / "moved.bin")
    # edited in place on one host after activation: that copy is never reused
    edited = base / "p1" / "app" / "releases" / "r1" / "etc" / "app.conf"
    edited.write_text("port = 9090\n")
    d = deploy(base, new, "r2", n=3)
    assert d.exit_code == 0, [h.reason for h in d.hosts]
    for i in range(3):
        assert current(base, i) == "releases/r2"
        assert tree_signature(base / f"p{i}" / "app" / "current") == tree_signature(new)
    out = report(d)
    assert all(r["bytes_reused"] >= BIG and r["bytes_fetched"] < 100_000 for r in out["hosts"])
    assert [(r["files_rehashed"], r["files_refused"]) for r in out["hosts"]] == \
        [(0, 0), (1, 1), (0, 0)]
    assert out["hosts"][1]["files_reused"] == out["hosts"][0]["files_reused"] - 1
    assert out["bytes"]["reused"] >= 3 * BIG and out["bytes"]["fetched"] < 300_000
    assert "entries" in out["payload"] and "tree" not in out["payload"]
    text = _table(d)
    assert "reused / fetched" in text and "reused locally" in text
    _check_timeline(out)


def _check_timeline(out: dict[str, object]) -> None:
    """--json's timeline: the deploy's and each host's marks, in the order the
    steps run, as seconds since the deploy started."""
    deploy_marks = out["timeline"]
    assert isinstance(deploy_marks, dict)
    order = ["start", "reached", "prepared", "fetched", "activated", "end"]
    assert [m for m in deploy_marks if m in order] == order
    assert deploy_marks["start"] == 0 and deploy_marks["end"] > 0
    # hashing runs while the hosts are reached; the origin starts beside the fetches
    assert deploy_marks["packed"] <= deploy_marks["prepared"]
    assert deploy_marks["prepared"] <= deploy_marks["origin_started"] <= deploy_marks["end"]
    steps = ["connect", "session", "locked", "prepared", "fetch_started", "reused",
             "fetch_running", "announced", "fetched", "staged", "activated", "cleaned",
             "released"]
    for row in out["hosts"]:  # type: ignore[attr-defined]
        marks = row["timeline"]
        assert [m for m in marks if m in steps] == steps, marks
        assert list(marks.values()) == sorted(marks.values())


def test_dry_run_says_what_each_host_would_fetch(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", big=BIG)
    base = tmp_path / "hosts"
    assert deploy(base, src, "r1", n=2).exit_code == 0
    (src / "version").write_text("3")
    before = tree_signature(base / "p0" / "app")
    d = deploy(base, src, "r2", n=2, dry_run=True)
    assert d.exit_code == 0, [h.reason for h in d.hosts]
    for h in d.hosts:
        assert h.bytes_reused is not None and h.bytes_reused >= BIG
        assert h.bytes_to_fetch is not None and 0 < h.bytes_to_fetch < 100_000
    assert "over the network" in _table(d)
    assert tree_signature(base / "p0" / "app") == before  # nothing changed


def test_the_tarball_stays_available_behind_a_flag(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", big=100_000)
    base = tmp_path / "hosts"
    d = deploy(base, src, "t1", format="tar")
    assert d.exit_code == 0 and d.payload is not None and d.payload.manifest.format == "tar"
    assert tree_signature(base / "p0" / "app" / "current") == tree_signature(src)
    assert report(d)["hosts"][0]["bytes_reused"] is None
