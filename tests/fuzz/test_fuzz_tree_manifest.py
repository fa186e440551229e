"""Property fuzzing of the tree manifest parser (roost.core.tree.parse_manifest).

Property: for any JSON value, near-valid manifests and their mutants
included, the parser returns or raises MetainfoError — never another
exception — and whatever it accepts is a tree that cannot write outside its
root: every path passes safe_relpath, no path appears twice, every parent is
a listed directory, and every symlink resolves inside the tree. The agent's
entry point (release.Manifest.load, as host-prepare calls it) raises only
UsageError.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from roost.core import metainfo, tree
from roost.errors import MetainfoError, UsageError
from roost.target.release import Manifest
from tests.fuzz.conftest import FUZZ, examples

_names = st.one_of(
    st.sampled_from(["a", "b", "bin", "..", ".", "", ".pad", "con", "x/y", "/", "a\x00",
                     "é", "\x01", "n" * 300]),
    st.text(max_size=6),
)
_paths = st.lists(_names, min_size=1, max_size=4).map("/".join)
_targets = st.one_of(st.sampled_from(["a", "../a", "a/../..", "/etc", "b/c", "..", ".", ""]),
                     _paths)
_ints = st.one_of(st.integers(-3, 0o20000), st.sampled_from([2**32, 2**63, -(2**63) - 1]),
                  st.booleans(), st.floats(allow_nan=False), st.text(max_size=3), st.none())


@st.composite
def entries(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["file", "dir", "symlink", "file", "fifo"]))
    out: dict[str, Any] = {"path": draw(_paths), "type": kind, "mode": 0o644, "uid": 0,
                           "gid": 0, "mtime_ns": 0}
    if kind == "file":
        out["size"] = draw(st.integers(0, 1 << 20))
        out["sha256"] = draw(st.sampled_from(["ab" * 32, "AB" * 32, "ab", 5]))
    if kind == "symlink":
        out["target"] = draw(_targets)
    for key in draw(st.lists(st.sampled_from([*sorted(out), "extra"]), max_size=2)):
        if draw(st.booleans()):
            out.pop(key, None)
        else:
            out[key] = draw(_ints)
    return out


@st.composite
def manifests(draw: st.DrawFn) -> Any:
    doc: dict[str, Any] = {"kind": tree.KIND, "version": 1, "info_hash": "0" * 40,
                           "piece_length": 1 << 14,
                           "entries": draw(st.lists(entries(), max_size=8))}
    if draw(st.integers(0, 4)) == 0:  # a mutated top level
        key = draw(st.sampled_from([*sorted(doc), "more"]))
        doc[key] = draw(st.one_of(_ints, st.lists(st.integers(), max_size=2)))
    return doc


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=5), children, max_size=3)),
    max_leaves=10,
)


def _check_accepted(m: tree.TreeManifest) -> None:
    kinds = {e.path: e.type for e in m.entries}
    assert len(kinds) == len(m.entries)
    for e in m.entries:
        assert metainfo.safe_relpath(e.path) == e.path
        for depth in range(1, len(e.path)):
            assert kinds[e.path[:depth]] == "dir"
        if e.type == "symlink":
            assert tree.link_stays_inside(e.path, e.target)
            assert not e.target.startswith("/")


@settings(FUZZ, max_examples=examples(500))
@given(st.one_of(manifests(), _json))
def test_parser_returns_a_safe_tree_or_refuses(doc: Any) -> None:
    try:
        m = tree.parse_manifest(doc)
    except MetainfoError:
        return
    _check_accepted(m)
    assert tree.parse_manifest(json.loads(json.dumps(m.to_dict()))) == m


@settings(FUZZ, max_examples=examples(200))
@given(manifests(), st.text(max_size=4), st.integers(0, 2**40))
def test_agent_manifest_load_raises_only_usage_errors(doc: Any, tag: str, size: int) -> None:
    wrapper = {"tag": tag or "v1", "format": "tree", "name": "tree", "sha256": "0" * 64,
               "size": size, "tree": doc}
    with contextlib.suppress(UsageError):
        Manifest.load(wrapper)


def test_strategy_reaches_both_outcomes() -> None:
    seen: set[str] = set()

    @settings(FUZZ, max_examples=examples(300), database=None)
    @given(manifests())
    def probe(doc: Any) -> None:
        try:
            tree.parse_manifest(doc)
            seen.add("ok")
        except MetainfoError:
            seen.add("refused")

    probe()
    assert seen == {"ok", "refused"}


@settings(FUZZ, max_examples=examples(200))
@given(st.lists(st.integers(0, 3 * tree.align_min(1 << 14)), min_size=1, max_size=60))
def test_layout_padding_is_bounded_and_files_keep_their_order(sizes: list[int]) -> None:
    plen = 1 << 14
    files = [((f"f{i:03d}",), n) for i, n in enumerate(sizes)]
    slots = tree.layout(files, plen)
    assert [s.path for s in slots if not s.pad] == [p for p, n in files if n]
    padding = sum(s.length for s in slots if s.pad)
    assert padding <= 0.05 * sum(n for _, n in files) + 0.0001
    offset = 0
    for s in slots:
        if not s.pad and s.length >= tree.align_min(plen):
            assert offset % plen == 0
        offset += s.length
