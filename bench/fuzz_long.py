"""Time-boxed long fuzz run of every hostile-input parser; prints cases per parser.

    python -m bench.fuzz_long [--seconds 60] [--only NAME ...] [--json OUT]

For each target of tests/fuzz/targets.py (and the tracker's JSON admin API
over HTTP on 127.0.0.1 port 0), half the time budget goes to hypothesis with
the suite's structured strategies (tests/fuzz/strategies.py), in batches until
the deadline, and half to a plain mutation loop over the checked-in corpus
(byte flips, splices, truncations, length-prefix rewrites), which is ~10x
faster per case. The property is the suite's: the parser returns or raises
its documented protocol error. A violating input is written to --crash-dir
and counted; the run goes on. Exit status 1 if anything violated.

Coverage-guided fuzzing (atheris) is not used: it is not installed here, and
the structured strategies already reach the deep checks (see
tests/fuzz/test_fuzz_parsers.py::test_strategy_reaches_both_outcomes).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.client
import json
import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzz.targets import IH, TARGETS, Target, check
from tests.fuzz.test_fuzz_parsers import CASES

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
BATCH = 300  # hypothesis examples per batch; the deadline is checked between batches
_LENGTHS = [b"0", b"9", b"4294967296", b"18446744073709551615", b"-1", b"99999999999"]


@dataclass
class Result:
    name: str
    seconds: float = 0.0
    structured: int = 0
    mutated: int = 0
    ok: int = 0
    refused: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.structured + self.mutated


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            del buf[pos:]
        elif op == 2:
            buf[pos:pos] = buf[pos : pos + rng.randint(1, 64)]
        elif op == 3:
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 4:
            buf[pos:pos] = rng.choice(_LENGTHS)
        else:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
    return bytes(buf[: 1 << 20])


def _record(res: Result, run: Callable[[], str], data: bytes, crash_dir: Path) -> None:
    try:
        outcome = run()
    except Exception as exc:  # a violation: keep the input, go on
        crash_dir.mkdir(parents=True, exist_ok=True)
        path = crash_dir / f"{res.name}-{hashlib.sha1(data).hexdigest()[:12]}.bin"
        path.write_bytes(data)
        res.violations.append(f"{type(exc).__name__}: {exc} ({path})")
        traceback.print_exc(limit=3)
        return
    if outcome == "ok":
        res.ok += 1
    else:
        res.refused += 1


def _seeds(target: Target) -> list[bytes]:
    own = sorted((CORPUS / target.corpus).glob("*.bin"))
    everything = sorted(CORPUS.glob("*/*.bin"))
    return [p.read_bytes() for p in own + everything if p.stat().st_size < 1 << 20]


def run_target(target: Target, seconds: float, crash_dir: Path, rng: random.Random) -> Result:
    res = Result(target.name)
    start = time.monotonic()
    half = start + seconds / 2
    strategy = CASES[target.name][0]

    @settings(
        max_examples=BATCH,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def batch(data: bytes) -> None:
        res.structured += 1
        _record(res, lambda: check(target, data), data, crash_dir)

    while time.monotonic() < half:
        batch()
    seeds = _seeds(target)
    end = start + seconds
    while time.monotonic() < end:
        for _ in range(200):
            data = mutate(rng.choice(seeds), rng)
            res.mutated += 1
            _record(res, functools.partial(check, target, data), data, crash_dir)
    res.seconds = round(time.monotonic() - start, 1)
    return res


def run_admin_api(seconds: float, crash_dir: Path, rng: random.Random) -> Result:
    """The JSON admin API over HTTP: any body gets a 2xx/4xx JSON answer, never a 500."""
    from roost.tracker.server import TrackerConfig
    from tests.fuzz.test_fuzz_admin_api import ADMIN_OK, BODY_ENDPOINTS, admin_bodies
    from tests.tracker.conftest import RunningTracker

    res = Result("admin_api")
    tracker = RunningTracker(TrackerConfig(host="127.0.0.1", port=0))
    try:
        tracker.admin("POST", "/admin/swarms", {"info_hash": IH.hex()})
        conn = http.client.HTTPConnection("127.0.0.1", tracker.port, timeout=20)
        headers = {"Authorization": f"Bearer {tracker.server.admin_token}"}

        def post(body: bytes) -> str:
            method, path = rng.choice(BODY_ENDPOINTS)
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status not in ADMIN_OK:
                raise AssertionError(f"{method} {path}: HTTP {resp.status} {raw[:100]!r}")
            json.loads(raw)
            return "ok" if resp.status < 400 else "refused"

        start = time.monotonic()
        half, end = start + seconds / 2, start + seconds

        @settings(
            max_examples=BATCH // 6,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(admin_bodies)
        def batch(body: bytes) -> None:
            res.structured += 1
            _record(res, lambda: post(body), body, crash_dir)

        while time.monotonic() < half:
            batch()
        seeds = [p.read_bytes() for p in sorted((CORPUS / "admin_api").glob("*.bin"))]
        while time.monotonic() < end:
            data = mutate(rng.choice(seeds), rng)
            res.mutated += 1
            _record(res, functools.partial(post, data), data, crash_dir)
        res.seconds = round(time.monotonic() - start, 1)
        conn.close()
    finally:
        tracker.stop()
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per parser (default 60)")
    parser.add_argument("--only", nargs="*", help="parser names (default: all)")
    parser.add_argument("--seed", type=int, default=1, help="mutation RNG seed")
    parser.add_argument("--crash-dir", type=Path, default=Path("/tmp/roost-fuzz-crashes"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    ns = parser.parse_args(argv)
    names = ns.only or [*sorted(TARGETS), "admin_api"]
    rng = random.Random(ns.seed)
    results = []
    print(f"{'parser':18} {'seconds':>7} {'structured':>10} {'mutated':>9} {'total':>9} "
          f"{'ok':>8} {'refused':>8} violations", flush=True)  # fmt: skip
    for name in names:
        if name == "admin_api":
            res = run_admin_api(ns.seconds, ns.crash_dir, rng)
        else:
            res = run_target(TARGETS[name], ns.seconds, ns.crash_dir, rng)
        results.append(res)
        print(f"{res.name:18} {res.seconds:7.1f} {res.structured:10} {res.mutated:9} "
              f"{res.total:9} {res.ok:8} {res.refused:8} {len(res.violations)}",
              flush=True)  # fmt: skip
        for v in res.violations[:5]:
            print(f"    {v}", flush=True)
    if ns.json:
        rows = [asdict(r) | {"total": r.total} for r in results]
        ns.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if any(r.violations for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
