"""Target side: the read-only probe behind `roost deploy --dry-run` (standard library only).

It is sent as the text of `python3 -I -c` — never installed — so a dry run
writes nothing on a host; it therefore imports nothing from roost, and it
keeps to syntax Python 3.7 loads, so that an old interpreter is reported by
version rather than failing to start. It
prints one JSON line (python version, clock, free space and writability of
the destination or its nearest existing parent, current release, deploy lock
state, the address it would announce), then listens on the first free port
of the peer port range and waits for the deploy host to connect to it,
printing a second line {"accepted": true|false}.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import socket
import sys
import time


def nearest_existing(path: str) -> str:
    while not os.path.exists(path) and path not in ("/", ""):
        path = os.path.dirname(path)
    return path or "/"


def lock_state(dest: str) -> str:
    # the same rule as roost.target.hostlock.inspect_lock, repeated: this file travels alone
    try:
        fd = os.open(os.path.join(dest, ".roost", "deploy.lock"), os.O_RDONLY)
    except FileNotFoundError:
        return "free"
    except OSError:
        return "unknown"
    try:
        record = os.read(fd, 65536).strip()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "held"
        return "stale" if record else "free"
    finally:
        os.close(fd)


def route_source(target: str) -> str:
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((target, 9))
        return str(s.getsockname()[0])


def listen_in_range(address: str, first: int, last: int) -> socket.socket | None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for port in range(first, last + 1):
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.bind((address, port))
            s.listen(1)
            return s
        except OSError:
            s.close()
    return None


def _is_local(address: str) -> bool:
    """Whether this host owns `address` (bind to port 0 works). A copy of
    roost.target.hostops.is_local: this file travels alone and imports nothing of roost."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


def held_files(dest: str, wanted: list[str]) -> str:
    """Hex bitmap: bit i set when some kept release holds a file with SHA-256
    wanted[i] whose recorded proof (inode, size, mtime_ns, ctime_ns) still
    matches (the rule of roost.target.treestage, repeated: this file travels alone).
    A file whose proof is stale may still be reused after a fresh hash, so
    the estimate can only err towards fetching more."""
    held = set()
    trees = os.path.join(dest, ".roost", "trees")
    names = sorted(os.listdir(trees)) if os.path.isdir(trees) else []
    for name in names:
        release = os.path.join(dest, "releases", name[:-5])
        if not name.endswith(".json") or name.startswith(".") or not os.path.isdir(release):
            continue
        try:
            with open(os.path.join(trees, name)) as f:
                files = json.load(f).get("files", {})
        except (OSError, ValueError, AttributeError):
            continue
        for rel, proof in files.items():
            if not isinstance(proof, list) or len(proof) != 5 or proof[0] in held:
                continue
            try:
                st = os.lstat(os.path.join(release, rel))
            except (OSError, ValueError):
                continue
            if [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns] == proof[1:]:
                held.add(proof[0])
    bits = 0
    for i, digest in enumerate(wanted):
        if digest in held:
            bits |= 1 << i
    return format(bits, "x")


def probe(ns: argparse.Namespace) -> dict[str, object]:
    base = nearest_existing(ns.dest)
    vfs = os.statvfs(base)
    current = None
    with contextlib.suppress(OSError):
        current = os.path.basename(os.readlink(os.path.join(ns.dest, "current")))
    return {
        "python": list(sys.version_info[:3]),
        "time": time.time(),
        "dest_exists": os.path.isdir(ns.dest),
        "checked_dir": base,
        "writable": os.access(base, os.W_OK | os.X_OK),
        "free_bytes": vfs.f_bavail * vfs.f_frsize,
        "current": current,
        "have_tag": os.path.isdir(os.path.join(ns.dest, "releases", ns.tag)),
        "lock": lock_state(ns.dest),
        "euid": os.geteuid(),
        **({"held": held_files(ns.dest, sys.stdin.read().split())} if ns.wanted_stdin else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="roost-preflight")
    parser.add_argument("--dest", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--tracker-host", required=True)
    parser.add_argument("--port-range", default="6881-6999")
    parser.add_argument("--address", help="the address to announce (from configuration)")
    parser.add_argument("--wait", type=float, default=5.0)
    parser.add_argument("--wanted-stdin", action="store_true",
                        help="read SHA-256s (tree files) on stdin; report which are held")
    ns = parser.parse_args(argv)
    result = probe(ns)
    first, _, last = ns.port_range.partition("-")
    listener = None
    try:
        address = ns.address or route_source(ns.tracker_host)
        result["address"] = address
        listener = listen_in_range(address, int(first), int(last or first))
        if listener is None and ns.address and not _is_local(address):
            # forwarded to this host (NAT): the fetch listens on the wildcard, so do we
            result["forwarded"] = True
            wildcard = "::" if ":" in address else "0.0.0.0"
            listener = listen_in_range(wildcard, int(first), int(last or first))
    except (OSError, ValueError) as exc:
        result["address_error"] = str(exc)
    result["port"] = listener.getsockname()[1] if listener else None
    print(json.dumps(result), flush=True)
    accepted = False
    if listener is not None:
        listener.settimeout(ns.wait)
        try:
            conn, _ = listener.accept()
            conn.close()
            accepted = True
        except OSError:
            pass
        listener.close()
    print(json.dumps({"accepted": accepted}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
