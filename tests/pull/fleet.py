"""Pull agents in network namespaces: the fleet of tests/fleet/fleet.py without sshd.

Each host is a network namespace on the fleet's bridge running one `roost agent`
from the zipapp under `python3 -I -S` (standard library only, as on a bare host),
with its own destination directory. The coordinator (`roost publish`) runs in the
root namespace on the fleet's gateway address. Teardown is Fleet.stop(): every
process left in the namespaces is killed by pid, the namespaces and run dir go.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.deploy.zipapp import build_zipapp
from tests.fleet.fleet import Fleet, Host
from tests.pull.harness import AgentProc, agent_argv, current_of, publish_argv, run_publish
from tests.pull.keys import allowed_signers, make_key


@dataclass
class PullFleet(Fleet):
    agents: list[AgentProc] = field(default_factory=list)
    port: int = 8470

    def _start_sshd(self, host: Host) -> None:
        """Pull hosts need no sshd: nothing reaches into them."""

    def _wait_ready(self) -> None:
        """The agents are started by start_agents()."""

    @property
    def url(self) -> str:
        return f"http://{self.gateway}:{self.port}"

    def start_agents(self) -> PullFleet:
        self.publisher = make_key(self.run_dir, "publisher")
        self.signers = allowed_signers(self.run_dir / "allowed_signers",
                                       ("release@ci", self.publisher))
        pyz = build_zipapp(self.run_dir / "roost.pyz")
        for host in self.hosts:
            dest = self.run_dir / "hosts" / host.name
            argv = agent_argv(host.name, dest, self.url, self.signers,
                              python=(sys.executable, "-I", "-S", str(pyz)))
            agent = AgentProc(host.name, dest, self.run_dir / f"agent-{host.name}.log", argv,
                              prefix=["ip", "netns", "exec", host.ns])
            self.agents.append(agent.start())
        deadline = time.monotonic() + 30
        for agent in self.agents:
            ready = agent.wait_for(lambda a: any(e.get("event") == "ready" for e in a.events()),
                                   max(0.1, deadline - time.monotonic()))
            if not ready:
                raise RuntimeError(f"agent {agent.name} did not start: {agent.events()}")
        return self

    def publish(self, src: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
        return run_publish(publish_argv(src, self.publisher, self.gateway, self.port,
                                        [h.name for h in self.hosts], *extra), timeout=600)

    def currents(self) -> dict[str, str | None]:
        return {a.name: current_of(a.dest) for a in self.agents}

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        super().stop()


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["host"]: row for row in report["hosts"]}


def summary(report: dict[str, Any]) -> str:
    return json.dumps({k: report.get(k) for k in ("message", "counts", "timings")})
