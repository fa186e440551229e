"""Target-side entry point: argparse only, standard library only.

This module, and everything it imports, must run under `python3 -I -S` from
a zipapp on a host with nothing installed (tests/test_agent_stdlib.py proves
it). Subcommands register lazily so `roost fetch --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from roost import __version__
from roost.core.inert import inert
from roost.engine.pipes import EXIT_BROKEN_PIPE, reader_gone
from roost.errors import RoostError
from roost.target import Runner

#: subcommand -> "module:function" that adds its arguments and returns a runner
AGENT_COMMANDS: dict[str, str] = {
    "fetch": "roost.target.fetch_seed:add_fetch",
    "seed": "roost.target.fetch_seed:add_seed",
    "activate": "roost.target.release:add_activate",
    "host-prepare": "roost.target.hostops:add_prepare",
    "host-status": "roost.target.hostops:add_status",
    "host-clean": "roost.target.hostops:add_clean",
    "host-rollback": "roost.target.hostops:add_rollback",
    "host-health": "roost.target.hostops:add_health",
    "host-lock": "roost.target.hostlock:add_lock",
    "host-origin": "roost.target.originseed:add_origin",
    "agent": "roost.target.pullagent:add_agent",
    "session": "roost.target.session:add_session",
}



def build_parser(command: str) -> tuple[argparse.ArgumentParser, Runner]:
    module_name, func_name = AGENT_COMMANDS[command].split(":")
    parser = argparse.ArgumentParser(prog=f"roost {command}")
    parser.add_argument("--version", action="version", version=f"roost {__version__}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RoostError(f"'roost {command}' is not available in this build ({exc})") from None
    adder: Callable[[argparse.ArgumentParser], Runner] = getattr(module, func_name)
    return parser, adder(parser)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in AGENT_COMMANDS:
        names = ", ".join(sorted(AGENT_COMMANDS))
        print(f"roost-agent: error: expected one of: {names}", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except BrokenPipeError:  # our reader went away: end quietly, as Unix tools do
        reader_gone(sys.stdout)
        return EXIT_BROKEN_PIPE


def _run(args: list[str]) -> int:
    command = args[0]
    try:
        parser, runner = build_parser(command)
        ns = parser.parse_args(args[1:])
        return runner(ns)
    except RoostError as exc:
        if "--json" in args:
            # imported here: its many record classes cost every fetch's start-up otherwise
            from roost.target.protocol import (
                MAX_TEXT,
                ErrorKind,
                ErrorRecord,
                HookRecord,
                kind_of_exit,
            )

            print(f"roost {command}: error: {inert(exc)}", file=sys.stderr)
            # the kind is the exit code's: the operator never reads it from the message;
            # a failing hook's captured output travels with its error (HookError.hooks)
            kind = kind_of_exit(exc.exit_code, ErrorKind.ERROR)
            hooks = tuple(h for h in getattr(exc, "hooks", ()) if isinstance(h, HookRecord))
            print(ErrorRecord(kind, str(exc)[:MAX_TEXT], hooks).to_json(), flush=True)
        else:
            print(f"roost {command}: error: {inert(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"roost {command}: interrupted", file=sys.stderr)
        return 130
