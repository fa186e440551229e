"""`roost deploy --peer-tls` through deploy's own code path (the demo's local transport).

Real processes on loopback: each host is a directory with its own $HOME and
destination, its `roost fetch` a separate process. Checked: the release
arrives identical; every fetch ran with --tls-cert/--tls-key/--tls-ca whose
files were 0600 in that host's deploy directory (and the origin, which only
TLS peers can reach, served them all); the certificates chain to one CA made
for this deploy; nothing of it (files, scratch dir) is left afterwards.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from roost.commands.demo import local_connector
from roost.deploy.config import DeployConfig, HostSpec
from roost.deploy.run import new_deploy, run_deploy
from roost.deploy.session import AgentSession
from roost.deploy.transport import Result, Stream, Transport
from tests.deploy.trees import make_sample_tree, tree_signature

pytestmark = pytest.mark.slow


def note_fetch(command: str, seen: list[dict[str, Any]]) -> None:
    """When a fetch starts: its TLS files' modes and certificates."""
    argv = shlex.split(command.partition("exec ")[2])
    if "fetch" in argv:
        files = {f: Path(argv[argv.index(f"--tls-{f}") + 1])
                 for f in ("cert", "key", "ca") if f"--tls-{f}" in argv}
        seen.append({
            "flags": sorted(files),
            "modes": {f: p.stat().st_mode & 0o777 for f, p in files.items()},
            "cert": x509.load_pem_x509_certificate(files["cert"].read_bytes())
            if "cert" in files else None,
            "ca": files["ca"].read_bytes() if "ca" in files else None,
        })


class Recording:
    """A Transport that notes every fetch started through it."""

    def __init__(self, inner: Transport, seen: list[dict[str, Any]]) -> None:
        self.inner = inner
        self.seen = seen

    async def run(self, command: str, *, input: bytes | None = None, timeout: float = 120.0
                  ) -> Result:
        return await self.inner.run(command, input=input, timeout=timeout)

    async def start(self, command: str, *, stdin: bool = False) -> Stream:
        note_fetch(command, self.seen)
        return await self.inner.start(command, stdin=stdin)

    async def close(self) -> None:
        await self.inner.close()


def test_deploy_with_peer_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # the deploy's scratch dir
    src = make_sample_tree(tmp_path / "src", big=3_000_000)
    base = tmp_path / "hosts"
    hosts = [HostSpec(name=f"p{i}", address="127.0.0.1", dest=str(base / f"p{i}" / "app"))
             for i in range(3)]
    config = DeployConfig(dest="/unused", python=sys.executable, port_range="0", timeout=120,
                          peer_tls=True)
    deploy = new_deploy(config, hosts, "tls1")
    local = local_connector(base)
    seen: list[dict[str, Any]] = []

    async def connect(spec: HostSpec) -> Transport:
        return Recording(await local(spec), seen)

    # the fetch starts as a record on each host's agent session, above the transport
    session_start = AgentSession.start

    async def start(self: AgentSession, command: str, *, stdin: bool = False) -> Stream:
        note_fetch(command, seen)
        return await session_start(self, command, stdin=stdin)

    monkeypatch.setattr(AgentSession, "start", start)

    asyncio.run(run_deploy(deploy, src, connect, listen="127.0.0.1"))
    assert deploy.exit_code == 0, [(h.status, h.reason) for h in deploy.hosts]
    for i in range(3):
        assert tree_signature(base / f"p{i}" / "app" / "current") == tree_signature(src)
    assert len(seen) == 3
    assert all(s["flags"] == ["ca", "cert", "key"] for s in seen), seen
    assert all(s["modes"] == {"ca": 0o600, "cert": 0o600, "key": 0o600} for s in seen), seen
    assert len({s["ca"] for s in seen}) == 1, "hosts of one deploy got different CAs"
    ca = x509.load_pem_x509_certificate(seen[0]["ca"])
    assert ca.subject.rfc4514_string() == f"CN=roost deploy {deploy.deploy_id.rpartition('-')[2]}"
    assert {s["cert"].issuer for s in seen} == {ca.subject}
    assert sorted(str(s["cert"].subject.rfc4514_string()) for s in seen) == [
        "CN=p0", "CN=p1", "CN=p2"
    ]
    assert not list(base.rglob("peer-*.pem")), "TLS files left on a host"
    assert not list(scratch.iterdir()), "the deploy's scratch dir (origin's key) was left"


def test_host_prepare_writes_the_bundle_0600_and_refuses_a_partial_one(tmp_path: Path) -> None:
    """The agent side alone: a full bundle lands 0600; a bundle without its key is one
    sentence (exit 2), not a traceback."""
    import base64
    import json
    import subprocess

    from roost.commands.make import make_torrent
    from roost.deploy.pki import DeployCA
    from roost.target.release import Manifest

    src = make_sample_tree(tmp_path / "src", big=1000)
    torrent = make_torrent(src / "data.bin", [], piece_length=16 * 1024)
    manifest = Manifest(tag="t", format="file", name="data.bin", size=1000,
                        sha256="0" * 64)
    bundle = DeployCA("x").issue("h").to_dict()

    def prepare(tls: dict[str, str], deploy_id: str) -> subprocess.CompletedProcess[str]:
        blob = {"manifest": manifest.to_dict(), "torrent": base64.b64encode(torrent).decode(),
                "tls": tls}
        return subprocess.run(
            [sys.executable, "-m", "roost", "host-prepare", "--dest", str(tmp_path / "app"),
             "--deploy-id", deploy_id, "--json"],
            input=json.dumps(blob), capture_output=True, text=True, timeout=60)

    ok = prepare(bundle, "d1")
    assert ok.returncode == 0, ok.stderr
    work = Path(json.loads(ok.stdout.splitlines()[-1])["dir"])
    for name, key in (("peer-cert.pem", "cert"), ("peer-key.pem", "key"), ("peer-ca.pem", "ca")):
        assert (work / name).read_text() == bundle[key]
        assert (work / name).stat().st_mode & 0o777 == 0o600
    bad = prepare({"cert": bundle["cert"], "ca": bundle["ca"]}, "d2")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "roost host-prepare: error: bad host-prepare input: tls needs cert, key and ca (PEM)"
    ]
    assert not (work.parent / "d2").exists(), "a refused prepare wrote files"
