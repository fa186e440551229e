"""BEP 48: the announce URL ends in `announce`, so clients derive the scrape URL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import pytest

from roost.core import bencode
from roost.core.metainfo import parse
from roost.core.tracker_client_codec import scrape_url
from tests.conftest import require_tool

from .helpers import announce_query, make_torrent, pid

IH = b"\xcd" * 20


def test_secret_comes_before_announce_and_scrape_is_derived(start_tracker: Any) -> None:
    t = start_tracker()
    status, reg = t.admin("POST", "/admin/swarms", {"info_hash": IH.hex()})
    assert status == 201, reg
    token, base = reg["token"], f"http://127.0.0.1:{t.port}"
    assert reg["announce_url"] == f"{base}/{token}/announce"
    # what a client (and roost's own tracker client) derives from the announce URL
    assert scrape_url(reg["announce_url"]) == reg["scrape_url"] == f"{base}/{token}/scrape"
    status, raw = t.get(f"/{token}/announce?{announce_query(IH, pid(1), left=0).decode()}")
    reply = bencode.decode(raw)
    assert status == 200 and isinstance(reply, dict) and b"failure reason" not in reply, reply
    status, raw = t.get(f"/{token}/scrape?info_hash={quote_from_bytes(IH, safe='')}")
    files = bencode.decode(raw)[b"files"]  # type: ignore[index]
    assert status == 200 and files[IH][b"complete"] == 1  # type: ignore[index]


def test_the_old_secret_after_announce_form_still_works(start_tracker: Any) -> None:
    t = start_tracker()
    status, reg = t.admin("POST", "/admin/swarms", {"info_hash": IH.hex()})
    assert status == 201, reg
    token = reg["token"]
    status, raw = t.get(f"/announce/{token}?{announce_query(IH, pid(2), left=5).decode()}")
    assert status == 200 and b"failure reason" not in raw, raw
    status, raw = t.get(f"/scrape/{token}")
    files = bencode.decode(raw)[b"files"]  # type: ignore[index]
    assert files[IH][b"incomplete"] == 1  # type: ignore[index]


def test_wrong_or_missing_secret_in_the_new_form_fails_bencoded(start_tracker: Any) -> None:
    t = start_tracker()
    t.admin("POST", "/admin/swarms", {"info_hash": IH.hex()})
    for path in ("/announce", "/" + "x" * 32 + "/announce", "/" + "y" * 32 + "/scrape"):
        status, raw = t.get(f"{path}?{announce_query(IH, pid(3)).decode()}")
        reply = bencode.decode(raw)
        assert status == 200 and isinstance(reply, dict) and b"failure reason" in reply, path
    status, _ = t.get("/admin/swarms/announce")  # a deeper path is not an announce
    assert status != 200


def test_torrent_dir_takes_the_secret_from_either_form(start_tracker: Any, tmp_path: Any) -> None:
    secrets = {"new": "n" * 24, "old": "o" * 24}
    urls = {"new": f"http://t:1/{secrets['new']}/announce", "old": f"http://t:1/announce/{secrets['old']}"}
    for name, url in urls.items():
        (tmp_path / f"{name}.torrent").write_bytes(make_torrent(name.encode() * 100, name, url))
    t = start_tracker(torrent_dir=tmp_path)
    status, listing = t.admin("GET", "/admin/swarms")
    assert status == 200
    got = {s["name"]: s["token"] for s in listing["swarms"]}
    assert got == {"new": secrets["new"], "old": secrets["old"]}
    meta = parse((tmp_path / "new.torrent").read_bytes())
    assert scrape_url(meta.announce or "") == f"http://t:1/{secrets['new']}/scrape"


@pytest.mark.slow
def test_transmission_scrapes_a_roost_tracker(start_tracker: Any, tmp_path: Path) -> None:
    """Transmission derives the scrape URL from the announce URL (BEP 48); with
    the old secret-last form it never scraped at all."""
    tool = require_tool("transmission-cli")
    t = start_tracker()
    payload = os.urandom(200_000)
    ih = parse(make_torrent(payload, "p.bin", "http://x/announce")).info_hash
    status, reg = t.admin("POST", "/admin/swarms", {"info_hash": ih.hex()})
    assert status == 201, reg
    torrent = tmp_path / "p.torrent"
    torrent.write_bytes(make_torrent(payload, "p.bin", reg["announce_url"]))
    (tmp_path / "dl").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [tool, "-w", str(tmp_path / "dl"), "-g", str(tmp_path / "home"), "-p", str(port),
         str(torrent)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while metric(t, "roost_tracker_scrapes_total") < 1 and time.monotonic() < deadline:
            assert proc.poll() is None, "transmission-cli exited"
            time.sleep(1)
        assert metric(t, "roost_tracker_scrapes_total") >= 1, "Transmission never scraped"
        assert metric(t, 'roost_tracker_rejected_total{kind="secret"}') == 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def metric(t: Any, name: str) -> float:
    status, text = t.get("/metrics")
    assert status == 200
    for line in text.decode().splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0
