"""Remove fleet-lab leftovers: namespaces, their processes, temp dirs.

    python -m bench.lab_cleanup            # labs whose owner process is gone
    python -m bench.lab_cleanup --dry-run  # only list them
    python -m bench.lab_cleanup --all      # every lab, even of live owners
    python -m bench.lab_cleanup --prefix rl1234x0

Only objects named with a lab prefix (rl<pid>x<k>-...) are touched, and only
processes running inside those namespaces are signalled (by PID).
"""

from __future__ import annotations

import argparse
import os
import sys

from bench.lab.cleanup import find_leftovers, remove


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--all", action="store_true", help="also labs whose owner is alive")
    ap.add_argument("--prefix", help="only this lab (rl<pid>x<k>)")
    a = ap.parse_args(argv)
    if os.geteuid() != 0 and not a.dry_run:
        print("lab_cleanup needs root", file=sys.stderr)
        return 2
    found = find_leftovers(prefix=a.prefix, force=a.all)
    if found.empty():
        print("no lab leftovers")
        return 0
    for ns in found.namespaces:
        print(f"namespace {ns}")
    for pid in found.pids:
        print(f"process {pid} (inside a lab namespace)")
    for d in found.tempdirs:
        print(f"temp dir {d}")
    for group in found.cgroups:
        print(f"cgroup {group}")
    if a.dry_run:
        return 0
    errors = remove(found)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    print("removed" if not errors else "some leftovers could not be removed")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
