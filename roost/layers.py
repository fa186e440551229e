"""The layering contract of design.md, as data (checked by tests/test_layering.py).

The folders are the layers; a folder's rank covers every module in it.

    rank 0  roost/errors, roost/layers: the shared vocabulary
    rank 1  roost/core: the codecs (bencode, metainfo, the tree manifest, both
            halves of the tracker protocol), the tracker's swarm state and the
            sans-IO swarm member; roost/sim runs them (pure)
    rank 2  roost/engine: the asyncio adapter of the core (sockets, disk,
            hashing, tracker HTTP); roost/tracker: the tracker's HTTP server
    rank 3  roost/target: what runs on a host (releases, host operations,
            the fetch/seed commands, the agent and the pull agent)
    rank 4  roost/deploy: the operator's SSH orchestrator and its output
    rank 5  roost/commands: the CLI, one module per subcommand

Rank 0-1 modules are pure: no sockets, files, clock or asyncio. Ranks 0-3
(except roost/sim and roost/tracker) run on bare hosts from a zipapp and
import only the standard library. A module may import roost modules of its
own rank or below, never above; and no module imports itself back through
others (tests/test_import_cycles.py).
"""

from __future__ import annotations

#: folder -> rank; the longest matching prefix wins
RANKS: dict[str, int] = {
    "roost": 0,  # the package __init__ (version only)
    "roost.errors": 0,
    "roost.layers": 0,
    "roost.core": 1,
    "roost.sim": 1,
    "roost.engine": 2,
    "roost.tracker": 2,
    "roost.target": 3,
    "roost.deploy": 4,
    "roost.commands": 5,
    "roost.__main__": 5,
}
PURE_MAX_RANK = 1

IMPURE_STDLIB = frozenset(
    {
        "asyncio",
        "socket",
        "time",
        "os",
        "pathlib",
        "io",
        "shutil",
        "tempfile",
        "subprocess",
        "threading",
        "selectors",
        "ssl",
        "signal",
        "concurrent",
        "multiprocessing",
        "http",
        "urllib.request",
        "mmap",
        "fcntl",
        "glob",
    }
)

#: siblings of one rank that must stay apart (importer prefix, forbidden prefix)
FORBIDDEN_EDGES: tuple[tuple[str, str], ...] = (
    ("roost.engine", "roost.tracker"),
    ("roost.tracker", "roost.engine"),
    # activation and rollback must work on a host whose engine cannot start
    ("roost.target.release", "roost.engine"),
)

#: folders that run on target hosts: standard library only, shipped in the zipapp
TARGET_SIDE: tuple[str, ...] = (
    "roost",
    "roost.errors",
    "roost.core",
    "roost.engine",
    "roost.target",
)


def rank_of(module: str) -> int | None:
    best: str | None = None
    for prefix in RANKS:
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return None if best is None else RANKS[best]


def is_target_side(module: str) -> bool:
    return any(
        module == prefix or (prefix != "roost" and module.startswith(prefix + "."))
        for prefix in TARGET_SIDE
    )
