"""A real nginx (Debian's) on loopback for the web seed tests.

Its own config, pid file, logs and temp paths live in a temp directory; no
system config is read (`-c` and `-p`, and `-e` so not even the startup error
log goes to /var/log). It runs in the foreground (`daemon off`) as a child of
the test and is ended by its PID at teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import require_tool


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Nginx:
    """nginx serving `root` at http://127.0.0.1:<port>/. `/broken/...` answers 500;
    `/slow/...` is `root` again, each connection at `slow_rate` bytes/s."""

    def __init__(self, root: Path, work: Path, *, slow_rate: int = 256 * 1024) -> None:
        # /usr/sbin is not on every user's PATH
        binary = "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else require_tool("nginx")
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        user = "user root;\n" if os.geteuid() == 0 else ""  # temp dirs are 0700: workers read them
        conf = work / "nginx.conf"
        conf.write_text(
            f"""{user}worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {work}/access.log;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    sendfile on;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{self.port};
        root {root};
        location /broken/ {{ return 500; }}
        location /slow/ {{ alias {root}/; limit_rate {slow_rate}; }}
    }}
}}
"""
        )
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(work), "-e", str(work / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise AssertionError(f"nginx exited at start: {err[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.close()
        raise AssertionError("nginx did not listen within 15 s")

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def requests(self) -> list[str]:
        """The access log's lines (one per request)."""
        log = self.work / "access.log"
        return log.read_text(errors="replace").splitlines() if log.exists() else []

    def close(self) -> None:
        """SIGQUIT, then SIGKILL; this PID only (its workers exit with their master)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
