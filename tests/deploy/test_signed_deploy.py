"""Push mode with --require-signature: each host checks the manifest's OpenSSH
signature with its own ssh-keygen before anything is fetched (real ssh-keygen,
the demo's local transport, real `roost fetch` processes)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roost.commands.demo import local_connector
from roost.deploy.config import DeployConfig
from roost.deploy.host import prepare_input
from roost.deploy.pack import make_metainfo, pack
from roost.deploy.run import Deploy, new_deploy, run_deploy
from roost.errors import UsageError
from roost.target.signing import canonical, sign_bytes
from tests.deploy.test_local_deploy import current, hosts
from tests.deploy.trees import make_sample_tree, tree_signature
from tests.pull.keys import allowed_signers, make_key

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    good = make_key(tmp_path, "ci")
    other = make_key(tmp_path, "stranger")
    return good, other, allowed_signers(tmp_path / "allowed_signers", ("ci@example", good))


def deploy(base: Path, src: Path, tag: str, **settings: object) -> Deploy:
    config = DeployConfig(dest="/unused", python=sys.executable, port_range="0", timeout=120,
                          **settings)  # type: ignore[arg-type]
    d = new_deploy(config, hosts(base, 2), tag)
    asyncio.run(run_deploy(d, src, local_connector(base), listen="127.0.0.1"))
    return d


def untouched(base: Path, tag: str) -> None:
    """Nothing fetched or staged for `tag`, no deploy directory left behind."""
    for i in range(2):
        app = base / f"p{i}" / "app"
        assert not (app / "releases" / tag).exists()
        assert not list((app / "releases").glob(f".{tag}*"))
        assert not list((app / ".roost" / "deploys").iterdir())


@pytest.mark.slow
def test_signed_deploy_passes_unsigned_and_wrong_key_are_refused(
    tmp_path: Path, keys: tuple[Path, Path, Path]
) -> None:
    good, other, signers = keys
    src = make_sample_tree(tmp_path / "src", big=100_000)
    base = tmp_path / "hosts"
    required = {"require_signature": True, "allowed_signers": str(signers)}
    d = deploy(base, src, "r1", sign_key=str(good), **required)
    assert d.exit_code == 0, [h.reason for h in d.hosts]
    assert [current(base, i) for i in range(2)] == ["releases/r1", "releases/r1"]
    assert tree_signature(base / "p1" / "app" / "current") == tree_signature(src)

    (src / "new.txt").write_text("v2\n")
    for tag, extra, why in (("r2", {}, "signature refused: unsigned"),
                            ("r3", {"sign_key": str(other)},
                             "signature refused: signed by a key that is not in the "
                             "allowed-signers file")):
        d = deploy(base, src, tag, **required, **extra)
        assert d.exit_code == 3, d.message
        assert [(h.status, h.kind) for h in d.hosts] == [("failed", "signature")] * 2
        assert all(h.reason.startswith(why) and "\n" not in h.reason for h in d.hosts), [
            h.reason for h in d.hosts]
        assert [current(base, i) for i in range(2)] == ["releases/r1", "releases/r1"]
        untouched(base, tag)


def test_require_signature_needs_an_absolute_allowed_signers_path(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", big=1000)
    with pytest.raises(UsageError, match="needs --allowed-signers"):
        deploy(tmp_path / "hosts", src, "r1", require_signature=True)
    with pytest.raises(UsageError, match="needs --allowed-signers"):
        deploy(tmp_path / "hosts", src, "r1", require_signature=True,
               allowed_signers="relative/signers")
    assert not (tmp_path / "hosts").exists()  # refused before any host was touched


@pytest.mark.parametrize("fmt", ["tree", "tar"])
def test_host_prepare_refuses_a_changed_manifest(
    tmp_path: Path, keys: tuple[Path, Path, Path], fmt: str
) -> None:
    good, _, signers = keys
    src = make_sample_tree(tmp_path / "src", big=10_000)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    packed = pack(src, scratch, "v1", fmt=fmt)
    torrent = packed.torrent or make_metainfo(packed.payload)
    signature = sign_bytes(good, canonical(packed.manifest.to_dict()))

    def prepare(blob: bytes, dest: Path) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "roost", "host-prepare", "--dest", str(dest),
             "--deploy-id", "d1", "--json", "--allowed-signers", str(signers)],
            input=blob, capture_output=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)})

    done = prepare(prepare_input(packed.manifest, torrent, None, signature), tmp_path / "ok")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["signed_by"] == "ci@example"
    changed = packed.manifest.to_dict()
    changed["tag"] = "v2"  # a valid manifest, just not the one signed
    request = {"manifest": changed, "torrent": "", "signature": signature}
    refused = prepare(json.dumps(request).encode(), tmp_path / "bad")
    assert refused.returncode != 0
    assert b"signature refused: bad signature" in refused.stderr
    assert not (tmp_path / "bad").exists()
