"""The `roost` console command.

Target-side commands (fetch, seed, activate...) are dispatched to the
argparse agent *before* anything outside the standard library is imported,
so the same entry point works from a zipapp on a bare host. Everything else
goes to the click CLI.
"""

from __future__ import annotations

import contextlib
import os
import sys

from roost.target.agent import AGENT_COMMANDS


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the program itself: a deploy may have asked it to die with it
        from roost.target.lifeline import honour_request

        honour_request()
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in AGENT_COMMANDS:
        from roost.target.agent import main as agent_main

        return agent_main(args)
    from roost.commands.cli import run

    code = run(args)
    if argv is None:  # the program itself (console script, python -m roost), not a caller
        exit_now(code)
    return code


def exit_now(code: int) -> None:
    """End an operator command without the interpreter's teardown. By now the command
    has finished: its event loop is closed, its threads joined, its scratch removed
    and its report written. What remains is freeing every object of aiohttp,
    asyncssh, rich and the deploy one by one: 0.2 s of CPU after a 4-host deploy,
    0.5-4 s of wall time on a loaded machine, between the report and the exit that
    a CI job or script waits for. The output streams are flushed first."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to say
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
