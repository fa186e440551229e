"""`roost seed --super-seed` chooses the mode from the swarm size it is told."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.core.offers import SUPER_SEED_MIN_PEERS, super_seed_pays
from tests.swarm.harness import Procs, tree_digest
from tests.swarm.test_local_swarm import MIB, payload


def test_super_seeding_pays_from_the_measured_swarm_size() -> None:
    assert super_seed_pays(None)  # unknown: as asked
    assert not super_seed_pays(2)
    assert not super_seed_pays(SUPER_SEED_MIN_PEERS - 1)
    assert super_seed_pays(SUPER_SEED_MIN_PEERS)


@pytest.mark.parametrize(("hint", "plain"), [(["--swarm-size", "2"], True),
                                             (["--expected-peers", "3"], True),
                                             (["--swarm-size", "4"], False)])
def test_a_small_swarm_gets_a_plain_origin(
    tmp_path: Path, procs: Procs, hint: list[str], plain: bool
) -> None:
    src, torrent = payload(tmp_path, 2 * MIB)
    origin = procs.start(["seed", str(torrent), "-d", str(src.parent), "--no-tracker",
                          "--skip-check", "--super-seed", *hint], "origin")
    peer = procs.start(["fetch", str(torrent), "-d", str(tmp_path / "peer"), "--no-tracker",
                        "--no-seed", "--timeout", "60", "--peer", f"127.0.0.1:{origin.port}"],
                       "peer")
    assert peer.wait(90) == 0, "".join(peer.stderr)[-2000:]
    assert tree_digest(tmp_path / "peer" / "release") == tree_digest(src)
    off = origin.named("super_seed_off")
    if plain:
        assert len(off) == 1 and off[0]["swarm"] == int(hint[1]), origin.events[:5]
    else:
        assert off == []
