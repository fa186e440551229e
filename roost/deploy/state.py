"""What one deploy knows while it runs (`Deploy`), in a module of its own: the
orchestrator (roost.deploy.run) fills it, and the phases it calls (dryrun,
rollout) and the live view read it, without importing the orchestrator back."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from roost.deploy import locking
from roost.deploy.config import DeployConfig
from roost.deploy.host import HostRun
from roost.deploy.origins import RemoteOrigin
from roost.deploy.pack import Packed
from roost.target.protocol import HostStatus

EXIT_ERROR = 1  # the exit code of a deploy that ended before deciding another


@dataclass
class Deploy:
    """Everything one deploy knows; the live view reads it."""

    config: DeployConfig
    hosts: list[HostRun]
    tag: str
    deploy_id: str
    need: int
    payload: Packed | None = None
    times: dict[str, float] = field(default_factory=dict)
    activated: bool = False
    interrupted: bool = False
    phase: str = "pack"
    exit_code: int = EXIT_ERROR
    message: str = ""
    who: str = field(default_factory=locking.operator)
    origins: list[RemoteOrigin] = field(default_factory=list)  # --origin hosts

    def mark(self, name: str) -> None:
        self.times[name] = time.monotonic()

    def counts(self) -> dict[HostStatus, int]:
        out: dict[HostStatus, int] = {}
        for h in self.hosts:
            out[h.status] = out.get(h.status, 0) + 1
        return out
