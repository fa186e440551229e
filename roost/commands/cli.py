"""Operator-side CLI (click + rich).

Commands live one per module in roost/commands/ and are imported only when
invoked, so `roost --help` stays fast. Target-side commands (fetch, seed,
activate) are forwarded to the standard-library agent so they behave the
same here and from a zipapp.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from roost import __version__
from roost.core.inert import inert
from roost.errors import RoostError
from roost.target.agent import AGENT_COMMANDS

#: command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "make": ("roost.commands.make", "Create a .torrent for a file or directory."),
    "show": ("roost.commands.show", "Show what a .torrent holds."),
    "tracker": ("roost.commands.tracker", "Run the roost HTTP tracker."),
    "deploy": ("roost.commands.deploy", "Deploy a release to a fleet over a swarm."),
    "demo": ("roost.commands.demo", "Deploy a sample release to local peers."),
    "status": ("roost.commands.status", "Show which release each host runs."),
    "rollback": ("roost.commands.rollback", "Make the previous release current again."),
    "clean": ("roost.commands.clean", "Stop roost processes and remove temp files on hosts."),
    "publish": ("roost.commands.publish", "Publish a signed release to pull agents."),
}
AGENT_HELP = {
    "fetch": "Download a payload into place (target side).",
    "seed": "Seed a payload to a swarm.",
    "activate": "Unpack and switch a release (target side).",
    "agent": "Follow a coordinator: pull signed releases (target side).",
}


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        names = [n for n, (m, _) in COMMANDS.items() if _available(m)]
        # host-* are the deploy's remote plumbing: callable, but not advertised
        names += [
            n
            for n, spec in AGENT_COMMANDS.items()
            if not n.startswith("host-") and _available(spec.split(":")[0])
        ]
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in AGENT_COMMANDS:
            return _agent_passthrough(cmd_name)
        if cmd_name not in COMMANDS or not _available(COMMANDS[cmd_name][0]):
            return None
        module = importlib.import_module(COMMANDS[cmd_name][0])
        command: click.Command = module.command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List commands from the one-liners above: importing each command module
        just to read its help would pull in asyncssh, rich and aiohttp, and click
        would cut every description to fit one line."""
        rows = []
        for name in self.list_commands(ctx):
            text = COMMANDS[name][1] if name in COMMANDS else AGENT_HELP.get(name, "")
            rows.append((name, text))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _agent_passthrough(name: str) -> click.Command:
    @click.command(
        name=name,
        help=AGENT_HELP.get(name, ""),
        context_settings={"ignore_unknown_options": True, "help_option_names": []},
        add_help_option=False,
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def forward(args: tuple[str, ...]) -> None:
        from roost.target.agent import main as agent_main

        sys.exit(agent_main([name, *args]))

    return forward


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="roost")
def main() -> None:
    """roost: push a release to thousands of servers in seconds over a BitTorrent swarm."""


def run(argv: list[str]) -> int:
    """Run the CLI; expected failures print one line and return an exit code."""
    try:
        result: Any = main.main(args=argv, prog_name="roost", standalone_mode=False)
    except RoostError as exc:
        click.echo(f"roost: error: {inert(exc)}", err=True)  # it may quote outside strings
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("roost: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("roost: interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0
