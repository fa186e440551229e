"""A roost tree torrent (BEP 47 pad files included) is a standard torrent.

A roost origin (`roost seed --tree`, serving pad ranges as zeros it never
stores) seeds the torrent roost makes for a directory release; aria2c and
libtorrent, real processes nobody here wrote, fetch it through `roost
tracker` and must end with the release's files, byte for byte. Checked by
SHA-256 of every non-empty regular file, pad files excluded (a client may or
may not write them to disk; BEP 47 lets it skip them).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from roost.core import bencode
from roost.core.metainfo import parse
from roost.deploy.treepack import build
from tests.interop.engine_helpers import TrackerProcess, payload_sha256s
from tests.interop.test_engine_interop import SIZE, Swarm, swarm  # noqa: F401 - the fixture
from tests.swarm.harness import make_tree

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def _publish_tree(world: Swarm) -> Path:
    source = make_tree(world.root / "src" / "release", SIZE, seed=11)
    (source / "small").mkdir()
    for i in range(40):  # packed back to back between the aligned files
        (source / "small" / f"f{i:02d}.txt").write_bytes(bytes([i]) * (100 + 37 * i))
    world.tracker = TrackerProcess(world.root / "tracker.log")
    secret = secrets.token_urlsafe(18)
    payload = build(source, "release", [world.tracker.announce_url(secret)])
    assert payload.padding > 0, "the test tree must have pad files"
    world.torrent = payload.torrent
    world.torrent_path.write_bytes(payload.torrent)
    world.info_hash = parse(payload.torrent).info_hash
    world.tracker.register(payload.torrent, secret, 2)
    files = bencode.decode(payload.torrent)[b"info"][b"files"]
    assert any(f.get(b"attr") == b"p" for f in files)
    return source


def _without_pads(directory: Path) -> dict[str, str]:
    return {k: v for k, v in payload_sha256s(directory).items() if not k.startswith(".pad")}


def _non_empty(source: Path) -> dict[str, str]:
    """The torrent holds the non-empty files; the manifest (not a torrent client's
    business) creates empty files, directories and symlinks."""
    return {k: v for k, v in payload_sha256s(source).items() if (source / k).stat().st_size}


def test_aria2c_fetches_a_roost_tree_torrent(swarm: Swarm) -> None:  # noqa: F811
    source = _publish_tree(swarm)
    swarm.roost_seed(source, "--tree")
    swarm.aria2c(swarm.root / "aria")
    swarm.wait("aria2c to complete (tracker: both peers done)", swarm.swarm_done)
    assert _without_pads(swarm.root / "aria" / "release") == _non_empty(source)
    swarm.assert_clean()


def test_libtorrent_fetches_a_roost_tree_torrent(swarm: Swarm) -> None:  # noqa: F811
    source = _publish_tree(swarm)
    swarm.roost_seed(source, "--tree")
    client = swarm.libtorrent(swarm.root / "lt")
    swarm.wait("libtorrent to complete", client.seeding)
    assert _without_pads(swarm.root / "lt" / "release") == _non_empty(source)
    swarm.wait("the tracker to count both peers done", swarm.swarm_done, 15)
    swarm.assert_clean()
