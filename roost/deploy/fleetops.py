"""Run one agent command on every host: `roost status`, `rollback` and `clean`.

Same transport, same agent push and same per-host failure reporting as
deploy; each host's JSON answer becomes a row.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from roost.deploy.config import DeployConfig, HostSpec
from roost.deploy.host import HostRun, _json_result
from roost.deploy.run import Connector, make_agent
from roost.deploy.transport import HostFailure
from roost.target.protocol import ErrorKind, HostStatus

#: each fleet command's step: the error kind when the agent names none
_STEPS = {"host-status": ErrorKind.STATUS, "host-rollback": ErrorKind.ROLLBACK,
          "host-health": ErrorKind.HEALTH, "host-clean": ErrorKind.CLEAN}


@dataclass
class OpResult:
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.rows if r["status"] == HostStatus.FAILED)


async def run_everywhere(
    config: DeployConfig, hosts: list[HostSpec], connect: Connector, command: str, *args: str
) -> OpResult:
    agent = make_agent(config.python)
    limit = asyncio.Semaphore(max(1, config.concurrency))

    async def one(spec: HostSpec) -> dict[str, Any]:
        run = HostRun(spec)
        row: dict[str, Any] = {"host": spec.name, "address": spec.address}
        try:
            async with limit:
                run.transport = await connect(spec)
                await run.ensure_agent(agent)
                result = await run.transport.run(
                    run.agent_cmd(agent, command, "--dest", run.dest(config), "--json", *args),
                    timeout=120,
                )
            row.update(_json_result(result, _STEPS.get(command, ErrorKind.INTERNAL)))
            row["status"] = HostStatus.OK
        except HostFailure as exc:
            row.update(status=HostStatus.FAILED, kind=exc.kind, reason=str(exc))
        except Exception as exc:  # one host's surprise stays in its row
            row.update(status=HostStatus.FAILED, kind=ErrorKind.INTERNAL,
                       reason=f"unexpected {type(exc).__name__}: {exc}")
        finally:
            if run.transport is not None:
                await run.transport.close()
        return row

    return OpResult(list(await asyncio.gather(*(one(h) for h in hosts))))


def run_op(
    config: DeployConfig,
    command: str,
    args: list[str],
    as_json: bool,
    title: str,
    columns: list[tuple[str, Any]],
) -> int:
    """Run `command` on every host; print a table (or JSON); 0 when every host answered."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from roost.deploy.config import resolve_hosts
    from roost.deploy.run import ssh_connector
    from roost.deploy.ui import inert_text, print_reasons

    hosts = resolve_hosts(config)
    result = asyncio.run(run_everywhere(config, hosts, ssh_connector(config), command, *args))
    code = 1 if result.failed else 0
    if as_json:
        print(
            json.dumps({"hosts": result.rows, "failed": result.failed, "exit_code": code}, indent=1)
        )
        return code
    table = Table(title=title, title_justify="left")
    for name, _ in columns:
        table.add_column(name)
    for row in result.rows:
        cells = [Text(str(getter(row)) if row["status"] == HostStatus.OK else "-")
                 for _, getter in columns]
        cells[0] = Text(row["host"])
        if row["status"] == HostStatus.FAILED and len(cells) > 1:  # the reason goes under the table
            cells[1] = Text(HostStatus.FAILED.value, style="red")
        table.add_row(*(inert_text(c, keep_newlines=True) for c in cells))
    console = Console()
    console.print(table)
    print_reasons(console, ((r["host"], r["reason"], r["kind"]) for r in result.rows
                            if r["status"] == HostStatus.FAILED))
    return code
