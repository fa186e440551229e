#!/usr/bin/env python3
"""Wrap a roost receiver: run it, record completion on its `complete` event.

Usage: roost_peer.py --file F --sha256 H --out O --host NAME -- ROOST-ARGV...

ROOST-ARGV must print JSON event lines on stdout (``roost fetch --json``).
When the line ``{"event": "complete", ...}`` arrives, this verifies F and
writes the completion record (verify_done), then keeps passing the child's
output through until the child exits or this wrapper gets SIGTERM, which it
forwards. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time

from verify_done import verify_and_record  # same directory


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--file", required=True)
    ap.add_argument("--sha256", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--event", default="complete", help="JSON event name that means done")
    ap.add_argument("argv", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    argv = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
    if not argv:
        ap.error("no roost command given")
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    recorded = False
    assert child.stdout is not None
    for line in child.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if recorded:
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("event") == a.event:
            recorded = True
            verify_and_record(a.file, a.sha256, a.out, a.host, time.time())
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
