"""libtorrent (PyPI) through the small driver lt_peer.py, with opentracker."""

from __future__ import annotations

import subprocess
import sys

from bench.lab import Host, NotRun
from bench.tools import tracker
from bench.tools.base import PEER_PORT, TOOLS_DIR, RunContext, Tool
from bench.tools.metainfo import info_hash

DRIVER = TOOLS_DIR / "lt_peer.py"


class LibtorrentTool(Tool):
    name = "libtorrent"

    def check_available(self) -> None:
        r = subprocess.run([sys.executable, "-c", "import libtorrent"], capture_output=True,
                           timeout=60)
        if r.returncode != 0:
            raise NotRun("python module libtorrent is not installed")

    def _argv(self, ctx: RunContext, host: Host, seed: bool) -> list[str]:
        argv = [sys.executable, str(DRIVER), "--torrent", str(ctx.torrent), "--ip", host.ip,
                "--port", str(PEER_PORT), "--host", host.name]
        if seed:
            return [*argv, "--seed", "--save", str(ctx.payload.parent)]
        return [*argv, "--save", str(ctx.data_dir(host)), "--sha256", ctx.sha256,
                "--out", str(ctx.done_file(host))]

    def start_origin(self, ctx: RunContext) -> None:
        tracker.start_opentracker(ctx)
        ctx.spawn(ctx.origin, "seeder", self._argv(ctx, ctx.origin, seed=True))
        ctx.lab.wait_listen(ctx.origin, PEER_PORT)
        tracker.wait_seeder_announced(ctx, info_hash(ctx.torrent.read_bytes()))

    def launch_receiver(self, ctx: RunContext, host: Host) -> subprocess.Popen[bytes]:
        return ctx.spawn(host, "receiver", self._argv(ctx, host, seed=False))
