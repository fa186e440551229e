"""The channel over TLS: an agent given the coordinator's CA follows it; one that does
not trust the certificate never talks to it (and so never hears of the release)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import require_tool
from tests.pull.harness import (
    AgentProc,
    agent_argv,
    current_of,
    free_port,
    publish_argv,
    release_tree,
    run_publish,
)
from tests.pull.keys import allowed_signers, make_key


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "channel.pem", directory / "channel.key"
    subprocess.run([require_tool("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def test_agents_follow_a_tls_channel_only_with_its_ca(tmp_path: Path) -> None:
    cert, tls_key = self_signed(tmp_path)
    key = make_key(tmp_path, "publisher")
    signers = allowed_signers(tmp_path / "allowed_signers", ("ci", key))
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    trusting = AgentProc("a0", tmp_path / "d0", tmp_path / "a0.log",
                         [*agent_argv("a0", tmp_path / "d0", url, signers), "--ca", str(cert)])
    doubting = AgentProc("a1", tmp_path / "d1", tmp_path / "a1.log",
                         agent_argv("a1", tmp_path / "d1", url, signers))
    trusting.start()
    doubting.start()
    try:
        code, report, err = run_publish(publish_argv(
            release_tree(tmp_path, "v1"), key, "127.0.0.1", port, ["a0", "a1"], "--tag", "v1",
            "--timeout", "15", "--min-success", "1", "--tls-cert", str(cert),
            "--tls-key", str(tls_key)))
    finally:
        trusting.stop()
        doubting.stop()
    assert code == 0, (report.get("message"), err[-2000:])
    assert f"channel {url}" in err
    rows = {r["host"]: r for r in report["hosts"]}
    assert rows["a0"]["status"] == "ok" and current_of(tmp_path / "d0") == "v1"
    assert (rows["a1"]["status"], rows["a1"]["kind"]) == ("failed", "timeout")
    assert current_of(tmp_path / "d1") is None
    unreachable = [e["error"] for e in doubting.events()
                   if e["event"] == "coordinator_unreachable"]
    assert any("CERTIFICATE_VERIFY_FAILED" in e for e in unreachable), unreachable
