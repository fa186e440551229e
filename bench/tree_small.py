"""Many small files: a node_modules-like tree sent as a tree and as a tarball.

    sudo python -m bench.tree_small --hosts 16 --files 100000 --size-mib 200 --rate-mbit 100

One fleet (tests/fleet, real sshd per namespace host, htb-shaped links), one
tree, two deploys in the same run: `--format tree` (the default) and
`--format tar`, each timed from command start to exit, with the bytes on
the wire from tc counters and the tree's padding from the report. The
machine is shared: compare the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.tree_delta import check_trees, deploy
from tests.fleet.fleet import Fleet


def make_modules(root: Path, files: int, size_mib: int, rng: random.Random) -> Path:
    """Packages of a few dozen small files each, nested two or three levels."""
    mean = size_mib * 2**20 / files
    made = 0
    pkg = 0
    while made < files:
        base = root / "node_modules" / f"pkg{pkg:05d}"
        (base / "lib").mkdir(parents=True)
        (base / "dist" / "esm").mkdir(parents=True)
        for i in range(min(rng.randint(10, 60), files - made)):
            sub = ("lib", "dist", "dist/esm", ".")[i % 4]
            n = max(1, min(int(rng.expovariate(1 / mean)), 512 * 1024))
            (base / sub / f"m{i:03d}.js").write_bytes(os.urandom(n))
            made += 1
        pkg += 1
    return root


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--rate-mbit", type=float, default=100)
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="roost-tree-small-", dir="/var/tmp"))
    out: dict[str, Any] = {"hosts": ns.hosts, "files": ns.files}
    try:
        src = make_modules(work / "app", ns.files, ns.size_mib, random.Random(7))
        # tmpfs gives each small file a whole page: 100,000 files of 2 KiB take ~400 MiB
        with Fleet(ns.hosts, dest_size=f"{ns.size_mib * 6 + 512}m") as fleet:
            fleet.shape(ns.rate_mbit)
            for fmt, tag in (("tar", "t1"), ("tree", "t2")):
                for i in range(fleet.n):  # nothing to reuse, and room for this one
                    fleet.ssh(i, f"rm -rf {fleet.dest}/releases/* {fleet.dest}/current "
                                 f"{fleet.dest}/.roost/trees", timeout=300)
                seconds, wire, report, _cpu = deploy(fleet, src, tag, ns.rate_mbit,
                                               ["--format", fmt])
                out[fmt] = {"seconds": round(seconds, 2), "wire_bytes": wire,
                            "size": report["payload"]["size"],
                            "padding": report["payload"].get("padding"),
                            "timings": report["timings"],
                            "identical": check_trees(fleet, f"{fleet.dest}/current", src)}
            tree, tar = out["tree"], out["tar"]
            out["tree_vs_tar_time"] = round(tree["seconds"] / tar["seconds"], 3)
            out["padding_share"] = round((tree["padding"] or 0) / tree["size"], 4)
        print(json.dumps(out, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
