"""The `roost` console command.

Target-side commands (fetch, seed, activate...) are dispatched to the
argparse agent *before* anything outside the standard library is imported,
so the same entry point works from a zipapp on a bare host. Everything else
goes to the click CLI.
"""

from __future__ import annotations

import sys

from roost.target.agent import AGENT_COMMANDS


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in AGENT_COMMANDS:
        from roost.target.agent import main as agent_main

        return agent_main(args)
    from roost.commands.cli import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
