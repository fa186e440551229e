"""roost's own seeder and fetcher (`roost seed` / `roost fetch`).

THE HOOK for the engine authors: SEED_ARGV / FETCH_ARGV below (or
``--roost-seed-cmd`` / ``--roost-fetch-cmd`` on bench/efficiency.py, as one
shell-quoted string each). They are templates; each element is formatted
with these fields:

    {python}      the interpreter running the benchmark
    {torrent}     metainfo file (BEP 3, private, piece size of the run)
    {payload_dir} origin: directory holding the payload
    {dest}        receiver: directory to download into (file name = {name})
    {name}        payload file name
    {ip} {port}   this host's address and the peer port to listen on
    {tracker}     announce URL of the opentracker on the origin
    {sha256}      expected SHA-256 of the payload
    {n}           receivers in the run (the origin's --swarm-size hint)

The contract, the same as for aria2c and libtorrent: a receiver prints JSON
event lines on stdout and emits ``{"event": "complete", ...}`` once the
payload is complete; roost_peer.py (which wraps it) then verifies the copy
and records the time. The receiver must KEEP UPLOADING until it gets SIGTERM
(hence the huge --linger); the origin seeds until SIGTERM (with opentracker
there is no expected peer count, so --until-complete never fires and the
seeder does not stop after its default 10 s without interest). The tracker is
opentracker, as for the others; to measure roost's own tracker instead, start
it in start_origin below.

If PROBE_ARGV does not exit 0 with "--dir" in its help text, the tool is
reported "not run: roost engine not available".

"roost-tls" (RoostTlsTool) is the same with mutual TLS between every pair of
peers, as `roost deploy --peer-tls` runs it: one CA for the run
(roost.deploy.pki), a certificate per host, `--tls-cert/--tls-key/--tls-ca`
appended to both command lines. Run it beside "roost" to measure TLS's cost.
"""

from __future__ import annotations

import compileall
import os
import shlex
import subprocess
import sys
from pathlib import Path

from bench.lab import Host, NotRun
from bench.tools import tracker
from bench.tools.base import PEER_PORT, TOOLS_DIR, RunContext, Tool
from bench.tools.metainfo import info_hash

SEED_ARGV = [
    "{python}", "-m", "roost", "seed", "{torrent}", "--dir", "{payload_dir}",
    "--bind", "{ip}", "--port", "{port}", "--skip-check", "--until-complete", "--quiet",
    "--json", "--super-seed", "--swarm-size", "{n}",
]
FETCH_ARGV = [
    "{python}", "-m", "roost", "fetch", "{torrent}", "--dir", "{dest}",
    "--bind", "{ip}", "--port", "{port}", "--json", "--quiet", "--linger", "1000000",
]
PROBE_ARGV = ["{python}", "-m", "roost", "fetch", "--help"]
WRAPPER = TOOLS_DIR / "roost_peer.py"
REPO_ROOT = Path(__file__).resolve().parents[2]


def precompile() -> None:
    """Compile roost's bytecode once, as installing a package does. Where
    PYTHONDONTWRITEBYTECODE is set (it is on the lab machines), every one of a
    run's N+1 processes would otherwise compile ~25 modules from source,
    about 45 ms of CPU each, all at once on 2 cores at t0."""
    compileall.compile_dir(REPO_ROOT / "roost", quiet=1)


class RoostTool(Tool):
    name = "roost"

    def __init__(self, seed_argv: list[str] | None = None,
                 fetch_argv: list[str] | None = None) -> None:
        self.seed_argv = seed_argv or SEED_ARGV
        self.fetch_argv = fetch_argv or FETCH_ARGV

    def check_available(self) -> None:
        precompile()
        probe = [a.format(python=sys.executable) for a in PROBE_ARGV]
        try:
            r = subprocess.run(probe, capture_output=True, text=True, timeout=60,
                               cwd=REPO_ROOT, env=self._env())
        except (OSError, subprocess.TimeoutExpired) as e:
            raise NotRun(f"roost engine not available ({e})") from None
        if r.returncode != 0 or "--dir" not in r.stdout:
            raise NotRun(f"roost engine not available ({shlex.join(probe)} exited "
                         f"{r.returncode}: {(r.stderr or r.stdout).strip()[-200:]})")

    @staticmethod
    def _env() -> dict[str, str]:
        path = os.environ.get("PYTHONPATH", "")
        return {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{path}" if path
                else str(REPO_ROOT)}

    def _fields(self, ctx: RunContext, host: Host) -> dict[str, str]:
        return {
            "python": sys.executable, "torrent": str(ctx.torrent),
            "payload_dir": str(ctx.payload.parent), "dest": str(ctx.data_dir(host)),
            "name": ctx.payload.name, "ip": host.ip, "port": str(PEER_PORT),
            "tracker": tracker.announce_url(ctx.origin.ip), "sha256": ctx.sha256,
            "n": str(len(ctx.lab.receivers)),
        }

    def extra_args(self, ctx: RunContext, host: Host) -> list[str]:
        """Appended to this host's seed/fetch command line (RoostTlsTool: its TLS files)."""
        return []

    def start_origin(self, ctx: RunContext) -> None:
        tracker.start_opentracker(ctx)
        f = self._fields(ctx, ctx.origin)
        argv = [a.format(**f) for a in self.seed_argv] + self.extra_args(ctx, ctx.origin)
        ctx.spawn(ctx.origin, "seeder", argv, env=self._env())
        ctx.lab.wait_listen(ctx.origin, PEER_PORT)
        tracker.wait_seeder_announced(ctx, info_hash(ctx.torrent.read_bytes()))

    def launch_receiver(self, ctx: RunContext, host: Host) -> subprocess.Popen[bytes]:
        f = self._fields(ctx, host)
        argv = [sys.executable, str(WRAPPER), "--file", str(ctx.data_dir(host) / ctx.payload.name),
                "--sha256", ctx.sha256, "--out", str(ctx.done_file(host)), "--host", host.name,
                "--", *[a.format(**f) for a in self.fetch_argv], *self.extra_args(ctx, host)]
        return ctx.spawn(host, "receiver", argv, env=self._env())


class RoostTlsTool(RoostTool):
    """roost with mutual TLS between peers (one CA per run, a certificate per host)."""

    name = "roost-tls"

    def extra_args(self, ctx: RunContext, host: Host) -> list[str]:
        from roost.deploy.pki import DeployCA  # operator side: needs `cryptography`

        tls_dir = ctx.run_dir / "tls"
        if not tls_dir.exists():  # the first call (the origin's) makes the run's CA
            tls_dir.mkdir(mode=0o700)
            ca = DeployCA(f"bench {ctx.run_dir.name}")
            for h in ctx.lab.hosts:
                (tls_dir / h.name).mkdir()
                ca.issue(h.name).write(tls_dir / h.name)
        cert, key, ca_file = (tls_dir / host.name / n
                              for n in ("peer-cert.pem", "peer-key.pem", "peer-ca.pem"))
        return ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca_file)]
