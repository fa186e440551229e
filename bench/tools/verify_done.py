#!/usr/bin/env python3
"""Receiver-side completion record: verify the copy, write <out> atomically.

Run inside a host namespace by every tool's receiver, the same way for all
tools: called (or imported) when the tool says the payload is complete; it
hashes the file with SHA-256 and writes a JSON record with the time the tool
finished (t_complete) and the time the copy was verified (t_verified).
Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify_and_record(path: str, expected: str, out: str, host: str, t_complete: float) -> bool:
    cpu0 = time.thread_time()
    try:
        got = sha256_file(path)
        size = os.path.getsize(path)
        error = ""
    except OSError as e:
        got, size, error = "", -1, str(e)
    rec = {
        "host": host,
        "t_complete": t_complete,
        "t_verified": time.time(),
        "sha256_ok": got == expected,
        "bytes": size,
        "error": error,
        # the hashing's own CPU: the runner takes it out of the tool's count
        "verify_cpu_s": time.thread_time() - cpu0,
    }
    tmp = f"{out}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(rec, f)
    os.replace(tmp, out)
    return bool(rec["sha256_ok"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--file", required=True)
    ap.add_argument("--sha256", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--t-complete", type=float, default=None)
    ap.add_argument("extra", nargs="*", help="ignored (hook arguments)")
    a = ap.parse_args(argv)
    t = a.t_complete if a.t_complete is not None else time.time()
    return 0 if verify_and_record(a.file, a.sha256, a.out, a.host, t) else 1


if __name__ == "__main__":
    sys.exit(main())
