"""Outside strings are shown as inert text: no markup, no escape sequences (roost.core.inert)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from roost.core.bencode import encode
from roost.core.inert import inert
from roost.deploy.ui import inert_text
from roost.engine.reporter import Reporter

ROOT = Path(__file__).resolve().parents[1]


def test_inert_escapes_controls_and_bidi_and_leaves_the_rest() -> None:
    assert inert("plain [b]markup[/b] é 漢字 🙂") == "plain [b]markup[/b] é 漢字 🙂"
    assert inert("a\x1b]0;title\x07b") == "a\\x1b]0;title\\x07b"
    assert inert("x\x1b[2Jy\rz\x08") == "x\\x1b[2Jy\\x0dz\\x08"
    assert inert("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert inert("a\nb") == "a\\x0ab" and inert("a\nb", keep_newlines=True) == "a\nb"
    assert inert("\x85\u2028") == "\\x85\\u2028"
    assert inert(42) == "42"


def test_inert_text_is_never_markup() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    console.print(inert_text("oops [/bold] [link=http://x]here[/link] [conceal]hidden\x1b[2J"))
    text = out.getvalue()
    assert "[/bold]" in text and "[link=http://x]" in text and "[conceal]hidden" in text
    assert "\x1b[2J" not in text and "\\x1b[2J" in text


def hostile_torrent(path: Path, *, date: int = 10**20) -> None:
    files = [
        {b"length": 3, b"path": [b"[conceal]secret.txt"]},
        {b"length": 2, b"path": [b"dir", "evil\u202etxt.exe".encode()]},
    ]
    info = {b"name": b"rel[bold]ease", b"piece length": 16384,
            b"pieces": hashlib.sha1(bytes(5)).digest(), b"files": files}  # fmt: skip
    path.write_bytes(encode({
        b"announce": b"http://t/[link=http://evil]x[/link]/announce",
        b"comment": b"oops [/bold]",
        b"created by": b"[blink]me\x1b]8;;http://evil\x1b\\",
        b"creation date": date,
        b"info": info,
    }))  # fmt: skip


def show(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roost", "show", str(path), *extra],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200"})  # fmt: skip


def test_show_prints_a_hostile_torrent_as_inert_text(tmp_path: Path) -> None:
    torrent = tmp_path / "evil.torrent"
    hostile_torrent(torrent)
    result = show(torrent)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Traceback" not in result.stderr and "\x1b" not in out and "\x07" not in out
    assert "oops [/bold]" in out
    assert "[link=http://evil]x[/link]" in out
    assert "[conceal]secret.txt" in out  # the table agrees with --json
    assert "rel[bold]ease" in out and "evil\\u202etxt.exe" in out and "\u202e" not in out
    assert "[blink]me\\x1b]8;;http://evil\\x1b\\" in out
    assert "100000000000000000000" in out  # the out-of-range date, as a number
    data = json.loads(show(torrent, "--json").stdout)
    assert data["files"][0]["path"] == "[conceal]secret.txt"


def test_show_gives_a_negative_out_of_range_date_as_a_number(tmp_path: Path) -> None:
    torrent = tmp_path / "old.torrent"
    hostile_torrent(torrent, date=-(10**18))
    result = show(torrent)
    assert result.returncode == 0 and "-1000000000000000000" in result.stdout, result.stderr


def test_engine_event_lines_escape_peer_strings() -> None:
    out = io.StringIO()
    Reporter(as_json=False, stream=out).event("peer_closed", client="\x1b[2J-XX", reason="a\rb")
    assert out.getvalue() == "roost: peer_closed client=\\x1b[2J-XX reason=a\\x0db\n"


def test_per_host_table_shows_host_strings_inert() -> None:
    from roost.deploy.config import DeployConfig, HostSpec
    from roost.deploy.run import new_deploy
    from roost.deploy.view import final_table

    spec = HostSpec(name="web1", address="10.0.0.1", dest="/srv/app")
    d = new_deploy(DeployConfig(dest="/srv/app"), [spec], "t1")
    h = d.hosts[0]
    h.status, h.kind, h.reason = "failed", "fetch", "bad \x1b]0;owned\x07 [/bold]"
    h.current = "[conceal]r1"
    d.message, d.exit_code = "1 host failed \x1b[2J", 3
    out = io.StringIO()
    final_table(d, Console(file=out, force_terminal=True, width=200))
    text = out.getvalue()
    assert "\x1b]0;" not in text and "\x1b[2J" not in text and "\x07" not in text
    assert "\\x1b]0;owned\\x07 [/bold]" in text and "[conceal]r1" in text
    assert "1 host failed \\x1b[2J" in text
