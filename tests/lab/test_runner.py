"""The benchmark runner records failures and timeouts as results, never crashes.

Needs root (a 3-host lab); a few seconds.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.lab import Host, Lab, NotRun
from bench.tools.base import RunContext, Tool, verify_argv
from bench.tools.runner import run_tool

pytestmark = [pytest.mark.root]


class FakeTool(Tool):
    """Receivers run `script` (sh) with {verify} (the verify command) and {host} filled in."""

    name = "fake"

    def __init__(self, script: str, available: bool = True) -> None:
        self.script = script
        self.available = available

    def check_available(self) -> None:
        if not self.available:
            raise NotRun("fake tool missing")

    def start_origin(self, ctx: RunContext) -> None:
        ctx.spawn(ctx.origin, "seeder", ["sleep", "60"])

    def launch_receiver(self, ctx: RunContext, host: Host) -> subprocess.Popen[bytes]:
        verify = " ".join(verify_argv(ctx, host, ctx.payload))
        script = self.script.format(verify=verify, host=host.name)
        return ctx.spawn(host, "receiver", ["sh", "-c", script])


def context(lab: Lab, tmp: Path, sha: str = "") -> RunContext:
    assert lab.tmpdir is not None
    payload = lab.tmpdir / "payload.bin"
    payload.write_bytes(b"hello")
    import hashlib

    run_dir = lab.tmpdir / f"run-{len(list(lab.tmpdir.glob('run-*')))}"
    (run_dir / "done").mkdir(parents=True)
    return RunContext(lab=lab, payload=payload,
                      sha256=sha or hashlib.sha256(b"hello").hexdigest(), size=5,
                      piece_size=1 << 15, torrent=tmp / "none.torrent", run_dir=run_dir,
                      done_dir=run_dir / "done")


@pytest.fixture
def lab3(make_lab: Callable[..., Lab]) -> Lab:
    return make_lab(3, 10.0)


def test_ok_when_every_receiver_verifies_and_keeps_running(lab3: Lab, tmp_path: Path) -> None:
    res = run_tool(FakeTool("{verify}; sleep 60"), lab3, context(lab3, tmp_path), 20)
    assert res.status == "ok", res.reason
    assert sorted(res.times) == ["h1", "h2"]
    assert "receiver" in res.commands and "seeder" in res.commands
    assert res.cpu_avg is not None and res.cpu_procs is not None


def test_receiver_that_stops_uploading_fails_the_run(lab3: Lab, tmp_path: Path) -> None:
    # h1 completes and exits at once while h2 is still busy: not allowed for a swarm tool
    script = "case {host} in h1) {verify};; *) sleep 3; {verify}; sleep 60;; esac"
    res = run_tool(FakeTool(script), lab3, context(lab3, tmp_path), 20)
    assert res.status == "failed"
    assert "h1 receiver exited (0) after completing" in res.reason


def test_crashing_receiver_is_a_failure_with_its_log(lab3: Lab, tmp_path: Path) -> None:
    res = run_tool(FakeTool("echo boom >&2; exit 3"), lab3, context(lab3, tmp_path), 20)
    assert res.status == "failed"
    assert "exited (3) before completing: boom" in res.reason


def test_bad_copy_is_a_failure(lab3: Lab, tmp_path: Path) -> None:
    res = run_tool(FakeTool("{verify}; sleep 60"), lab3, context(lab3, tmp_path, sha="0" * 64),
                   20)
    assert res.status == "failed" and "failed verification" in res.reason


def test_timeout_is_a_failure(lab3: Lab, tmp_path: Path) -> None:
    res = run_tool(FakeTool("sleep 60"), lab3, context(lab3, tmp_path), 1.5)
    assert res.status == "failed" and res.reason.startswith("timed out after 2s; 2 hosts")
    assert res.wall_s < 15  # and every process was stopped promptly


def test_missing_tool_is_not_run(lab3: Lab, tmp_path: Path) -> None:
    res = run_tool(FakeTool("sleep 60", available=False), lab3, context(lab3, tmp_path), 5)
    assert res.status == "not run" and res.reason == "fake tool missing"


def test_origin_exit_fails_the_run(lab3: Lab, tmp_path: Path) -> None:
    class DyingOrigin(FakeTool):
        def start_origin(self, ctx: RunContext) -> None:
            ctx.spawn(ctx.origin, "seeder", [sys.executable, "-c", "raise SystemExit(7)"])

    res = run_tool(DyingOrigin("sleep 60"), lab3, context(lab3, tmp_path), 20)
    assert res.status == "failed" and res.reason.startswith("origin seeder exited (7)")
