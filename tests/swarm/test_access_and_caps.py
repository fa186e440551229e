"""Who may join a swarm (--allow) and how fast it may go (--upload-rate,
--download-rate), with real processes on loopback addresses 127.0.0.x."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from roost.commands.make import make_torrent
from roost.core.metainfo import parse as parse_metainfo
from roost.core.wire import ExtendedHandshake, PeerConnection, Piece, Unchoke
from tests.swarm.harness import Procs, make_tree, tree_digest

MIB = 1024 * 1024


def payload(tmp_path: Path, size: int) -> tuple[Path, Path]:
    src = make_tree(tmp_path / "origin" / "release", size)
    torrent = tmp_path / "release.torrent"
    torrent.write_bytes(make_torrent(src, [], piece_length=64 * 1024))
    return src, torrent


def seed(procs: Procs, src: Path, torrent: Path, *extra: str, bind: str = "127.0.0.1") -> int:
    argv = ["seed", str(torrent), "-d", str(src.parent), "--no-tracker", "--skip-check", *extra]
    return procs.start(argv, "origin", bind).port


def fetch_argv(torrent: Path, dest: Path, port: int, *extra: str) -> list[str]:
    return [
        "fetch", str(torrent), "-d", str(dest), "--no-tracker", "--no-seed",
        "--peer", f"127.0.0.1:{port}", *extra,
    ]  # fmt: skip


def test_allowlist_refuses_outsiders_and_serves_members(tmp_path: Path, procs: Procs) -> None:
    src, torrent = payload(tmp_path, 2 * MIB)
    port = seed(procs, src, torrent, "--allow", "127.0.0.2/32")
    origin = procs.all[0]
    outsider = procs.start(
        fetch_argv(torrent, tmp_path / "outsider", port, "--timeout", "6"), "outsider", "127.0.0.3"
    )
    assert outsider.wait(60) != 0, "an address outside --allow got the payload"
    assert not any(e.get("bytes_done", 0) for e in outsider.named("progress"))
    # refusals are counted and reported once per interval, not logged one by one
    why = "address not allowed"
    refused = [e for e in origin.named("connections_refused") if why in e["counts"]]
    assert refused and all(e["last"][why].startswith("127.0.0.3:") for e in refused)
    member = procs.start(fetch_argv(torrent, tmp_path / "member", port), "member", "127.0.0.2")
    assert member.wait(60) == 0, "".join(member.stderr)[-2000:]
    assert tree_digest(tmp_path / "member" / "release") == tree_digest(src)


def test_a_fetch_does_not_connect_outside_its_allowlist(tmp_path: Path, procs: Procs) -> None:
    src, torrent = payload(tmp_path, 1 * MIB)
    port = seed(procs, src, torrent)
    lonely = procs.start(
        fetch_argv(torrent, tmp_path / "lonely", port, "--allow", "10.0.0.0/8", "--timeout", "4"),
        "lonely",
    )
    assert lonely.wait(60) != 0
    # it never dialled the origin: neither side ever counted a connected peer
    for proc in procs.all:
        progress = proc.named("progress")
        assert progress and all(e["peers"] == 0 for e in progress), proc.name
    assert not any(e.get("bytes_done", 0) for e in lonely.named("progress"))


def timed_fetch(procs: Procs, torrent: Path, dest: Path, port: int, *extra: str) -> float:
    start = time.monotonic()
    proc = procs.start(fetch_argv(torrent, dest, port, *extra), dest.name)
    assert proc.wait(120) == 0, "".join(proc.stderr)[-2000:]
    return time.monotonic() - start


def test_download_cap_is_respected(tmp_path: Path, procs: Procs) -> None:
    # a cap is a lower bound on time (a slow machine only makes it slower);
    # the token bucket may burst up to one second's worth at the start
    size, cap = 6 * MIB, 1 * MIB
    src, torrent = payload(tmp_path, size)
    port = seed(procs, src, torrent)
    elapsed = timed_fetch(procs, torrent, tmp_path / "capped", port, "--download-rate", "1M")
    assert elapsed >= (size - cap) / cap * 0.9, f"{size} bytes at 1 MiB/s took {elapsed:.1f} s"
    assert tree_digest(tmp_path / "capped" / "release") == tree_digest(src)


def test_upload_cap_is_respected(tmp_path: Path, procs: Procs) -> None:
    size, cap = 6 * MIB, 1 * MIB
    src, torrent = payload(tmp_path, size)
    port = seed(procs, src, torrent, "--upload-rate", "1M")
    elapsed = timed_fetch(procs, torrent, tmp_path / "slow", port)
    assert elapsed >= (size - cap) / cap * 0.9, f"{size} bytes at 1 MiB/s took {elapsed:.1f} s"
    assert tree_digest(tmp_path / "slow" / "release") == tree_digest(src)


def test_a_big_request_in_the_same_read_as_the_extended_handshake_is_served(
    tmp_path: Path, procs: Procs
) -> None:
    # a roost peer may ask for a big block as soon as it has read ours, and
    # its request can then share a TCP read with its own extended handshake;
    # the seeder used to check that request against 16 KiB and hang up
    src, torrent = payload(tmp_path, 1 * MIB)
    port = seed(procs, src, torrent)
    meta = parse_metainfo(torrent.read_bytes())
    wire = PeerConnection(meta.info_hash, b"-XX0001-" + bytes(12), meta.info.num_pieces,
                          max_block=256 * 1024, piece_length=64 * 1024,
                          total_length=meta.info.total_length)
    events: list[object] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(wire.handshake_bytes())

        def read_until(want: type, limit: float = 10.0) -> object:
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                for event in events:
                    if isinstance(event, want):
                        events.remove(event)
                        return event
                data = conn.recv(1 << 20)
                assert data, f"the seeder hung up; events so far: {events}"
                events.extend(wire.receive(data))
            raise AssertionError(f"no {want.__name__} within {limit} s: {events}")

        theirs = read_until(ExtendedHandshake)
        assert isinstance(theirs, ExtendedHandshake) and theirs.data.get(b"roost_block")
        conn.sendall(  # one send: one read on the other side
            wire.send_extended_handshake({b"m": {}, b"roost_block": 64 * 1024})
            + wire.send_interested()
            + wire.send_request(0, 0, 64 * 1024)
        )
        read_until(Unchoke)
        conn.sendall(wire.send_request(1, 0, 64 * 1024))
        got = read_until(Piece)
        assert isinstance(got, Piece) and len(got.block) == 64 * 1024
    refused = [e for e in procs.all[0].named("peer_closed") if "outside" in e["reason"]]
    assert not refused, refused
