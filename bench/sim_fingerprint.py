"""Fingerprints of fixed simulator runs: a change that alters results shows here.

    python -m bench.sim_fingerprint            # one line per scenario: name, digest, events, CPU s
    python -m bench.sim_fingerprint --json

A fingerprint is the SHA-256 of every receiver's completion time (repr, to
the bit), the dead and unfinished hosts, the event count, the announces, the
bytes moved, the end time and the failed piece checks. tests/sim/
test_fingerprints.py pins the digests of these scenarios; a speed-up of the
core or of the simulator's driver must leave them unchanged (docs/sim.md,
"Seventh pass"). A change that alters results on purpose updates the pins
and says why.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

from roost.sim.scenario import Scenario
from roost.sim.world import World

KIB = 1024
MIB = 1024 * KIB

#: small, each a few CPU seconds; together they reach the admission policy's
#: full table (N > max_peers), eviction, zones, slow, dying, restarting and late
#: hosts, corrupt senders, the full assembly and the lean one, 16 KiB and coarse
#: picker blocks
SCENARIOS: dict[str, Scenario] = {
    "small-full": Scenario(n=50, size=4 * MIB, rate_mbit=100.0, piece_length=128 * KIB),
    "crowd-lean": Scenario(
        n=80, size=1 * MIB, rate_mbit=100.0, piece_length=128 * KIB,
        picker_block=128 * KIB, lean=True, seed=7,
    ),
    "faults-zones": Scenario(
        n=40, size=4 * MIB, rate_mbit=100.0, piece_length=64 * KIB, lean=True,
        zones=4, slow_frac=0.1, die_frac=0.05, restart_after=1.0, late_frac=0.1,
        late_window=1.0, latency=0.002, seed=3,
    ),
    "corrupt-loss": Scenario(
        n=30, size=2 * MIB, rate_mbit=40.0, piece_length=64 * KIB, corrupt=2,
        loss=0.01, latency=0.005, seed=5,
    ),
}


def fingerprint(sc: Scenario) -> tuple[str, int]:
    """(digest, events) of one run."""
    world = World(sc)
    r = world.run()
    record = {
        "times": sorted((k, repr(v)) for k, v in r.times.items()),
        "dead": sorted(r.dead),
        "unfinished": sorted(r.unfinished),
        "events": r.events,
        "announces": r.announces,
        "bytes": r.bytes_moved,
        "end": repr(r.end_time),
        "hash_failures": world.hash_failures,
    }
    text = json.dumps(record, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest(), r.events


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.sim_fingerprint", description=__doc__.split("\n")[0]
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("names", nargs="*", help="scenarios (default: all)")
    args = p.parse_args(argv)
    names = args.names or list(SCENARIOS)
    for name in names:
        if name not in SCENARIOS:
            p.error(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    for name in names:
        start = time.process_time()
        digest, events = fingerprint(SCENARIOS[name])
        cpu = time.process_time() - start
        if args.json:
            row = {"name": name, "digest": digest, "events": events, "cpu_s": round(cpu, 2)}
            print(json.dumps(row))
        else:
            print(f"{name:14s} {digest} events={events} cpu={cpu:.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
