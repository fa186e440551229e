"""Benchmark: `roost make` against `mktorrent -t <cores>` on the same file.

Both hash the same 2 GiB file (page cache warmed first, on tmpfs by default)
with the same piece size; each is run alternately `--rounds` times and the
best time of each is compared. Prints one JSON line and a sentence.

    python -m bench.make_bench --size-mib 2048 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_payload(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        for i in range(size >> 20):
            f.write(block[i % 7 :] + block[: i % 7])  # not all identical blocks


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--piece-kib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="/dev/shm", help="where to put the payload")
    args = parser.parse_args()
    mktorrent = shutil.which("mktorrent")
    if not mktorrent:
        print("mktorrent is not installed", file=sys.stderr)
        return 2
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="roost-makebench-") as tmp:
        payload = Path(tmp) / "payload.bin"
        write_payload(payload, args.size_mib << 20)
        piece_exp = (args.piece_kib * 1024).bit_length() - 1
        roost_cmd = [
            sys.executable,
            "-m",
            "roost",
            "make",
            str(payload),
            "-o",
            f"{tmp}/r.torrent",
            "--force",
            "--no-date",
            "--public",
            "--piece-size",
            f"{args.piece_kib}K",
            "-t",
            "http://127.0.0.1:1/a",
        ]
        mk_cmd = [
            mktorrent,
            "-t",
            str(cores),
            "-l",
            str(piece_exp),
            "-a",
            "http://127.0.0.1:1/a",
            "-o",
            f"{tmp}/m.torrent",
            str(payload),
        ]
        times: dict[str, list[float]] = {"roost": [], "mktorrent": []}
        for _ in range(args.rounds):
            Path(f"{tmp}/m.torrent").unlink(missing_ok=True)
            times["mktorrent"].append(timed(mk_cmd))
            times["roost"].append(timed(roost_cmd))
        same = _info(Path(f"{tmp}/r.torrent")) == _info(Path(f"{tmp}/m.torrent"))
    best = {k: min(v) for k, v in times.items()}
    size = args.size_mib << 20
    result = {
        "bench": "make",
        "size_bytes": size,
        "piece_bytes": args.piece_kib * 1024,
        "cores": cores,
        "roost_s": round(best["roost"], 3),
        "mktorrent_s": round(best["mktorrent"], 3),
        "roost_MBps": round(size / best["roost"] / 1e6, 1),
        "mktorrent_MBps": round(size / best["mktorrent"] / 1e6, 1),
        "speed_ratio_roost_over_mktorrent": round(best["mktorrent"] / best["roost"], 3),
        "same_info_hash": same,
        "all_times": times,
        "commands": {"roost": roost_cmd, "mktorrent": mk_cmd},
    }
    print(json.dumps(result))
    print(
        f"roost make {result['roost_MBps']} MB/s, mktorrent -t {cores} "
        f"{result['mktorrent_MBps']} MB/s: roost is {result['speed_ratio_roost_over_mktorrent']}x"
        f" mktorrent's speed (same info-hash: {same})",
        file=sys.stderr,
    )
    return 0


def _info(path: Path) -> bytes:
    from roost.core.metainfo import parse

    return parse(path.read_bytes()).info_hash


if __name__ == "__main__":
    sys.exit(main())
