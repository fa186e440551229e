"""`roost tracker` as a real process: JSON start line, admin use, graceful stop."""

from __future__ import annotations

import http.client
import json
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from roost.commands.tracker import command


def start(args: list[str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "roost", "tracker", "--port", "0", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    if not ready:
        proc.kill()
        proc.wait(10)
        pytest.fail("tracker did not start within 20 s")
    line = proc.stdout.readline()
    try:
        return proc, json.loads(line)
    except ValueError:
        proc.kill()
        proc.wait(10)
        raise


def stop(proc: subprocess.Popen[str], sig: int) -> tuple[int, str]:
    try:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_runs_standalone_and_stops_gracefully(tmp_path: Path, sig: int) -> None:
    state = tmp_path / "state.json"
    proc, info = start(["--state", str(state), "--interval", "3"])
    try:
        assert info["url"] == f"http://127.0.0.1:{info['port']}" and info["admin_token"]
        conn = http.client.HTTPConnection("127.0.0.1", info["port"], timeout=10)
        conn.request(
            "POST",
            "/admin/swarms",
            body=json.dumps({"info_hash": "ab" * 20, "expected_peers": 7}),
            headers={"Authorization": f"Bearer {info['admin_token']}"},
        )
        assert conn.getresponse().status == 201
        conn.close()
    finally:
        code, err = stop(proc, sig)
    assert code == 0, err
    assert "Traceback" not in err and "stopped" in err
    saved = json.loads(state.read_text())
    assert saved["swarms"][0]["expected_peers"] == 7
    assert saved["admin_token"] == info["admin_token"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trust-ip-from", "not-a-net"], "not a network"),
        (["--location", "10.0.0.0/8"], "CIDR=LABEL"),
        (["--location", "bogus=rack1"], "not a network"),
        (["--admin-token", "short"], "at least 16 characters"),
    ],
)
def test_bad_arguments_are_one_clear_line(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "roost", "tracker", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_command_object_is_a_click_command_named_tracker() -> None:
    assert command.name == "tracker"
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0 and "--trust-ip-from" in result.output


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    proc, info = start([])
    try:
        busy = subprocess.run(
            [sys.executable, "-m", "roost", "tracker", "--port", str(info["port"])],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        stop(proc, signal.SIGTERM)
    assert busy.returncode != 0
    assert "cannot listen" in busy.stderr and "Traceback" not in busy.stderr
