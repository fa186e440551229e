"""A real swarm on loopback: one origin and 8 roost peers, bad peers, resume."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import time
from pathlib import Path

from roost.commands.make import make_torrent
from roost.core.metainfo import parse as parse_metainfo
from tests.swarm.harness import Procs, RoostProc, make_tree, tree_digest

MIB = 1024 * 1024


def payload(tmp_path: Path, size: int, piece: int = 64 * 1024) -> tuple[Path, Path]:
    src = make_tree(tmp_path / "origin" / "release", size)
    torrent = tmp_path / "release.torrent"
    torrent.write_bytes(make_torrent(src, [], piece_length=piece))
    return src, torrent


def test_origin_and_eight_peers_complete_identically(tmp_path: Path, procs: Procs) -> None:
    src, torrent = payload(tmp_path, 24 * MIB)
    upload_log = tmp_path / "origin-uploads.jsonl"
    origin = procs.start(
        [
            "seed",
            str(torrent),
            "-d",
            str(src.parent),
            "--no-tracker",
            "--skip-check",
            "--super-seed",
            "--upload-log",
            str(upload_log),
        ],
        "origin",
    )
    ports = [origin.port]
    peers = []
    for i in range(8):
        argv = [
            "fetch",
            str(torrent),
            "-d",
            str(tmp_path / f"peer{i}"),
            "--no-tracker",
            "--linger",
            "3",
            "--timeout",
            "120",
            "--upload-log",
            str(tmp_path / f"peer{i}-uploads.jsonl"),
        ]
        for port in ports:
            argv += ["--peer", f"127.0.0.1:{port}"]
        peer = procs.start(argv, f"peer{i}")
        ports.append(peer.port)
        peers.append(peer)
    want = tree_digest(src)
    for peer in peers:
        assert peer.wait(150) == 0, "".join(peer.stderr)[-2000:]
        assert tree_digest(tmp_path / peer.name / "release") == want
    # the swarm did the work, not just the origin: peers uploaded to each other
    # (counted from each peer's upload log: the 0.5 s progress samples missed a short burst)
    logs = [tmp_path / f"peer{i}-uploads.jsonl" for i in range(8)]
    uploaded_by_peers = sum(1 for log in logs if log.exists() and log.read_text().strip())
    assert uploaded_by_peers >= 4
    # BEP 16 on the real origin: no piece left it twice before every piece left once
    origin.stop()
    log = [json.loads(line)["piece"] for line in upload_log.read_text().splitlines()]
    pieces = parse_metainfo(torrent.read_bytes()).info.num_pieces
    assert set(log) == set(range(pieces))
    seen: set[int] = set()
    for index in log:
        if len(seen) == pieces:
            break
        assert index not in seen, f"piece {index} left the origin twice before all left once"
        seen.add(index)


def test_corrupt_peer_is_banned_and_everyone_completes(tmp_path: Path, procs: Procs) -> None:
    src, torrent = payload(tmp_path, 8 * MIB, piece=32 * 1024)
    bad_root = tmp_path / "bad"
    shutil.copytree(src.parent, bad_root)
    with (bad_root / "release" / "big.bin").open("r+b") as f:
        for offset in range(0, 4 * MIB, 64 * 1024):  # spoil many pieces
            f.seek(offset + 100)
            f.write(b"\x00" * 64)
    origin = procs.start(
        [
            "seed",
            str(torrent),
            "-d",
            str(src.parent),
            "--no-tracker",
            "--skip-check",
            "--upload-rate",
            "2M",
        ],
        "origin",
    )
    liar = procs.start(
        ["seed", str(torrent), "-d", str(bad_root), "--no-tracker", "--skip-check"], "liar"
    )
    fetchers = []
    for i in range(3):
        fetchers.append(
            procs.start(
                [
                    "fetch",
                    str(torrent),
                    "-d",
                    str(tmp_path / f"f{i}"),
                    "--no-tracker",
                    "--no-seed",
                    "--timeout",
                    "90",
                    "--peer",
                    f"127.0.0.1:{liar.port}",
                    "--peer",
                    f"127.0.0.1:{origin.port}",
                ],
                f"f{i}",
            )
        )
    want = tree_digest(src)
    for fetcher in fetchers:
        assert fetcher.wait(120) == 0, "".join(fetcher.stderr)[-2000:]
        assert tree_digest(tmp_path / fetcher.name / "release") == want
        bans = fetcher.named("peer_banned")
        assert bans, f"{fetcher.name} never banned the corrupt peer"
        # the liar (and only the liar) was banned: fetchers reach it on its listen port
        assert any(b["peer"].endswith(f":{liar.port}") for b in bans), bans
        assert not any(b["peer"].endswith(f":{origin.port}") for b in bans), bans
        assert fetcher.named("hash_failed")


def test_killed_fetch_resumes_without_refetching(tmp_path: Path, procs: Procs) -> None:
    size = 16 * MIB
    src, torrent = payload(tmp_path, size)
    origin = procs.start(
        [
            "seed",
            str(torrent),
            "-d",
            str(src.parent),
            "--no-tracker",
            "--skip-check",
            "--upload-rate",
            "4M",
        ],
        "origin",
    )
    dest = tmp_path / "resumer"
    argv = [
        "fetch",
        str(torrent),
        "-d",
        str(dest),
        "--no-tracker",
        "--no-seed",
        "--timeout",
        "120",
        "--peer",
        f"127.0.0.1:{origin.port}",
    ]
    first = procs.start(argv, "first")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = [e["bytes_done"] for e in first.named("progress")]
        if done and done[-1] >= size // 2:
            break
        time.sleep(0.1)
    first.kill(signal.SIGKILL)
    first.wait(10)
    had = first.named("progress")[-1]["bytes_done"]
    assert 0 < had < size
    second = procs.start(argv, "second")
    assert second.wait(120) == 0, "".join(second.stderr)[-2000:]
    checked = second.wait_event("checked")
    # everything verified before the kill is kept (pieces, so allow one piece per worker)
    assert checked["have"] * 64 * 1024 >= had - 4 * 64 * 1024
    complete = second.wait_event("complete")
    assert complete["downloaded"] <= size - checked["have"] * 64 * 1024 + 8 * 64 * 1024
    assert tree_digest(dest / "release") == tree_digest(src)


def free_port_on(addresses: list[str]) -> int:
    """A port that is free on every one of these loopback addresses."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for address in addresses[1:]:
                with socket.socket() as other:
                    other.bind((address, port))
        except OSError:
            continue
        return port
    raise AssertionError("no port free on all of " + ", ".join(addresses))


MESH = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def fetch_mesh(
    tmp_path: Path, procs: Procs, size: int, *extra: str
) -> tuple[Path, list[RoostProc]]:
    """An origin and three fetchers, each told about all the others (as a
    tracker would tell them), all listening on one port; waits until all exit."""
    src, torrent = payload(tmp_path, size)
    origin_port = procs.start(
        ["seed", str(torrent), "-d", str(src.parent), "--no-tracker", "--skip-check"], "origin"
    ).port
    port = free_port_on(MESH)
    fetchers = []
    for address in MESH:
        others = [f"{a}:{port}" for a in MESH if a != address]
        argv = [
            "fetch", str(torrent), "-d", str(tmp_path / address), "--no-tracker", *extra,
            "--peer", f"127.0.0.1:{origin_port}",
            *(arg for other in others for arg in ("--peer", other)),
        ]  # fmt: skip
        fetchers.append(procs.start(argv, address, address, port))
    for fetcher in fetchers:
        assert fetcher.wait(120) == 0, "".join(fetcher.stderr)[-2000:]
    return src, fetchers


def test_peers_that_know_each_other_do_not_keep_redialling(tmp_path: Path, procs: Procs) -> None:
    # once two fetchers are connected (whoever dialled), neither may dial the
    # other again only to have the duplicate closed (that churn cost the lab's
    # 32-host runs a redial per incoming peer every 5 s)
    src, fetchers = fetch_mesh(tmp_path, procs, 2 * MIB, "--linger", "3", "--download-rate", "150K")
    for fetcher in fetchers:
        assert tree_digest(tmp_path / fetcher.name / "release") == tree_digest(src)
    churn = [
        e
        for fetcher in fetchers
        for e in fetcher.named("peer_closed")
        if e["reason"] in ("duplicate, banned or self connection", "replaced by a newer connection")
    ]
    # two peers dialling each other at the same moment may each close one
    # duplicate: at most two closes per pair, whatever the run's length
    assert len(churn) <= 2 * 3, churn


def test_lingering_seeds_do_not_keep_reconnecting_to_each_other(
    tmp_path: Path, procs: Procs
) -> None:
    # once complete, two seeds have nothing to trade; a fleet lingering to
    # serve its laggards used to redial every fellow seed every 5 s only to
    # hang up again ("both seeds"), spending CPU the laggards needed
    _, fetchers = fetch_mesh(tmp_path, procs, 1 * MIB, "--linger", "16")
    for fetcher in fetchers:
        closes = [e for e in fetcher.named("peer_closed") if e["reason"] == "both seeds"]
        # at most one close per fellow seed for each side's dial (3 + 2 here),
        # however long they linger; the redial loop made ~3 per 16 s per pair
        assert len(closes) <= 5, (fetcher.name, closes)
