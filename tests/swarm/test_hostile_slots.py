"""Idle and hostile connections cannot lock a seeder out (roost.admission).

Real processes on loopback; the attacks are bounded in count and time."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from roost.core.metainfo import parse as parse_metainfo
from tests.swarm.harness import Procs, tree_digest
from tests.swarm.test_access_and_caps import MIB, fetch_argv, payload, seed

ROOT = Path(__file__).resolve().parents[2]


def test_sixty_idle_sockets_do_not_lock_out_a_fetch(tmp_path: Path, procs: Procs) -> None:
    """The reproduction of the slot exhaustion: 60 sockets that never handshake,
    from the fetcher's own address, then a fetch that must not wait for them."""
    src, torrent = payload(tmp_path, 4 * MIB)
    port = seed(procs, src, torrent)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(60)]
    try:
        time.sleep(1.0)
        # under the old rules every slot stayed taken for 10 s (the handshake timeout)
        fetch = procs.start(fetch_argv(torrent, tmp_path / "new", port, "--timeout", "7"), "new")
        assert fetch.wait(60) == 0, "".join(fetch.stderr)[-2000:]
    finally:
        for sock in idle:
            sock.close()
    assert tree_digest(tmp_path / "new" / "release") == tree_digest(src)
    origin = procs.all[0]
    origin.stop()
    refused = origin.named("connections_refused")
    assert sum(e["counts"].get("per-address cap, oldest dropped", 0) for e in refused) >= 50
    # counted, not logged one by one
    assert not [e for e in origin.named("peer_closed") if e["client"] == "?"]


def test_handshaken_silent_peers_are_evicted_for_a_fetch(tmp_path: Path, procs: Procs) -> None:
    """60 peers that complete the handshake and then say nothing fill the table;
    a newcomer that may trade evicts one of them instead of being refused."""
    src, torrent = payload(tmp_path, 4 * MIB)
    port = seed(procs, src, torrent)
    info_hash = parse_metainfo(torrent.read_bytes()).info_hash
    silent = []
    try:
        for n in range(60):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                            source_address=(f"127.0.0.{2 + n % 8}", 0))  # fmt: skip
            sock.sendall(b"\x13BitTorrent protocol" + bytes(8) + info_hash
                         + b"-XX0001-" + n.to_bytes(12, "big"))  # fmt: skip
            silent.append(sock)
            time.sleep(0.02)  # let the seeder take them one at a time
        time.sleep(1.0)
        # under the old rules they held every slot for 180 s (the idle timeout)
        fetch = procs.start(fetch_argv(torrent, tmp_path / "new", port, "--timeout", "10"), "new")
        assert fetch.wait(60) == 0, "".join(fetch.stderr)[-2000:]
    finally:
        for sock in silent:
            sock.close()
    assert tree_digest(tmp_path / "new" / "release") == tree_digest(src)
    evicted = [e for e in procs.all[0].named("peer_closed")
               if e["reason"] == "evicted for a peer that may trade"]  # fmt: skip
    assert evicted and all(e["client"] == "XX0001" for e in evicted), evicted


def test_a_seeder_under_1000_hostile_connections_serves_a_fetch(
    tmp_path: Path, procs: Procs
) -> None:
    src, torrent = payload(tmp_path, 16 * MIB)
    port = seed(procs, src, torrent)
    info_hash = parse_metainfo(torrent.read_bytes()).info_hash.hex()
    attacker = subprocess.Popen(
        [sys.executable, "-m", "bench.hostile", "--target", f"127.0.0.1:{port}",
         "--info-hash", info_hash, "--count", "1000", "--seconds", "25"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(4.0)  # every hostile connection opened, many already dropped and back
        fetch = procs.start(fetch_argv(torrent, tmp_path / "new", port, "--timeout", "20"), "new")
        assert fetch.wait(60) == 0, "".join(fetch.stderr)[-2000:]
        assert attacker.poll() is None, "the attack ended before the fetch did"
    finally:
        attacker.terminate()  # it prints its counts and exits
        out, err = attacker.communicate(timeout=60)
    tally = json.loads(out)
    assert tally["opened"] >= 1000 and tally["failed"] == 0, (tally, err[-2000:])
    assert tree_digest(tmp_path / "new" / "release") == tree_digest(src)
    origin = procs.all[0]
    origin.stop()
    counts: dict[str, int] = {}
    for event in origin.named("connections_refused"):
        for reason, n in event["counts"].items():
            counts[reason] = counts.get(reason, 0) + n
    assert counts.get("per-address cap, oldest dropped", 0) >= 900, counts
    assert "Traceback" not in "".join(origin.stderr)
