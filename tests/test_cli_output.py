"""What the CLI prints: only roost's own lines, readable at 80 columns.

Every command runs as a real process, the way an operator types it. The SSH
cases dial 127.0.0.1 port 1, where nothing listens, so each host fails at
once with a reason that must appear in full under the per-host table.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = ["make", "show", "tracker", "deploy", "demo", "status", "rollback", "clean",
            "publish", "fetch", "seed", "activate", "agent"]
ENV = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
ENV.pop("PYTHONWARNINGS", None)


def roost(*args: str, cwd: Path | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roost", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=cwd, stdin=subprocess.DEVNULL)


def bad_inputs(tmp: Path) -> dict[str, list[str]]:
    """One realistic mistake per command."""
    return {
        "make": ["make", str(tmp / "missing"), "-o", str(tmp / "x.torrent")],
        "show": ["show", str(tmp / "missing.torrent")],
        "tracker": ["tracker", "--location", "nowhere"],
        "deploy": ["deploy", str(tmp / "missing"), "--hosts", "h1", "--dest", "/srv/app"],
        "demo": ["demo", "--size", "lots"],
        "status": ["status"],
        "rollback": ["rollback"],
        "clean": ["clean"],
        "fetch": ["fetch", str(tmp / "missing.torrent")],
        "seed": ["seed", str(tmp / "missing.torrent")],
        "activate": ["activate", "--dest", str(tmp / "d"), "--tag", "../x"],
        "publish": ["publish", str(tmp), "--key", str(tmp / "missing-key"),
                    "--listen", "127.0.0.1", "--hosts", "a"],
        "agent": ["agent", "--coordinator", "http://127.0.0.1:1", "--dest", "relative",
                  "--allowed-signers", str(tmp / "missing")],
    }


@pytest.mark.parametrize("name", COMMANDS)
def test_help_prints_nothing_on_stderr(name: str) -> None:
    res = roost(name, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert "roost" in res.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_bad_input_is_one_line_of_roost_s_own(name: str, tmp_path: Path) -> None:
    res = roost(*bad_inputs(tmp_path)[name], cwd=tmp_path)
    assert res.returncode != 0
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert re.match(rf"roost( {name})?: error: ", lines[0]), lines[0]


def test_root_help_lists_every_command_in_full_without_loading_ssh() -> None:
    res = roost("--help")
    assert res.returncode == 0 and res.stderr == ""
    from roost.commands.cli import AGENT_HELP, COMMANDS

    for text in [t for _, t in COMMANDS.values()] + list(AGENT_HELP.values()):
        assert text in " ".join(res.stdout.split()), text  # whole, maybe wrapped
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys; from roost.commands.cli import run; run(['--help']); "
         "print('LOADED' if {'asyncssh', 'aiohttp'} & set(sys.modules) else 'LIGHT')"],
        capture_output=True, text=True, timeout=60, env=ENV)
    assert probe.stdout.strip().endswith("LIGHT"), probe.stdout[-200:]


def test_status_names_every_missing_input_at_once() -> None:
    res = roost("status")
    assert res.returncode == 2
    assert res.stderr.startswith("roost: error: missing hosts")
    assert "--dest" in res.stderr and len(res.stderr.splitlines()) == 1


def test_demo_size_is_a_size_and_peers_is_a_count() -> None:
    res = roost("demo", "--size", "lots")
    assert res.stderr.strip() == "roost: error: --size 'lots' is not a size like 512K, 32M or 1G"
    assert "--peers" in roost("demo", "--help").stdout
    assert roost("demo", "--hosts", "3").returncode == 2  # --hosts is a host list elsewhere


UNREACHABLE = ["--hosts", "127.0.0.1:1", "--dest", "/srv/roost-test-nowhere",
               "--known-hosts", "off", "--connect-timeout", "5"]


@pytest.mark.parametrize("argv", [
    ["status"], ["rollback"], ["clean"], ["deploy", "{src}"], ["deploy", "{src}", "--dry-run"],
], ids=["status", "rollback", "clean", "deploy", "dry-run"])
def test_a_failed_host_s_reason_is_a_whole_line_under_the_table(argv: list[str],
                                                                tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a\n")
    args = [a.format(src=tmp_path / "src") for a in argv]
    res = roost(*args, *UNREACHABLE)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert all(len(line) <= 80 for line in out.splitlines()), out
    # the reason, whole, on a line of its own that starts with the host
    reason = [line for line in out.splitlines() if line.startswith("127.0.0.1: ")]
    assert len(reason) == 1, out
    assert "Connect call failed" in reason[0] and reason[0].endswith("[unreachable]"), out
    assert "…" not in out, out
