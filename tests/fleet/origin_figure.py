"""Closing-note figure for `deploy --origin`: a narrow operator uplink, with and without
a wide origin host, back to back on the same fleet.

    sudo python -m tests.fleet.origin_figure --hosts 4 --size-mib 32 --rate-mbit 80 --runs 2

Hosts h0..h(N-1) are the targets; one more host holds the artifact and seeds it
with `--origin`. Every host link is capped at --rate-mbit, the deploy host's at
--narrow-mbit (default a tenth). Each run deploys once from the operator alone
and once with the origin host too, in turn; prints the transfer time (first
fetch start to last host fetched) and the whole deploy against the bound S·8/R,
and the bytes each side sent as the kernel counted them at its link.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tests.fleet.fleet import Fleet
from tests.fleet.helpers import deploy_argv, run_roost


def one(fleet: Fleet, src: Path, hosts: list[str], tag: str, rate: float, extra: list[str]
        ) -> dict[str, Any]:
    wide = len(fleet.hosts) - 1
    here, there = fleet.tx_bytes(), fleet.tx_bytes(wide)
    code, report, stderr = run_roost(deploy_argv(
        fleet, src, hosts, "--tag", tag, "--link-rate", f"{rate:g}mbit", "--timeout", "600",
        *extra), timeout=900)
    if code != 0:
        print(report["message"], [(h["host"], h["kind"], h["reason"]) for h in report["hosts"]
                                  if h["reason"]], stderr[-2000:])
    return {"exit": code, "transfer_s": report["timings"].get("transfer"),
            "total_s": report["timings"].get("total"),
            "bound_s": (report["bound"] or {}).get("bound_seconds"),
            "operator_sent_MB": round((fleet.tx_bytes() - here) / 1e6, 1),
            "origin_host_sent_MB": round((fleet.tx_bytes(wide) - there) / 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--rate-mbit", type=float, default=80)
    parser.add_argument("--narrow-mbit", type=float, help="the operator's link (rate / 10)")
    parser.add_argument("--runs", type=int, default=1)
    ns = parser.parse_args()
    narrow = ns.narrow_mbit or ns.rate_mbit / 10
    work = Path(tempfile.mkdtemp(prefix="roost-origin-figure-", dir="/var/tmp"))
    try:
        src = work / "app.bin"
        data = os.urandom(ns.size_mib * 2**20)
        src.write_bytes(data)
        # every run's two releases stay (keep 5), and the next is staged beside them
        dest_mib = ns.size_mib * (2 * ns.runs + 2) + 64
        with Fleet(ns.hosts + 1, dest_size=f"{dest_mib}m") as fleet:
            wide = ns.hosts
            path = f"{fleet.dest}/build/app.bin"
            fleet.put(wide, path, data)
            fleet.shape(ns.rate_mbit, origin_mbit=narrow)
            hosts = [h.address for h in fleet.hosts[:ns.hosts]]
            origin = ["--origin", f"{fleet.hosts[wide].address}:{path}"]
            rows = []
            for run in range(ns.runs):  # interleaved: the machine's load hits both alike
                for name, extra in (("operator only", []), ("with --origin", origin)):
                    row = one(fleet, src, hosts, f"r{run}-{len(rows)}", ns.rate_mbit, extra)
                    rows.append({"run": run, "deploy": name, **row})
                    print(json.dumps(rows[-1]), flush=True)
        print(f"hosts {ns.hosts}, {ns.size_mib} MiB, hosts {ns.rate_mbit:g} Mbit/s, "
              f"operator {narrow:g} Mbit/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
