"""The deploy's origin seeder, started early: `python -m roost.deploy.originproc`.

It imports the engine and then waits for one line on stdin: the `roost seed`
command's arguments, as a JSON list of strings. The deploy starts it while the
hosts are reached, so its interpreter start and imports (0.3-0.4 s of CPU, and
2-3 s of wall time while 16 hosts' fetches start on the same cores) overlap the
SSH round trips instead of delaying the hosts' first bytes; it gives the
arguments once every host has prepared and the allowlist is known. Until then it
has opened nothing and listens nowhere. Stdin closing first: exit 0, nothing done.
"""

from __future__ import annotations

import json
import sys

MAX_ARGS_LINE = 1 << 20  # the seed's argv: paths, a URL and an allowlist


def read_argv(line: str) -> list[str] | None:
    """The seed's argv from its line; None for anything else (a deploy's own bug)."""
    try:
        argv = json.loads(line)
    except ValueError:
        return None
    if not isinstance(argv, list) or not argv or argv[0] != "seed" \
            or not all(isinstance(a, str) for a in argv):
        return None
    return argv


def main() -> int:
    # warm: the modules the seed will run, imported while the deploy reaches its hosts
    import roost.engine.session
    import roost.target.fetch_seed  # noqa: F401
    from roost.target.agent import main as agent_main

    line = sys.stdin.readline(MAX_ARGS_LINE)
    if not line:
        return 0  # the deploy ended (or refused) before it needed an origin
    argv = read_argv(line)
    if argv is None:
        print("roost origin: error: the deploy sent no seed command", file=sys.stderr)
        return 2
    return agent_main(argv)


if __name__ == "__main__":
    from roost.target.lifeline import honour_request

    honour_request()
    sys.exit(main())
