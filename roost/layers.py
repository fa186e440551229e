"""The layering contract of design.md, as data (checked by tests/test_layering.py).

The folders are the layers: a folder's rank covers every module in it, and
only modules that have not moved into a folder yet are listed one by one.

    rank 0  foundations: errors, bencode, bitfield, ratelimit (pure)
    rank 1  roost/core (the sans-IO swarm member: wire, picker, choker, policy),
            metainfo, the tracker's protocol and swarm state, roost/sim (the
            swarm simulator over those two) (pure)
    rank 2  roost/engine (the asyncio adapter of the core), target-side
            system work (release, hostops, hashing...), the tracker server
    rank 3  roost/deploy (the operator's orchestrator), the agent entry
    rank 4  roost/commands and the CLI

Rank 0-1 modules are pure: no sockets, files, clock or asyncio. Target-side
modules run on bare hosts from a zipapp and import only the standard library.
A module may import roost modules of its own rank or below, never above; and
no module imports itself back through others (tests/test_import_cycles.py).
"""

from __future__ import annotations

#: folder or module -> rank; the longest matching prefix wins
RANKS: dict[str, int] = {
    # foundations
    "roost": 0,  # the package __init__ (version only)
    "roost.errors": 0,
    "roost.bencode": 0,
    "roost.bitfield": 0,
    "roost.ratelimit": 0,
    "roost.layers": 0,
    "roost.inert": 0,
    # the pure core
    "roost.core": 1,  # folder
    "roost.metainfo": 1,
    "roost.tree": 1,
    "roost.tracker": 1,  # folder; its server half is rank 2, below
    "roost.tracker.protocol": 1,
    "roost.tracker.swarm": 1,
    "roost.sim": 1,  # folder: the swarm simulator, the core and the tracker's swarm, pure
    # adapters and target-side system work
    "roost.engine": 2,  # folder
    "roost.hashing": 2,
    "roost.release": 2,
    "roost.fsutil": 2,
    "roost.treestage": 2,
    "roost.hostops": 2,
    "roost.hostlock": 2,
    "roost.preflight": 2,
    "roost.torrentfile": 2,
    "roost.pipes": 2,
    "roost.tracker.server": 2,
    "roost.tracker.connections": 2,
    "roost.tracker.state": 2,
    "roost.signing": 2,
    "roost.pullagent": 2,
    # the operator side
    "roost.agent": 3,
    "roost.zipapp": 3,
    "roost.deploy": 3,  # folder
    "roost.coordinator": 3,
    "roost.ui": 3,
    "roost.cli": 4,
    "roost.commands": 4,  # folder
    "roost.__main__": 4,
}
PURE_MAX_RANK = 1

#: standard-library modules a pure module may not import
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
    ("roost.release", "roost.engine"),
)

#: modules that run on target hosts: standard library only, shipped in the zipapp
TARGET_SIDE: tuple[str, ...] = (
    "roost",
    "roost.errors",
    "roost.inert",
    "roost.bencode",
    "roost.bitfield",
    "roost.ratelimit",
    "roost.metainfo",
    "roost.core",
    "roost.tree",
    "roost.hashing",
    "roost.engine",
    "roost.release",
    "roost.fsutil",
    "roost.treestage",
    "roost.hostops",
    "roost.hostlock",
    "roost.preflight",
    "roost.torrentfile",
    "roost.pipes",
    "roost.agent",
    "roost.signing",
    "roost.pullagent",
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
