"""Peer TLS: real `roost seed` / `roost fetch` processes on loopback.

A per-deploy CA (roost.deploy.pki, as `roost deploy --peer-tls` makes it)
signs the seed's and the fetch's certificates. Checked:
  * a TLS fetch gets a byte-identical copy from a TLS seed;
  * a client with no certificate, one with a certificate from a foreign CA,
    and a plain BitTorrent handshake are refused before any BitTorrent byte
    (not even the info-hash) comes back, and the seed reports each refusal
    (`tls_refused`); a control client signed by the deploy CA gets the seed's
    handshake on the same port;
  * a TLS fetch holding a foreign CA's certificate never gets the payload;
  * a connection that never finishes the TLS handshake is dropped;
  * the three flags go together (one-line usage error otherwise).
Every process is ended by PID at teardown.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from roost.commands.make import make_torrent
from roost.core.metainfo import parse
from roost.deploy.pki import Bundle, DeployCA
from roost.engine.session import HANDSHAKE_TIMEOUT
from tests.fuzz.targets import handshake
from tests.swarm.harness import Procs, RoostProc, make_tree, tree_digest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Swarm:
    procs: Procs
    tmp: Path
    src: Path
    torrent: Path
    info_hash: bytes
    ours: tuple[Path, Path, Path]  # a second peer of the deploy (cert, key, ca)
    foreign: tuple[Path, Path, Path]  # signed by another CA
    seed: RoostProc


def tls_args(files: tuple[Path, Path, Path]) -> list[str]:
    cert, key, ca = files
    return ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca)]


def write(bundle: Bundle, directory: Path) -> tuple[Path, Path, Path]:
    directory.mkdir()
    return bundle.write(directory)


@pytest.fixture(params=["uvloop", "asyncio"])
def swarm(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Swarm]:
    """Both event loops: uvloop where installed, plain asyncio as on a bare host (a
    shadowing `uvloop` module that fails to import, found first through PYTHONPATH)."""
    if request.param == "asyncio":
        shim = tmp_path / "no-uvloop"
        shim.mkdir()
        (shim / "uvloop.py").write_text("raise ImportError('disabled by the test')\n")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(shim), str(REPO)]))
    else:
        pytest.importorskip("uvloop")
    src = make_tree(tmp_path / "origin" / "release", 3 * 1024 * 1024 + 12345)
    torrent = tmp_path / "release.torrent"
    torrent.write_bytes(make_torrent(src, [], piece_length=256 * 1024))
    ca = DeployCA("test")
    seed_files = write(ca.issue("origin"), tmp_path / "seed-tls")
    ours = write(ca.issue("host1"), tmp_path / "host1-tls")
    foreign = write(DeployCA("someone else").issue("host1"), tmp_path / "foreign-tls")
    procs = Procs()
    try:
        seed = procs.start(
            ["seed", str(torrent), "-d", str(src.parent), "--no-tracker", "--skip-check",
             *tls_args(seed_files)],
            "seed",
        )
        seed.wait_event("started", 30)
        maps = Path(f"/proc/{seed.proc.pid}/maps").read_text()
        assert ("uvloop" in maps) == (request.param == "uvloop"), "not on the intended loop"
        yield Swarm(procs, tmp_path, src, torrent, parse(torrent.read_bytes()).info_hash,
                    ours, foreign, seed)
    finally:
        procs.close()


def client_context(files: tuple[Path, Path, Path] | None, *, trust: Path | None) -> ssl.SSLContext:
    """A stdlib TLS client: with `files` it shows that certificate; `trust` None = no
    server check (so that only the seed's own check is under test)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if trust is None:
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=trust)
    if files is not None:
        context.load_cert_chain(files[0], files[1])
    return context


def tls_exchange(port: int, context: ssl.SSLContext, data: bytes) -> bytes:
    """Handshake, send `data`, read until close, error or 10 s; what came back."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw) as sock:
                sock.sendall(data)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and len(got) < 1 << 20:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                    if len(got) >= 68:
                        break  # the BitTorrent handshake is all we look for
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError, TimeoutError):
            pass  # refused: TLS 1.3 clients learn it only at their first read
    return got


def plain_exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    """Send plain bytes; read until close or 15 s. (bytes, closed)."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        if data:
            sock.sendall(data)
        try:
            while len(got) < 1 << 20:
                chunk = sock.recv(65536)
                if not chunk:
                    return got, True
                got += chunk
        except ConnectionResetError:
            return got, True
        except TimeoutError:
            return got, False
    return got, False


def refusals(proc: RoostProc, count: int, timeout: float = 10) -> list[dict[str, object]]:
    """Wait until `proc` reported at least `count` refused handshakes (they trail the close)."""
    deadline = time.monotonic() + timeout
    while len(proc.named("tls_refused")) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc.named("tls_refused")


def test_tls_fetch_gets_a_byte_identical_copy(swarm: Swarm) -> None:
    fetch = swarm.procs.start(
        ["fetch", str(swarm.torrent), "-d", str(swarm.tmp / "got"), "--no-tracker",
         "--peer", f"127.0.0.1:{swarm.seed.port}", "--no-seed", *tls_args(swarm.ours)],
        "fetch",
    )
    assert fetch.wait(60) == 0, "".join(fetch.stderr)
    assert tree_digest(swarm.tmp / "got" / "release") == tree_digest(swarm.src)
    assert not swarm.seed.named("tls_refused") and not fetch.named("tls_refused")


def test_client_signed_by_the_deploy_ca_gets_the_handshake(swarm: Swarm) -> None:
    """Control for the refusals below: same port, same code path, a good certificate."""
    got = tls_exchange(swarm.seed.port, client_context(swarm.ours, trust=swarm.ours[2]),
                       handshake(swarm.info_hash))
    assert got[:20] == b"\x13BitTorrent protocol" and got[28:48] == swarm.info_hash


def test_client_without_a_certificate_is_refused(swarm: Swarm) -> None:
    got = tls_exchange(swarm.seed.port, client_context(None, trust=swarm.ours[2]),
                       handshake(swarm.info_hash))
    assert got == b"", "a client without a certificate got data"
    events = refusals(swarm.seed, 1)
    assert len(events) == 1 and events[0]["side"] == "incoming", events
    assert "certificate" in str(events[0]["reason"]).lower(), events


def test_client_with_a_foreign_ca_certificate_is_refused(swarm: Swarm) -> None:
    got = tls_exchange(swarm.seed.port, client_context(swarm.foreign, trust=None),
                       handshake(swarm.info_hash))
    assert got == b"", "a client from another CA got data"
    events = refusals(swarm.seed, 1)
    assert len(events) == 1 and events[0]["side"] == "incoming", events
    assert "certificate" in str(events[0]["reason"]).lower(), events


def test_plain_bittorrent_handshake_gets_nothing(swarm: Swarm) -> None:
    got, closed = plain_exchange(swarm.seed.port, handshake(swarm.info_hash))
    assert closed, "the TLS seed kept a plain connection open"
    assert b"BitTorrent protocol" not in got and swarm.info_hash not in got
    assert len(got) <= 7, got  # at most one TLS alert record, never BitTorrent data
    assert len(refusals(swarm.seed, 1)) == 1


def test_tls_fetch_from_a_foreign_ca_never_gets_the_payload(swarm: Swarm) -> None:
    fetch = swarm.procs.start(
        ["fetch", str(swarm.torrent), "-d", str(swarm.tmp / "got"), "--no-tracker",
         "--peer", f"127.0.0.1:{swarm.seed.port}", "--no-seed", "--timeout", "4",
         *tls_args(swarm.foreign)],
        "fetch",
    )
    assert fetch.wait(60) == 3  # timed out incomplete
    assert not fetch.named("complete")
    assert fetch.named("tls_refused"), "the fetch accepted a seed from another CA"
    event = fetch.named("tls_refused")[0]
    assert event["side"] == "outgoing" and "certificate" in str(event["reason"]).lower(), event
    got = swarm.tmp / "got" / "release" / "big.bin"
    assert not got.exists() or got.read_bytes().count(0) == got.stat().st_size


def test_a_stalled_tls_handshake_is_dropped(swarm: Swarm) -> None:
    """The handshake deadline still applies under TLS: a silent client is closed."""
    started = time.monotonic()
    _, closed = plain_exchange(swarm.seed.port, b"")
    assert closed and time.monotonic() - started < HANDSHAKE_TIMEOUT + 4


def small_torrent(tmp_path: Path) -> Path:
    src = make_tree(tmp_path / "r", 1000)
    torrent = tmp_path / "r.torrent"
    torrent.write_bytes(make_torrent(src, [], piece_length=16 * 1024))
    return torrent


def test_tls_flags_go_together(tmp_path: Path) -> None:
    torrent = small_torrent(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "roost", "seed", str(torrent), "-d", str(tmp_path),
         "--tls-cert", "c"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "roost seed: error: --tls-cert, --tls-key and --tls-ca go together "
        "(missing --tls-key, --tls-ca)"
    ]


def test_unreadable_tls_file_is_one_sentence(tmp_path: Path) -> None:
    torrent = small_torrent(tmp_path)
    missing = str(tmp_path / "nope.pem")
    result = subprocess.run(
        [sys.executable, "-m", "roost", "seed", str(torrent), "-d", str(tmp_path),
         "--tls-cert", missing, "--tls-key", missing, "--tls-ca", missing],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot load the TLS certificate" in lines[0], lines
