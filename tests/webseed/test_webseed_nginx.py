"""Web seeds (BEP 19) against a real nginx on loopback, with real roost processes.

(a) a fetch completes from a web seed alone, byte-exact (single file, and a tree
    torrent with BEP 47 pad files, which are never asked for);
(b) a web seed serving wrong bytes is dropped, the pieces come from a peer;
(c) a web seed answering 404 / 500 is dropped with its reason;
(d) an origin with a tenth of the hosts' rate plus a wide web seed: the hosts
    finish near their own bound, not the origin's;
(e) the origin dies at ~10 % and the web seed alone completes the fetch.

Times are printed against the bounds (run with -s to see them); the only
time assertion is a sanity factor that separates the two bounds of (d).
"""

from __future__ import annotations

import hashlib
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.commands.make import make_torrent
from roost.deploy import treepack
from tests.swarm.harness import Procs, RoostProc, make_tree
from tests.webseed.nginx import Nginx

MIB = 1024 * 1024
KIB = 1024
#: nginx's limit_rate on /slow/ (per request; it lets the first second's worth go at once)
SLOW_RATE = 256 * KIB


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    return root


@pytest.fixture
def nginx(tmp_path: Path, www: Path) -> Iterator[Nginx]:
    server = Nginx(www, tmp_path / "nginx", slow_rate=SLOW_RATE)
    try:
        yield server
    finally:
        server.close()


def random_file(path: Path, size: int, seed: int = 7) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_torrent(tmp_path: Path, src: Path, web_seeds: list[str], piece: int) -> Path:
    torrent = tmp_path / "payload.torrent"
    torrent.write_bytes(make_torrent(src, [], piece_length=piece, web_seeds=web_seeds))
    return torrent


def fetch(procs: Procs, torrent: Path, out: Path, name: str, *extra: str) -> RoostProc:
    return procs.start(
        ["fetch", str(torrent), "-d", str(out), "--no-tracker", "--timeout", "120", *extra], name
    )


def web_requests(nginx: Nginx) -> list[str]:
    return [line for line in nginx.requests() if '"GET ' in line]


# ---- (a) a web seed alone ----


def test_a_fetch_completes_from_a_web_seed_alone(tmp_path: Path, www: Path, nginx: Nginx,
                                                  procs: Procs) -> None:
    src = www / "payload.bin"
    random_file(src, 6 * MIB + 12345)
    torrent = write_torrent(tmp_path, src, [nginx.url()], 256 * KIB)  # a directory URL
    peer = fetch(procs, torrent, tmp_path / "out", "fetch", "--no-seed")
    assert peer.wait(90) == 0, "".join(peer.stderr)[-2000:]
    assert sha(tmp_path / "out" / "payload.bin") == sha(src)
    assert peer.named("web_seed_added") == [
        {"event": "web_seed_added", "t": peer.named("web_seed_added")[0]["t"],
         "url": nginx.url()}]
    assert not peer.named("web_seed_dropped") and not peer.named("hash_failed")
    assert peer.named("complete")[0]["from_web_seeds"] == src.stat().st_size
    requests = web_requests(nginx)
    assert requests and all('" 206 ' in line for line in requests), requests[:3]
    assert all("GET /payload.bin " in line for line in requests)


def test_a_tree_torrent_with_pad_files_from_a_web_seed_alone(
        tmp_path: Path, www: Path, nginx: Nginx, procs: Procs) -> None:
    src = make_tree(www / "rel1", 3 * MIB + 777)
    tree = treepack.build(src, "rel1")
    assert tree.padding > 0  # pad files sit between the files
    torrent = tmp_path / "tree.torrent"
    torrent.write_bytes(tree.torrent)  # no url-list: --web-seed on the command line
    peer = fetch(procs, torrent, tmp_path / "out", "fetch", "--no-seed",
                 "--web-seed", nginx.url())
    assert peer.wait(90) == 0, "".join(peer.stderr)[-2000:]
    for path in sorted(p for p in src.rglob("*") if p.is_file() and p.stat().st_size):
        rel = path.relative_to(www)
        assert sha(tmp_path / "out" / rel) == sha(path), rel
    requests = web_requests(nginx)
    assert requests and all('" 206 ' in line for line in requests), requests[:3]
    assert not [line for line in requests if ".pad" in line]  # pads are zeros, never asked for
    assert {line.split('"GET ')[1].split(" ")[0] for line in requests} == {
        "/rel1/big.bin", "/rel1/sub/mid.bin", "/rel1/sub/tail.bin"}


# ---- (b) wrong bytes, (c) HTTP errors: a peer fills in ----


def seed(procs: Procs, torrent: Path, directory: Path, rate: str) -> RoostProc:
    return procs.start(["seed", str(torrent), "-d", str(directory), "--no-tracker",
                        "--skip-check", "--upload-rate", rate], "seed")


def test_a_web_seed_serving_wrong_bytes_is_dropped_and_a_peer_serves(
        tmp_path: Path, www: Path, nginx: Nginx, procs: Procs) -> None:
    src = tmp_path / "origin" / "payload.bin"
    data = random_file(src, 16 * MIB)
    bad = bytearray(data)
    for at in range(1000, len(bad), 64 * KIB):  # one byte wrong in every piece
        bad[at] ^= 0xFF
    (www / "bad").mkdir()
    (www / "bad" / "payload.bin").write_bytes(bad)
    torrent = write_torrent(tmp_path, src, [nginx.url("bad/")], 64 * KIB)
    origin = seed(procs, torrent, src.parent, "4M")  # slow: the web seed answers first
    peer = fetch(procs, torrent, tmp_path / "out", "fetch", "--no-seed",
                 "--peer", f"127.0.0.1:{origin.port}")
    assert peer.wait(90) == 0, "".join(peer.stderr)[-2000:]
    assert sha(tmp_path / "out" / "payload.bin") == sha(src)
    (dropped,) = peer.named("web_seed_dropped")
    assert dropped["url"] == nginx.url("bad/")
    assert dropped["reason"].startswith("served piece ")
    assert dropped["reason"].endswith(" that failed its hash check")
    assert peer.named("hash_failed")
    asked = len(web_requests(nginx))
    # of 256 pieces: dropped at its first bad piece's verdict. The requests that get
    # out before that verdict depend on scheduling, not on a bound in the design
    # (47 of 64 in 1 of 10 runs on an idle machine, before and after session 8), so
    # the test asks for the first half, not the first 16
    assert 1 <= asked <= 128


@pytest.mark.parametrize(
    ("path", "reason"),
    [("missing/", "HTTP 404: Not Found"),
     ("broken/", "3 failures in a row, the last: HTTP 500: Internal Server Error")],
)
def test_a_web_seed_answering_an_http_error_is_dropped_with_its_reason(
        tmp_path: Path, www: Path, nginx: Nginx, procs: Procs, path: str, reason: str) -> None:
    src = tmp_path / "origin" / "payload.bin"
    random_file(src, 4 * MIB)
    torrent = write_torrent(tmp_path, src, [nginx.url(path)], 64 * KIB)
    origin = seed(procs, torrent, src.parent, "512K")  # 8 s: the back-off ends first
    peer = fetch(procs, torrent, tmp_path / "out", "fetch", "--no-seed",
                 "--peer", f"127.0.0.1:{origin.port}")
    assert peer.wait(90) == 0, "".join(peer.stderr)[-2000:]
    assert sha(tmp_path / "out" / "payload.bin") == sha(src)
    (dropped,) = peer.named("web_seed_dropped")
    assert dropped == {"event": "web_seed_dropped", "t": dropped["t"],
                       "url": nginx.url(path), "reason": reason}


# ---- (d) a narrow origin and a wide web seed; (e) the origin dies at 10 % ----


def wait_complete(peers: list[RoostProc], started: float, timeout: float) -> float:
    """Seconds from `started` until the last host said complete (its own clock)."""
    last = 0.0
    for peer in peers:
        event = peer.wait_event("complete", timeout)
        began = peer.named("started")[0]["t"]  # the host's clock: relative to its start
        last = max(last, peer.spawned_at - started + event["t"] - began)  # type: ignore[attr-defined]
    return last


def test_a_narrow_origin_and_a_wide_web_seed_finish_near_the_hosts_bound(
        tmp_path: Path, www: Path, nginx: Nginx, procs: Procs) -> None:
    size, hosts = 8 * MIB, 4
    host_rate = 2 * MIB  # each host's download cap (roost's own --download-rate)
    origin_rate = host_rate // 10  # the origin's uplink: a tenth (--upload-rate)
    src = www / "payload.bin"
    random_file(src, size)
    torrent = write_torrent(tmp_path, src, [nginx.url()], 256 * KIB)
    origin = seed(procs, torrent, www, str(origin_rate))
    origin.wait_event("started", 30)
    started = time.monotonic()
    peers = spawn_timed(tmp_path, procs, torrent, origin, hosts,
                        "--download-rate", str(host_rate))
    took = wait_complete(peers, started, 120)
    hosts_bound = size / host_rate
    burst_bound = (size - host_rate) / host_rate  # roost's cap lets 1 s worth go at once
    origin_bound = size / origin_rate
    print(f"\n(d) {hosts} hosts, {size // MIB} MiB: took {took:.1f} s; hosts' bound "
          f"{hosts_bound:.1f} s ({burst_bound:.1f} s less the cap's 1 s burst), origin's "
          f"bound {origin_bound:.1f} s")
    for i, peer in enumerate(peers):
        assert peer.wait(30) == 0, "".join(peer.stderr)[-2000:]
        assert sha(tmp_path / f"host{i}" / "payload.bin") == sha(src)
        assert not peer.named("web_seed_dropped")
    # a sanity factor, not a benchmark: half the origin's bound, five times the hosts'
    assert took < origin_bound / 2, f"{took:.1f} s: the origin's uplink bounded the fetch"


def spawn_timed(tmp_path: Path, procs: Procs, torrent: Path, origin: RoostProc, hosts: int,
                *extra: str) -> list[RoostProc]:
    peers: list[RoostProc] = []
    ports = [origin.port]
    for i in range(hosts):
        argv = [a for port in ports for a in ("--peer", f"127.0.0.1:{port}")]
        spawned = time.monotonic()
        peer = fetch(procs, torrent, tmp_path / f"host{i}", f"host{i}", "--linger", "3",
                     *extra, *argv)
        peer.spawned_at = spawned  # type: ignore[attr-defined]
        ports.append(peer.port)
        peers.append(peer)
    return peers


def test_the_origin_dies_at_ten_percent_and_the_web_seed_alone_completes(
        tmp_path: Path, www: Path, nginx: Nginx, procs: Procs) -> None:
    size, hosts = 24 * MIB, 3  # 10 % spans a few 0.5 s progress ticks
    origin_rate = 512 * KIB
    src = www / "payload.bin"
    random_file(src, size)
    # the web seed is the rate-limited /slow/ location; pieces are larger than
    # nginx's one-second allowance per request, so the limit holds
    torrent = write_torrent(tmp_path, src, [nginx.url("slow/")], 512 * KIB)
    origin = seed(procs, torrent, www, str(origin_rate))
    origin.wait_event("started", 30)
    started = time.monotonic()
    peers = spawn_timed(tmp_path, procs, torrent, origin, hosts)
    deadline = time.monotonic() + 60
    done_at_kill = 0
    while time.monotonic() < deadline:
        done = [max((e["bytes_done"] for e in p.named("progress")), default=0) for p in peers]
        if max(done) >= size // 10:
            origin.kill(signal.SIGKILL)
            origin.proc.wait(10)
            done_at_kill = max(done)
            break
        time.sleep(0.05)
    assert origin.proc.returncode is not None, "no host reached 10 % in 60 s"
    killed_at = time.monotonic() - started
    took = wait_complete(peers, started, 120)
    web_rate = 4 * SLOW_RATE  # per host: 4 connections at nginx's limit_rate
    print(f"\n(e) origin killed at {killed_at:.1f} s with {100 * done_at_kill / size:.0f} % "
          f"on the leading host; all {hosts} hosts complete at {took:.1f} s; bounds: the "
          f"web seed shared by the swarm {size / (hosts * web_rate):.1f} s, the web seed "
          f"alone without sharing {size / web_rate:.1f} s, the origin alone "
          f"{size / origin_rate:.1f} s")
    assert done_at_kill < size // 2, "the origin died too late to matter"
    for i, peer in enumerate(peers):
        assert peer.wait(30) == 0, "".join(peer.stderr)[-2000:]
        assert sha(tmp_path / f"host{i}" / "payload.bin") == sha(src)
        assert not peer.named("web_seed_dropped")
