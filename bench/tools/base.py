"""Tool drivers for the efficiency benchmark: the common contract.

A driver starts whatever the origin side needs (tracker, seeder, web server)
in `start_origin`, waiting until it is ready, then starts one receiver per
host in `launch_receiver`. The runner starts the clock right after the last
receiver has been launched. Every receiver, of every tool, signals
completion the same way: by running `verify_done.py` (or importing it),
which hashes its copy and writes ``<done_dir>/<host>.json``. Receivers keep
running (uploading, for the swarm tools) until the runner stops every process
of the run once all hosts are done or the run times out.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from bench.lab import Host, Lab, NotRun
from bench.lab.cgroup import CpuGroup

TOOLS_DIR = Path(__file__).resolve().parent
VERIFY = TOOLS_DIR / "verify_done.py"
TRACKER_PORT = 6969
PEER_PORT = 6881


@dataclass
class RunContext:
    lab: Lab
    payload: Path  # the origin's copy; its file name is the payload name
    sha256: str
    size: int
    piece_size: int
    torrent: Path  # metainfo (BEP 3, private) for the BitTorrent tools
    run_dir: Path  # per tool run: logs, hooks, receivers' data dirs
    done_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    commands: dict[str, list[str]] = field(default_factory=dict)
    roles: dict[int, tuple[Host, str]] = field(default_factory=dict)  # pid -> (host, role)
    # When set, every process spawned joins this group before it execs (bench.lab.cgroup).
    cpu_group: CpuGroup | None = None

    @property
    def origin(self) -> Host:
        return self.lab.origin

    def data_dir(self, host: Host) -> Path:
        d = self.run_dir / "data" / host.name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def done_file(self, host: Host) -> Path:
        return self.done_dir / f"{host.name}.json"

    def log(self, host: Host, role: str) -> Path:
        return self.run_dir / f"{host.name}-{role}.log"

    def spawn(
        self, host: Host, role: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in `host`, log to run_dir, remember it and its command line."""
        with open(self.log(host, role), "ab") as logf:
            proc = self.lab.spawn(host, argv, cpu_group=self.cpu_group, stdout=logf,
                                  stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        self.roles[proc.pid] = (host, role)
        # Record the origin-side commands and the first receiver's, verbatim.
        self.commands.setdefault(role, [str(x) for x in argv])
        return proc


def verify_argv(ctx: RunContext, host: Host, file: Path) -> list[str]:
    return [sys.executable, str(VERIFY), "--file", str(file), "--sha256", ctx.sha256,
            "--out", str(ctx.done_file(host)), "--host", host.name]


def log_tail(path: Path, n: int = 400) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except OSError:
        return ""


def quote(argv: list[str]) -> str:
    return shlex.join(argv)


class Tool(ABC):
    name: str = ""
    #: receivers upload to each other and must keep running until all are done
    receivers_upload: bool = True

    def expected_factor(self, n_receivers: int) -> float:
        """How many bounds the tool is expected to need (sizes the timeout)."""
        return 1.0

    def check_available(self) -> None:  # noqa: B027 - optional hook
        """Raise NotRun with a reason when the tool cannot run on this machine."""

    @abstractmethod
    def start_origin(self, ctx: RunContext) -> None: ...

    @abstractmethod
    def launch_receiver(self, ctx: RunContext, host: Host) -> subprocess.Popen[bytes]: ...


def which_or_not_run(name: str) -> str:
    import shutil

    path = shutil.which(name)
    if path is None:
        raise NotRun(f"{name} is not installed")
    return path
