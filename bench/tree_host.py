"""Where a host's time goes in a tree deploy, phase by phase, without the network.

    python -m bench.tree_host --kind small --files 100000 --size-mib 200
    python -m bench.tree_host --kind mixed --files 2000 --size-mib 256

One host's side of two releases (a full one, then the next one: 5 % of the
bytes rewritten, 20 files added, 20 removed, 10 renamed), each phase as the
agent runs it, on tmpfs (as the fleet's hosts have it) and timed alone:

* prepare: validate the manifest, rebuild and prove the torrent, write them;
* fetch_setup: read the manifest, check the torrent against it, find and
  place the files a kept release holds, open the storage (make the files);
* write: every piece not already held written as the session would write it
  (each file's SHA-256 checked when its last piece lands);
* flush: what is left to fsync, and the proofs recorded;
* stage: read the manifest, prove every file, make the rest, apply metadata,
  rename to releases/<tag>.

The swarm, SSH and process start-up are not in it (bench.tree_delta and
bench.tree_small time whole deploys). The machine is shared: compare two
code versions run alternately (PYTHONPATH), not seconds across runs.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bench.tree_delta import make_tree, next_release
from bench.tree_small import make_modules
from roost.core.metainfo import parse
from roost.core.tree import check_torrent, proven_torrent
from roost.deploy import treepack
from roost.engine.treestorage import TreeStorage, proof_of
from roost.target import treestage
from roost.target.release import VERIFIED, Dest, Manifest, read_manifest, stage

T = TypeVar("T")


def _remember(path: Path, text: bytes) -> None:
    try:  # the record that the manifest was validated (absent before issue 16's cache)
        from roost.target.checked import remember
    except ImportError:
        path.write_bytes(text)
        return
    remember(path, text)


def one_release(src: Path, tag: str, dest: Dest, work: Path) -> dict[str, Any]:
    packed = treepack.build(src, tag)
    m = packed.manifest
    data = {"tag": tag, "format": "tree", "name": tag, "sha256": m.digest(),
            "size": m.total_size, "tree": m.to_dict()}
    text = json.dumps(data).encode()
    meta = parse(packed.torrent)
    pieces = b"".join(meta.info.piece_hash(i) for i in range(meta.info.num_pieces))
    reader = TreeStorage(meta.info, src, None)
    reader.open(create=False)
    payload = [reader.read_block(i, 0, meta.info.piece_size(i))
               for i in range(meta.info.num_pieces)]
    reader.close()
    deploy = work / f"deploy-{tag}"
    deploy.mkdir()
    manifest_path = deploy / "manifest.json"
    staging = dest.releases / f".{tag}.tmp-x"
    times: dict[str, float] = {}  # wall seconds
    cpu_times: dict[str, float] = {}  # CPU seconds of this process: steadier on a busy machine

    def phase(name: str, fn: Callable[[], T]) -> T:
        profile = os.environ.get("TREE_HOST_PROFILE") == f"{tag}:{name}"  # e.g. v2:stage
        profiler = cProfile.Profile() if profile else None
        cpu = time.process_time()
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        out = fn()
        if profiler is not None:
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(20)
        times[name] = round(time.perf_counter() - started, 3)
        cpu_times[name] = round(time.process_time() - cpu, 3)
        return out

    def prepare() -> None:
        manifest = Manifest.load(json.loads(text))
        assert manifest.tree is not None
        proven_torrent(manifest.tree, tag, pieces)
        _remember(manifest_path, json.dumps(manifest.to_dict()).encode())

    def fetch_setup() -> tuple[TreeStorage, set[int]]:
        manifest = read_manifest(manifest_path)
        assert manifest.tree is not None
        check_torrent(manifest.tree, meta.info, meta.info_hash)
        staging.mkdir(mode=0o700)
        tags = [t for t in dest.release_tags() if t != tag]
        chosen, _, _ = treestage.find_reusable(dest.releases, dest.meta, tags, manifest.tree)
        treestage.place(staging, manifest.tree, chosen)
        sha = {e.path: e.sha256 for e in manifest.tree.files}
        proofs = {"/".join(p): proof_of(os.stat(staging.joinpath(*p), follow_symlinks=False),
                                        sha[p]) for p in chosen}  # as fetch records them
        have = treestage.held_pieces(meta.info, set(chosen))
        storage = TreeStorage(meta.info, staging, manifest.tree, done=set(chosen),
                              record=deploy / VERIFIED, proofs=proofs)
        storage.open(create=True)
        return storage, {i for i in range(meta.info.num_pieces) if not have[i]}

    phase("prepare", prepare)
    storage, wanted = phase("fetch_setup", fetch_setup)
    try:
        def write() -> None:
            for index in sorted(wanted):
                storage.write_piece(index, payload[index])

        phase("write", write)
        phase("flush", storage.flush)
    finally:
        storage.close()
    phase("stage", lambda: stage(dest, read_manifest(manifest_path), staging,
                                 record=deploy / VERIFIED))
    times["host_total"] = round(sum(times.values()), 3)
    cpu_times["host_total"] = round(sum(cpu_times.values()), 3)
    return {"wall": times, "cpu": cpu_times, "pieces_written": len(wanted)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("small", "mixed"), default="small")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--dir", default="/dev/shm", help="tmpfs, as the fleet's hosts")
    ns = parser.parse_args()
    rng = random.Random(16)
    work = Path(tempfile.mkdtemp(prefix="roost-tree-host-", dir=ns.dir))
    out: dict[str, Any] = {"kind": ns.kind, "files": ns.files, "size_mib": ns.size_mib}
    try:
        if ns.kind == "small":
            v1 = make_modules(work / "v1", ns.files, ns.size_mib, rng)
        else:
            v1 = make_tree(work / "v1", ns.size_mib, ns.files, rng)
        next_release(v1, work / "v2", rng) if ns.kind == "mixed" else _next_small(
            v1, work / "v2", rng)
        dest = Dest(work / "dest")
        dest.ensure()
        out["full"] = one_release(v1, "v1", dest, work)
        out["next"] = one_release(work / "v2", "v2", dest, work)
        print(json.dumps(out, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _next_small(src: Path, dst: Path, rng: random.Random) -> None:
    """The many-small-files tree's next release: 5 % of its files rewritten."""
    shutil.copytree(src, dst, symlinks=True)
    files = sorted(p for p in dst.rglob("*.js"))
    for p in rng.sample(files, len(files) // 20):
        p.write_bytes(os.urandom(p.stat().st_size))


if __name__ == "__main__":
    main()
