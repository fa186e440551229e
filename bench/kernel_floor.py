"""What the lab's kernel alone costs to carry a fleet's traffic.

Every host of an N-receiver lab sends to `--fanout` other hosts at once with
iperf3 (a ring when fanout is 1), so the fleet moves about (N+1) x R, the
aggregate a swarm reaches at full speed. The CPU this takes (veth, bridge,
htb, TCP) is a floor under any tool's run: a tool that needs the machine's
two cores for its own work on top of it is CPU-bound, not link-bound.

    sudo python -m bench.kernel_floor --n 32 --rate 40 --fanout 8
"""

from __future__ import annotations

import argparse
import json
import sys

from bench.lab import Lab, LabError, NotRun
from bench.lab.cpu import CpuSampler
from bench.lab.selfcheck import parallel_flows_mbit


def measure(n: int, rate_mbit: float, fanout: int, seconds: float) -> dict[str, float]:
    with Lab(n + 1, rate_mbit) as lab:
        hosts = lab.hosts
        pairs = [
            (hosts[i], hosts[(i + k) % len(hosts)])
            for i in range(len(hosts))
            for k in range(1, fanout + 1)
        ]
        with CpuSampler() as cpu:
            split = parallel_flows_mbit(lab, pairs, seconds=seconds, omit=1)
        carried = split.total / (len(hosts) * rate_mbit)
        return {
            "hosts": len(hosts),
            "rate_mbit": rate_mbit,
            "flows": len(pairs),
            "fleet_mbit": round(split.total, 1),
            "share_of_links": round(carried, 3),
            "cpu_avg": round(cpu.avg, 3),
            "cpu_peak": round(cpu.peak, 3),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32, help="receivers (the origin is one more)")
    parser.add_argument("--rate", type=float, default=40.0, help="link Mbit/s")
    parser.add_argument("--fanout", type=int, default=8, help="flows each host sends")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = measure(args.n, args.rate, args.fanout, args.seconds)
    except (LabError, NotRun) as exc:
        print(f"kernel_floor: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['hosts']} hosts x {args.rate:g} Mbit/s, {result['flows']} flows: "
            f"fleet carried {result['fleet_mbit']} Mbit/s ({result['share_of_links']:.0%} of "
            f"the links); machine CPU avg {result['cpu_avg']:.0%}, peak {result['cpu_peak']:.0%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
