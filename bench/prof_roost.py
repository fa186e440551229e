"""Profile roost processes of a lab run, and sum the profiles.

    # run `python -m roost ARGS` under cProfile (the main thread's CPU clock),
    # the profile dumped to OUT when it exits (SIGTERM included: the engine stops cleanly)
    python bench/prof_roost.py run OUT fetch {torrent} --dir {dest} ...

    # e.g. every receiver of a lab run:
    python -m bench.efficiency --n 16 --size 256MiB --rate 40 --tools roost --no-selfcheck \\
      --roost-fetch-cmd "{python} $PWD/bench/prof_roost.py run /dev/shm/prof/{ip}.prof fetch \\
      {torrent} --dir {dest} --bind {ip} --port {port} --json --quiet --linger 1000000"

    # per process: CPU, calls, and the named functions' calls and cumulative time
    python bench/prof_roost.py sum /dev/shm/prof _receive _on_haves fill_requests pick

cProfile's per-call cost inflates small functions: compare two runs'
figures with each other, not with a run without the profiler.
"""

from __future__ import annotations

import cProfile
import glob
import pstats
import runpy
import sys
import time


def run(out: str, args: list[str]) -> None:
    sys.argv = ["roost", *args]
    prof = cProfile.Profile(time.thread_time)
    prof.enable()
    try:
        runpy.run_module("roost", run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        prof.disable()
        prof.dump_stats(out)


def summarize(folder: str, names: list[str]) -> None:
    files = sorted(glob.glob(f"{folder}/*.prof"))
    if not files:
        sys.exit(f"no *.prof in {folder}")
    stats = pstats.Stats(*files)
    table = stats.stats  # type: ignore[attr-defined]
    n = len(files)
    total = sum(row[2] for row in table.values())
    calls = sum(row[1] for row in table.values())
    print(f"{n} profiles: {total / n:.3f} s and {calls / n:,.0f} calls per process")
    rows = sorted(table.items(), key=lambda kv: -kv[1][3])
    for (path, _line, name), (_cc, nc, _tt, ct, _callers) in rows:
        if name in names and "/roost/" in path:
            where = f"{path.split('/roost/')[-1]}:{name}"
            print(f"{where:50s} {nc / n:10,.0f} calls  {ct / n:7.3f} s  {100 * ct / total:5.1f} %")


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "sum":
        summarize(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
