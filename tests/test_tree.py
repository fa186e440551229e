"""roost.core.tree: the tree torrent's layout and the strict tree manifest parser."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from roost.core import bencode, metainfo, tree
from roost.errors import MetainfoError, UnsafePathError, UsageError
from roost.target.release import Manifest

P = 16 * 1024
SHA = "ab" * 32


def _entry(path: str, kind: str = "file", **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"path": path, "type": kind, "mode": 0o644, "uid": 0, "gid": 0,
                           "mtime_ns": 1}
    if kind == "file":
        out.update(size=kw.pop("size", 1), sha256=kw.pop("sha256", SHA))
    if kind == "symlink":
        out["target"] = kw.pop("target", "x")
    out.update(kw)
    return out


def _doc(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"kind": tree.KIND, "version": 1, "info_hash": "00" * 20, "piece_length": P,
            "entries": list(entries)}


VALID = _doc(_entry("bin", "dir"), _entry("bin/tool", size=10), _entry("run", "symlink",
             target="bin/tool"), _entry("empty", "dir"), _entry("bin/up", "symlink",
             target="../run"))


def test_a_valid_manifest_round_trips() -> None:
    m = tree.parse_manifest(copy.deepcopy(VALID))
    assert [e.relpath for e in m.entries] == ["bin", "bin/tool", "run", "empty", "bin/up"]
    assert tree.parse_manifest(json.loads(json.dumps(m.to_dict()))) == m
    assert m.total_size == 10 and [e.relpath for e in m.files] == ["bin/tool"]


HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "dotdot": (_doc(_entry("../etc/passwd")), "not allowed"),
    "dotdot-inside": (_doc(_entry("a", "dir"), _entry("a/../../x")), "not allowed"),
    "absolute": (_doc(_entry("/etc/passwd")), "absolute"),
    "escaping-symlink": (_doc(_entry("l", "symlink", target="../outside")), "escapes"),
    "absolute-symlink": (_doc(_entry("l", "symlink", target="/etc")), "escapes"),
    "symlink-climbs-through-a-name": (
        _doc(_entry("a", "dir"), _entry("a/l", "symlink", target="b/../../..")), "escapes"),
    "duplicate": (_doc(_entry("x"), _entry("x")), "twice"),
    "duplicate-file-and-dir": (_doc(_entry("x"), _entry("x", "dir")), "twice"),
    "file-through-a-file": (_doc(_entry("f"), _entry("f/g")), "runs through a file"),
    "file-through-a-symlink": (
        _doc(_entry("d", "dir"), _entry("l", "symlink", target="d"), _entry("l/x")),
        "runs through a symlink"),
    "no-parent": (_doc(_entry("a/b")), "no parent"),
    "pad-dir-at-top": (_doc(_entry(".pad", "dir")), "reserved"),
    "unknown-key": (_doc(_entry("x", extra=1)), "keys"),
    "missing-key": (_doc({k: v for k, v in _entry("x").items() if k != "mode"}), "keys"),
    "bool-as-int": (_doc(_entry("x", mode=True)), "mode"),
    "huge-mode": (_doc(_entry("x", mode=0o17777)), "mode"),
    "bad-sha": (_doc(_entry("x", sha256="zz")), "sha256"),
    "bad-type": (_doc(_entry("x", "fifo")), "file/dir/symlink"),
    "nul-in-path": (_doc(_entry("a\x00b")), "NUL"),
    "empty-component": (_doc(_entry("a", "dir"), _entry("a//b")), "not allowed"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_manifests_are_refused_with_one_sentence(case: str) -> None:
    doc, words = HOSTILE[case]
    with pytest.raises(MetainfoError) as info:
        tree.parse_manifest(doc)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_top_level_is_strict() -> None:
    for bad in ({**VALID, "more": 1}, {**VALID, "version": 2}, {**VALID, "piece_length": 3000},
                {**VALID, "info_hash": "XY" * 20}, {**VALID, "entries": {}}, [], "x"):
        with pytest.raises(MetainfoError):
            tree.parse_manifest(bad)


def test_unsafe_paths_are_unsafe_path_errors() -> None:
    with pytest.raises(UnsafePathError):
        tree.parse_manifest(HOSTILE["absolute"][0])
    with pytest.raises(UnsafePathError):
        tree.parse_manifest(HOSTILE["file-through-a-file"][0])


def test_release_manifest_checks_its_tree_digest() -> None:
    m = tree.parse_manifest(copy.deepcopy(VALID))
    good = {"tag": "v1", "format": "tree", "name": "tree", "sha256": m.digest(), "size": 10,
            "tree": m.to_dict()}
    assert Manifest.load(good).tree == m
    with pytest.raises(UsageError, match="does not match its tree"):
        Manifest.load({**good, "sha256": "0" * 64})
    with pytest.raises(UsageError, match="bad manifest"):
        Manifest.load({**good, "tree": HOSTILE["dotdot"][0]})


# --- layout ------------------------------------------------------------------------------


def _files(*sizes: int) -> list[tuple[tuple[str, ...], int]]:
    return [((f"f{i:03d}",), s) for i, s in enumerate(sizes)]


def test_large_files_start_and_end_on_piece_boundaries() -> None:
    big = tree.align_min(P)
    slots = tree.layout(_files(100, big + 5, 7, 3, big), P)
    offset = 0
    starts: dict[tuple[str, ...], int] = {}
    for s in slots:
        starts[s.path] = offset
        offset += s.length
    assert starts[("f001",)] % P == 0 and starts[("f002",)] % P == 0  # after the big one
    assert starts[("f004",)] % P == 0
    assert starts[("f003",)] == starts[("f002",)] + 7  # small files are packed
    pads = [s for s in slots if s.pad]
    assert all(s.path == (".pad", str(s.length)) and 0 < s.length < P for s in pads)
    assert slots[-1].path == ("f004",)  # no trailing pad


def test_empty_files_are_not_in_the_torrent() -> None:
    assert [s.path for s in tree.layout(_files(0, 5, 0), P)] == [("f001",)]


def test_padding_stays_under_five_percent_in_the_worst_case() -> None:
    big = tree.align_min(P)
    # every aligned file one byte past a boundary, each after a 1-byte packed file
    sizes: list[int] = []
    for _ in range(50):
        sizes += [1, big + 1]
    slots = tree.layout(_files(*sizes), P)
    padding = sum(s.length for s in slots if s.pad)
    total = sum(s.length for s in slots)
    assert 0 < padding <= 0.05 * total


def test_many_small_files_get_no_padding() -> None:
    slots = tree.layout(_files(*([1500] * 5000)), P)
    assert not any(s.pad for s in slots) and len(slots) == 5000


def _pieces(slots: list[tree.Slot], content: dict[tuple[str, ...], bytes]) -> list[bytes]:
    data = b"".join(bytes(s.length) if s.pad else content[s.path] for s in slots)
    return [data[i : i + P] for i in range(0, len(data), P)]


def test_an_unchanged_large_file_gives_the_same_pieces_in_the_next_release() -> None:
    big = tree.align_min(P) + 1234
    blob = bytes(range(256)) * (big // 256) + b"x" * (big % 256)
    v1 = {("a",): b"1" * 300, ("m",): blob, ("z",): b"z" * 50}
    v2 = {("a",): b"2" * 777, ("b",): b"new" * 99, ("m",): blob, ("z",): b"z" * 50}

    def pieces_of_m(content: dict[tuple[str, ...], bytes]) -> list[bytes]:
        slots = tree.layout(sorted((p, len(c)) for p, c in content.items()), P)
        offset = 0
        for s in slots:
            if s.path == ("m",):
                break
            offset += s.length
        assert offset % P == 0
        return _pieces(slots, content)[offset // P : (offset + big - 1) // P + 1]

    assert pieces_of_m(v1) == pieces_of_m(v2)


# --- the torrent itself -----------------------------------------------------------------


def _torrent(slots: list[tree.Slot]) -> bytes:
    total = sum(s.length for s in slots)
    pieces = b"\x00" * 20 * (-(-total // P))
    info = metainfo.build_info("v1", [(s.path, s.length, s.pad) for s in slots], P, pieces)
    return metainfo.build_torrent(info)


def test_pad_files_parse_and_may_share_a_path() -> None:
    big = tree.align_min(P)
    slots = tree.layout(_files(3, big + 1, 3, big + 1, 5), P)
    pads = [s for s in slots if s.pad]
    assert len(pads) == 4 and len({s.path for s in pads}) < 4  # two pads of one length
    meta = metainfo.parse(_torrent(slots))
    assert [(f.path, f.length, f.pad) for f in meta.info.files] == \
        [(s.path, s.length, s.pad) for s in slots]
    raw = bencode.decode(_torrent(slots))
    assert all(f.get(b"attr") == b"p" for f in raw[b"info"][b"files"]
               if f[b"path"][0] == b".pad")


def test_check_torrent_refuses_any_difference() -> None:
    m = tree.parse_manifest(copy.deepcopy(VALID))
    slots = tree.manifest_layout(m)
    meta = metainfo.parse(_torrent(slots))
    good = tree.TreeManifest(meta.info_hash.hex(), m.piece_length, m.entries)
    tree.check_torrent(good, meta.info, meta.info_hash)
    with pytest.raises(MetainfoError, match="info-hash"):
        tree.check_torrent(m, meta.info, meta.info_hash)
    extra = metainfo.parse(_torrent([*slots, tree.Slot(("bin", "evil"), 3)]))
    forged = tree.TreeManifest(extra.info_hash.hex(), m.piece_length, m.entries)
    with pytest.raises(MetainfoError, match="file list"):
        tree.check_torrent(forged, extra.info, extra.info_hash)


@pytest.mark.parametrize("trackers,created_by", [((), None), (["http://t/a"], "roost 1"),
                                                  (["http://t/a", "http://u/b"], None)])
def test_the_direct_info_encoding_is_the_generic_encoders_byte_for_byte(
        trackers: list[str], created_by: str | None) -> None:
    # tree.encode_info writes the bencoding by hand for speed; it must stay identical
    entries = [tree.Entry(("d",), "dir", 0o755, 0, 0, 1)]
    sizes = [0, 1, 100, P * 41, P * 45 + 3, 5000, P * 40, 7]
    for i, size in enumerate(sizes):
        entries.append(tree.Entry(("d", f"f{i}\u00e9"), "file", 0o644, 0, 0, 2, size, SHA))
    m = tree.TreeManifest("00" * 20, P, tuple(entries))
    slots = tree.manifest_layout(m)
    assert any(s.pad for s in slots)
    pieces = bytes(range(20)) * (-(-sum(s.length for s in slots) // P))
    generic = metainfo.build_info("v1", [(s.path, s.length, s.pad) for s in slots], P, pieces)
    assert tree.encode_info(m, "v1", pieces) == bencode.encode(generic)
    assert tree.make_torrent(m, "v1", pieces, trackers, created_by) == metainfo.build_torrent(
        generic, trackers, created_by=created_by)


def test_proven_torrent_refuses_pieces_the_info_hash_does_not_cover() -> None:
    m = tree.TreeManifest("00" * 20, P, (tree.Entry(("f",), "file", 0o644, 0, 0, 1, 10, SHA),))
    pieces = bytes(20)
    proven = tree.TreeManifest(tree.hashlib.sha1(tree.encode_info(m, "v1", pieces)).hexdigest(),
                               P, m.entries)
    assert metainfo.parse(tree.proven_torrent(proven, "v1", pieces)).info_hash.hex() == \
        proven.info_hash
    with pytest.raises(MetainfoError, match="info-hash"):
        tree.proven_torrent(proven, "v1", b"\x01" * 20)
    with pytest.raises(UnsafePathError):
        tree.encode_info(proven, "../x", pieces)


# --- the record that host-prepare validated a manifest (roost.target.checked) ------------


def _written(tmp_path: Any) -> tuple[Any, dict[str, Any]]:
    from roost.target.checked import remember

    m = tree.parse_manifest(copy.deepcopy(VALID))
    data = {"tag": "v1", "format": "tree", "name": "v1", "sha256": m.digest(),
            "size": m.total_size, "tree": m.to_dict()}
    path = tmp_path / "manifest.json"
    remember(path, json.dumps(data).encode())
    return path, data


def test_a_checked_manifest_is_rebuilt_without_validating_it_again(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from roost.target import protocol_common, release

    path, _ = _written(tmp_path)
    full = release.read_manifest(path)

    def refuse(_: Any) -> tree.TreeManifest:
        raise AssertionError("validated again")

    monkeypatch.setattr(protocol_common, "parse_manifest", refuse)  # Manifest.load's validator
    assert release.read_manifest(path) == full  # the same manifest, from the record's path


@pytest.mark.parametrize("tamper", ["manifest", "record-sha", "record-garbage",
                                    "record-extra-key", "record-missing"])
def test_a_tampered_manifest_or_record_is_validated_in_full(tmp_path: Any,
                                                           tamper: str) -> None:
    from roost.target import release
    from roost.target.checked import record_of

    path, data = _written(tmp_path)
    record = record_of(path)
    good = json.loads(record.read_text())
    hostile = copy.deepcopy(data)
    hostile["tree"]["entries"].append(_entry("../outside"))
    if tamper == "manifest":  # changed after it was checked, record left as it was
        path.write_text(json.dumps(hostile))
    else:  # the record does not name these bytes: the (hostile) manifest is checked
        text = json.dumps(hostile).encode()
        path.write_bytes(text)
        if tamper == "record-sha":
            record.write_text(json.dumps({**good, "sha256": "0" * 64}))
        elif tamper == "record-garbage":
            record.write_bytes(b"\x00not json")
        elif tamper == "record-extra-key":
            record.write_text(json.dumps({**good, "sha256": tree.hashlib.sha256(text)
                                          .hexdigest(), "trusted": True}))
        else:
            record.unlink()
    with pytest.raises(UsageError, match=r"bad manifest: .*not allowed"):
        release.read_manifest(path)
