"""Run one agent command on every host: `roost status`, `rollback` and `clean`.

Same transport, same agent push and same per-host failure reporting as
deploy; each host's reply, parsed into its protocol record, becomes a row.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from roost.deploy.config import DeployConfig, HostSpec
from roost.deploy.host import HostRun, agent_reply
from roost.deploy.run import Connector, make_agent
from roost.deploy.transport import HostFailure
from roost.target.protocol import ErrorKind, HostStatus

#: each fleet command's step: the error kind when the agent names none
_STEPS = {"host-status": ErrorKind.STATUS, "host-rollback": ErrorKind.ROLLBACK,
          "host-health": ErrorKind.HEALTH, "host-clean": ErrorKind.CLEAN}

R = TypeVar("R")
#: a host's destination -> the agent argv to run there (roost.target.agentargv)
Argv = Callable[[str], list[str]]


@dataclass
class Row(Generic[R]):
    """One host's answer: its reply record, or why there is none."""

    host: str
    address: str
    status: HostStatus = HostStatus.OK
    reply: R | None = None
    kind: ErrorKind | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"host": self.host, "address": self.address}
        to_dict = getattr(self.reply, "to_dict", None)
        if to_dict is not None:
            out.update(to_dict())
        out["status"] = self.status
        if self.status is HostStatus.FAILED:
            out.update(kind=self.kind, reason=self.reason)
        return out


@dataclass
class OpResult(Generic[R]):
    rows: list[Row[R]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.rows if r.status is HostStatus.FAILED)


async def run_everywhere(
    config: DeployConfig, hosts: list[HostSpec], connect: Connector, argv: Argv,
    parse: Callable[[str], R],
) -> OpResult[R]:
    agent = make_agent(config.python)
    limit = asyncio.Semaphore(max(1, config.concurrency))

    async def one(spec: HostSpec) -> Row[R]:
        run = HostRun(spec)
        row: Row[R] = Row(spec.name, spec.address)
        try:
            async with limit:
                run.transport = await connect(spec)
                await run.ensure_agent(agent)
                args = argv(run.dest(config))
                result = await run.transport.run(run.agent_cmd(agent, *args), timeout=120)
            row.reply = agent_reply(result, _STEPS.get(args[0], ErrorKind.INTERNAL), parse)
        except HostFailure as exc:
            row.status, row.kind, row.reason = HostStatus.FAILED, exc.kind, str(exc)
        except Exception as exc:  # one host's surprise stays in its row
            row.status, row.kind = HostStatus.FAILED, ErrorKind.INTERNAL
            row.reason = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            if run.transport is not None:
                await run.transport.close()
        return row

    return OpResult(list(await asyncio.gather(*(one(h) for h in hosts))))


def run_op(
    config: DeployConfig,
    argv: Argv,
    parse: Callable[[str], R],
    as_json: bool,
    title: str,
    columns: list[tuple[str, Callable[[R], object]]],
) -> int:
    """Run `argv` on every host; print a table (or JSON); 0 when every host answered.
    The first column is the host's name; the others read the host's reply record."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from roost.deploy.config import resolve_hosts
    from roost.deploy.run import ssh_connector
    from roost.deploy.ui import inert_text, print_reasons

    hosts = resolve_hosts(config)
    connect = ssh_connector(config, len(hosts))
    result = asyncio.run(run_everywhere(config, hosts, connect, argv, parse))
    code = 1 if result.failed else 0
    if as_json:
        print(json.dumps({"hosts": [r.to_dict() for r in result.rows], "failed": result.failed,
                          "exit_code": code}, indent=1))
        return code
    table = Table(title=title, title_justify="left")
    table.add_column("host")
    for name, _ in columns:
        table.add_column(name)
    for row in result.rows:
        reply = row.reply
        cells = [Text(row.host)] + [Text(str(getter(reply)) if reply is not None else "-")
                                    for _, getter in columns]
        if row.status is HostStatus.FAILED and len(cells) > 1:  # the reason goes under the table
            cells[1] = Text(HostStatus.FAILED.value, style="red")
        table.add_row(*(inert_text(c, keep_newlines=True) for c in cells))
    console = Console()
    console.print(table)
    print_reasons(console, ((r.host, r.reason, r.kind) for r in result.rows
                            if r.status is HostStatus.FAILED))
    return code
