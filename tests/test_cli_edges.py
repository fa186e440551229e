"""Careless-operator edges of the commands: each ends cleanly, with one line when wrong."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from roost.commands.make import make_torrent
from roost.deploy.pack import pack
from roost.target.release import Dest, activate, stage
from tests.deploy.trees import make_sample_tree
from tests.swarm.harness import Procs

ROOT = Path(__file__).resolve().parents[1]


def roost(*args: str, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "roost", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env, **kw)  # type: ignore[call-overload,no-any-return]  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "Warning" not in line
             and not line.startswith("  ")]  # fmt: skip
    assert len(lines) == 1 and "error" in lines[0], result.stderr


def test_fetch_no_seed_exits_at_once_when_the_payload_is_already_complete(tmp_path: Path) -> None:
    payload = tmp_path / "data.bin"
    payload.write_bytes(os.urandom(300_000))
    torrent = tmp_path / "data.torrent"
    torrent.write_bytes(make_torrent(payload, []))
    started = time.monotonic()
    result = roost("fetch", str(torrent), "-d", str(tmp_path), "--no-tracker", "--no-seed",
                   "--bind", "127.0.0.1", "--port", "0", "--timeout", "20", "--json")  # fmt: skip
    # before the fix it ran until --timeout and exited 3
    assert result.returncode == 0, result.stderr
    assert '"event":"complete"' in result.stdout
    assert time.monotonic() - started < 15


def test_fetch_no_seed_of_a_zero_length_torrent_exits(tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    torrent = tmp_path / "empty.torrent"
    made = roost("make", str(empty), "-o", str(torrent))
    assert made.returncode == 0, made.stderr
    dest = tmp_path / "dest"
    started = time.monotonic()
    result = roost("fetch", str(torrent), "-d", str(dest), "--no-tracker", "--no-seed",
                   "--bind", "127.0.0.1", "--port", "0", "--timeout", "30")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 15  # before the fix: at the --timeout
    assert (dest / "empty.bin").is_file() and (dest / "empty.bin").stat().st_size == 0


def test_make_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src")
    result = roost("make", str(src), "-o", str(tmp_path / "nonexistent" / "x.torrent"))
    one_line_error(result)
    assert "nonexistent" in result.stderr


def test_activate_refuses_a_negative_keep_and_prunes_nothing(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src")
    dest = Dest(tmp_path / "dest")
    for i in range(1, 4):
        (src / "version").write_text(str(i))
        work = tmp_path / f"w{i}"
        work.mkdir()
        packed = pack(src, work, f"v{i}", fmt="tar")  # staged straight from the tarball
        stage(dest, packed.manifest, packed.payload)
        activate(dest, f"v{i}", keep=5)
    result = roost("activate", "--dest", str(dest.root), "--tag", "v2", "--keep", "-5")
    one_line_error(result)
    assert "--keep" in result.stderr
    assert dest.release_tags() == ["v1", "v2", "v3"]
    assert os.readlink(dest.current) == "releases/v3"


def test_json_into_head_ends_a_one_shot_command_quietly(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src")
    torrent = tmp_path / "t.torrent"
    torrent.write_bytes(make_torrent(src, []))
    for argv in (["show", str(torrent), "--json"],
                 ["activate", "--dest", str(tmp_path / "nowhere"), "--keep", "-1", "--json"]):
        # a reader that leaves at once: the writer meets a closed pipe
        r, w = os.pipe()
        os.close(r)
        proc = subprocess.run([sys.executable, "-m", "roost", *argv], stdout=w,
                              stderr=subprocess.PIPE, text=True, timeout=60, cwd=ROOT)  # fmt: skip
        os.close(w)
        assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
        assert proc.returncode != 0


def test_a_seeder_whose_reader_went_away_keeps_seeding(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", big=400_000)
    torrent = tmp_path / "t.torrent"
    torrent.write_bytes(make_torrent(src, [], piece_length=64 * 1024))
    seeder = subprocess.Popen(
        [sys.executable, "-m", "roost", "seed", str(torrent), "-d", str(tmp_path), "--no-tracker",
         "--skip-check", "--json", "--bind", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    procs = Procs()
    try:
        assert seeder.stdout is not None
        line = ""
        while '"started"' not in line:  # `| head -3`: a few lines, then the reader is gone
            line = seeder.stdout.readline()
            assert line, "the seeder never started"
        port = int(line.split('"port":')[1].split(",")[0])
        seeder.stdout.close()
        fetch = procs.start(["fetch", str(torrent), "-d", str(tmp_path / "new"), "--no-tracker",
                             "--no-seed", "--peer", f"127.0.0.1:{port}", "--timeout", "30"],
                            "fetch")  # fmt: skip
        assert fetch.wait(60) == 0, "".join(fetch.stderr)[-2000:]
        assert seeder.poll() is None, "the seeder died with its reader"
    finally:
        procs.close()
        seeder.terminate()
        _, err = seeder.communicate(timeout=30)
    assert "Traceback" not in err and "BrokenPipe" not in err, err[-2000:]
    assert seeder.returncode == 0
