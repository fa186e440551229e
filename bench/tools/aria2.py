"""aria2c (Debian) seeded through opentracker on the origin."""

from __future__ import annotations

import os
import stat
import subprocess

from bench.lab import Host
from bench.tools import tracker
from bench.tools.base import PEER_PORT, RunContext, Tool, verify_argv, which_or_not_run
from bench.tools.metainfo import info_hash


class Aria2Tool(Tool):
    name = "aria2c"

    def check_available(self) -> None:
        which_or_not_run("aria2c")
        which_or_not_run("opentracker")

    def _argv(self, ctx: RunContext, host: Host, seed: bool) -> list[str]:
        argv = [
            which_or_not_run("aria2c"),
            f"--dir={ctx.payload.parent if seed else ctx.data_dir(host)}",
            f"--listen-port={PEER_PORT}",
            "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
            "--seed-ratio=0.0",  # seed until stopped
            "--file-allocation=none",
            "--check-integrity=false",
            "--summary-interval=0",
            "--console-log-level=warn",
            "--disable-ipv6=true",
            "--bt-stop-timeout=0",
        ]
        if seed:
            argv.append("--bt-seed-unverified=true")
        else:
            argv.append(f"--on-bt-download-complete={self._hook(ctx)}")
        argv.append(str(ctx.torrent))
        return argv

    def _hook(self, ctx: RunContext) -> str:
        """aria2c calls this with (gid, file count, first file path) when complete."""
        hook = ctx.run_dir / "aria2-complete.sh"
        if not hook.exists():
            # verify_done's --file/--out/--host come from the environment.
            probe = verify_argv(ctx, ctx.origin, ctx.payload)
            hook.write_text(
                "#!/bin/sh\n"
                "t=$(date +%s.%N)\n"
                f'exec {probe[0]} {probe[1]} --file "$3" --sha256 {ctx.sha256} '
                f'--out "{ctx.done_dir}/$BENCH_HOST.json" --host "$BENCH_HOST" '
                '--t-complete "$t"\n'
            )
            hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
        return str(hook)

    def start_origin(self, ctx: RunContext) -> None:
        tracker.start_opentracker(ctx)
        ctx.spawn(ctx.origin, "seeder", self._argv(ctx, ctx.origin, seed=True),
                  env={**os.environ, "BENCH_HOST": ctx.origin.name})
        ctx.lab.wait_listen(ctx.origin, PEER_PORT)
        tracker.wait_seeder_announced(ctx, info_hash(ctx.torrent.read_bytes()))

    def launch_receiver(self, ctx: RunContext, host: Host) -> subprocess.Popen[bytes]:
        return ctx.spawn(host, "receiver", self._argv(ctx, host, seed=False),
                         env={**os.environ, "BENCH_HOST": host.name})
