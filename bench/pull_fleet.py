"""Pull mode on a namespace fleet (root): N `roost agent`s, one `roost publish`.

Runs the fleet test's scenario at a chosen size and prints each publish's report
timings as JSON lines: a first release to every host at once, then one through a
canary and two batches behind an on-host health check.

    sudo python -m bench.pull_fleet --hosts 16 --size-mib 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tests.pull.fleet import PullFleet, summary
from tests.pull.harness import release_tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--size-mib", type=float, default=8.0)
    args = parser.parse_args()
    size = int(args.size_mib * 2**20)
    with tempfile.TemporaryDirectory(prefix="roost-pull-bench-") as tmp, \
            PullFleet(args.hosts) as fleet:
        fleet.start_agents()
        base = Path(tmp)
        runs = [("v1", ()), ("v2", ("--canary", "1", "--batch", "50%",
                                    "--health-check", "./check.sh"))]
        for tag, extra in runs:
            code, report, err = fleet.publish(release_tree(base, tag, size=size), "--tag", tag,
                                              "--timeout", "600", *extra)
            print(json.dumps({"tag": tag, "hosts": args.hosts, "size": size, "exit": code,
                              **json.loads(summary(report))}))
            if code != 0:
                print(err[-3000:])
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
