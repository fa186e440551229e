"""The url-list roost writes is standard BEP 19: aria2c (Debian's) fetches a roost
torrent from nginx alone, with no tracker and no peer."""

from __future__ import annotations

import random
import time
from pathlib import Path

from roost.commands.make import make_torrent
from tests.interop.engine_helpers import Aria2c, file_sha256
from tests.webseed.nginx import Nginx

MIB = 1024 * 1024


def test_aria2c_fetches_a_roost_torrent_from_its_web_seed(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    src = www / "payload.bin"
    src.write_bytes(random.Random(3).randbytes(3 * MIB + 99))
    nginx = Nginx(www, tmp_path / "nginx")
    try:
        torrent = tmp_path / "payload.torrent"
        torrent.write_bytes(make_torrent(src, [], piece_length=256 * 1024,
                                         web_seeds=[nginx.url()], private=False))
        out = tmp_path / "out"
        out.mkdir()
        client = Aria2c(torrent, out, tmp_path / "aria2c.log")
        try:
            want = file_sha256(src)
            got = out / "payload.bin"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if got.exists() and file_sha256(got) == want:
                    break
                time.sleep(0.3)
            assert got.exists() and file_sha256(got) == want, client.tail()
        finally:
            client.close()
        assert [line for line in nginx.requests() if "GET /payload.bin " in line]
    finally:
        nginx.close()
