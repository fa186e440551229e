"""Central HTTP fan-out from the origin: the naive baseline (N x the bound)."""

from __future__ import annotations

import subprocess
import sys

from bench.lab import Host
from bench.tools.base import TOOLS_DIR, RunContext, Tool

HTTP_PORT = 8080
FETCH = TOOLS_DIR / "http_fetch.py"


class HttpFanoutTool(Tool):
    name = "http"
    receivers_upload = False

    def expected_factor(self, n_receivers: int) -> float:
        return float(n_receivers)

    def start_origin(self, ctx: RunContext) -> None:
        o = ctx.origin
        ctx.spawn(o, "server", [sys.executable, "-m", "http.server", str(HTTP_PORT),
                                "--bind", o.ip, "--directory", str(ctx.payload.parent)])
        ctx.lab.wait_listen(o, HTTP_PORT)

    def launch_receiver(self, ctx: RunContext, host: Host) -> subprocess.Popen[bytes]:
        url = f"http://{ctx.origin.ip}:{HTTP_PORT}/{ctx.payload.name}"
        return ctx.spawn(host, "receiver", [
            sys.executable, str(FETCH), "--url", url,
            "--dest", str(ctx.data_dir(host) / ctx.payload.name), "--sha256", ctx.sha256,
            "--out", str(ctx.done_file(host)), "--host", host.name])
