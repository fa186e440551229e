"""Replay the checked-in corpus (tests/fuzz/corpus/<parser>/*.bin) through every parser.

Every file goes through every target, not only its own parser's: a torrent is
also a fine hostile wire stream. The property is the one of targets.py: the
target returns, or raises its documented protocol error. Some corpus files
carry an expectation in their name, checked on their own parser as well:
real torrents made by mktorrent/transmission/libtorrent must parse, and the
hand-written hostile torrents (unsafe names and paths) must be refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS, check

CORPUS = Path(__file__).resolve().parent / "corpus"
FILES = sorted(CORPUS.glob("*/*.bin"))
PURE_DIRS = sorted({t.corpus for t in TARGETS.values()})


def test_corpus_is_present_and_covers_every_parser() -> None:
    dirs = {p.parent.name for p in FILES}
    assert set(PURE_DIRS) | {"admin_api"} <= dirs, dirs
    real = [p for p in FILES if p.parent.name == "metainfo" and p.stem.startswith("real-")]
    makers = {p.stem.split("-")[1] for p in real}
    assert {"roost", "mktorrent", "transmission", "libtorrent"} <= makers, makers


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_corpus_file_through_every_target(name: str) -> None:
    target = TARGETS[name]
    outcomes: dict[str, int] = {"ok": 0, "refused": 0}
    for path in FILES:
        data = path.read_bytes()
        try:
            outcomes[check(target, data)] += 1
        except Exception as exc:  # report which file broke the property
            raise AssertionError(
                f"{name} raised {type(exc).__name__}: {exc} on {path.relative_to(CORPUS)}"
            ) from exc
    # a target that refuses everything (or accepts everything) is not being exercised
    assert outcomes["ok"] > 0 and outcomes["refused"] > 0, outcomes


def _own(parser: str, prefix: str) -> list[Path]:
    return [p for p in FILES if p.parent.name == parser and p.stem.startswith(prefix)]


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in FILES
        if p.parent.name == "metainfo" and "-mut" not in p.stem and p.stem.startswith("real-")
    ],
    ids=lambda p: p.stem,
)
def test_real_torrents_parse(path: Path) -> None:
    assert check(TARGETS["metainfo"], path.read_bytes()) == "ok"


UNSAFE = [p for p in FILES if p.parent.name == "metainfo" and p.stem.startswith(("name-", "path-"))]


@pytest.mark.parametrize("path", UNSAFE, ids=lambda p: p.stem)
def test_unsafe_names_and_paths_are_refused(path: Path) -> None:
    assert check(TARGETS["metainfo"], path.read_bytes()) == "refused"


def test_valid_seeds_are_accepted_by_their_parser() -> None:
    """Sanity of the seeds: the valid cases parse, so mutants start from real input."""
    for parser, prefix, target in [
        ("wire", "valid-", "wire_stream"),
        ("tracker_query", "announce-valid", "tracker_query"),
        ("tracker_response", "announce-", "tracker_response"),
        ("bencode", "valid-", "bencode"),
        ("wire_raw", "handshake-valid", "wire_raw"),
    ]:
        files = [p for p in _own(parser, prefix) if "-mut" not in p.stem]
        assert files, (parser, prefix)
        for path in files:
            assert check(TARGETS[target], path.read_bytes()) == "ok", path
            if target == "wire_stream":  # wire_chunked: byte 0 picks the chunk size
                for size in (0, 6, 15):
                    chunked = bytes([size]) + path.read_bytes()
                    assert check(TARGETS["wire_chunked"], chunked) == "ok", (path, size)


def test_real_tools_still_make_torrents_we_parse(tmp_path: Path) -> None:
    """Fresh torrents from the installed mktorrent, transmission-create and libtorrent."""
    from tests.conftest import require_module, require_tool
    from tests.fuzz.make_corpus import real_torrents

    require_tool("mktorrent")
    require_tool("transmission-create")
    require_module("libtorrent")
    made = real_torrents(tmp_path)
    assert len(made) == 7, sorted(made)
    for name, data in made.items():
        assert check(TARGETS["metainfo"], data) == "ok", name


def test_checked_in_corpus_matches_make_corpus(tmp_path: Path) -> None:
    """The corpus is what tests/fuzz/make_corpus.py writes (so it can be regenerated).

    transmission-create stamps a creation date, so its torrents and their
    mutants are compared by name only."""
    from tests.fuzz.make_corpus import build, write

    write(build(use_tools=False), tmp_path)
    fresh = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.glob("*/*.bin")}
    stored = {str(p.relative_to(CORPUS)): p.read_bytes() for p in FILES}
    no_tools = {k: v for k, v in stored.items() if "real-" not in k}
    assert set(fresh) == set(no_tools)
    assert all(fresh[k] == no_tools[k] for k in fresh), [
        k for k in fresh if fresh[k] != no_tools[k]
    ]
