#!/usr/bin/env python3
"""HTTP fan-out receiver: GET the payload from the origin, then verify and record."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request

from verify_done import verify_and_record  # same directory


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True)
    ap.add_argument("--dest", required=True)
    ap.add_argument("--sha256", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--timeout", type=float, default=3600)
    a = ap.parse_args()
    deadline = time.monotonic() + a.timeout
    while True:  # retry connection refusals/resets until the deadline
        try:
            with urllib.request.urlopen(a.url, timeout=60) as r, open(a.dest, "wb") as f:
                while chunk := r.read(1 << 16):
                    f.write(chunk)
            break
        except OSError as e:
            if time.monotonic() > deadline:
                print(f"giving up: {e}", file=sys.stderr)
                return 1
            time.sleep(0.2)
    t_complete = time.time()
    return 0 if verify_and_record(a.dest, a.sha256, a.out, a.host, t_complete) else 1


if __name__ == "__main__":
    sys.exit(main())
