"""The layering contract of design.md, as data (checked by tests/test_layering.py).

Rank 0-1 modules are pure: no sockets, files, clock or asyncio. Target-side
modules run on bare hosts from a zipapp and import only the standard library.
A module may import roost modules of its own rank or below, never above.
"""

from __future__ import annotations

#: module prefix -> rank; the longest matching prefix wins
RANKS: dict[str, int] = {
    "roost": 0,  # the package __init__ (version only)
    "roost.errors": 0,
    "roost.bencode": 0,
    "roost.bitfield": 0,
    "roost.ratelimit": 0,
    "roost.layers": 0,
    "roost.metainfo": 1,
    "roost.tree": 1,
    "roost.wire": 1,
    "roost.picker": 1,
    "roost.choker": 1,
    "roost.tracker": 1,  # the package __init__
    "roost.tracker.protocol": 1,
    "roost.tracker.swarm": 1,
    "roost.hashing": 2,
    "roost.engine": 2,
    "roost.release": 2,
    "roost.treestage": 2,
    "roost.hostops": 2,
    "roost.hostlock": 2,
    "roost.preflight": 2,
    "roost.torrentfile": 2,
    "roost.tracker.server": 2,
    "roost.tracker.state": 2,
    "roost.signing": 2,
    "roost.pullagent": 2,
    "roost.agent": 3,
    "roost.zipapp": 3,
    "roost.deploy": 3,
    "roost.coordinator": 3,
    "roost.ui": 3,
    "roost.cli": 4,
    "roost.commands": 4,
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
    "roost.bencode",
    "roost.bitfield",
    "roost.ratelimit",
    "roost.metainfo",
    "roost.tree",
    "roost.wire",
    "roost.picker",
    "roost.choker",
    "roost.hashing",
    "roost.engine",
    "roost.release",
    "roost.treestage",
    "roost.hostops",
    "roost.hostlock",
    "roost.preflight",
    "roost.torrentfile",
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
