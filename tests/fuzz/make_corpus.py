"""Regenerate the checked-in fuzz corpus: tests/fuzz/corpus/<parser>/*.bin.

    python -m tests.fuzz.make_corpus [--out DIR] [--no-tools]

Seeds come from three places:
  * real torrents made at generation time, in a temporary directory, by
    mktorrent, transmission-create and libtorrent (and roost's own builder),
    single- and multi-file, plus real tracker replies and wire streams
    produced by roost's encoders;
  * deterministic mutants of those (bit flips, truncations, splices, with a
    fixed random seed, so regenerating gives the same mutants);
  * hand-written nasty cases: huge length prefixes, 10^6-deep nesting,
    unsafe paths, oversized frames, hostile queries.
A tool that is missing is skipped with a note (the corpus is checked in; CI
only replays it). Every directory this script writes is emptied first.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from urllib.parse import quote_from_bytes

from roost.core import bencode, metainfo, wire
from roost.core import tracker_server_codec as protocol
from roost.core.bitfield import Bitfield
from tests.fuzz.targets import IH, NUM_PIECES, PIECE_LENGTH, handshake

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "corpus"
ANNOUNCE = "http://127.0.0.1:6969/announce/secret-token-0123456789"
MUTANTS_PER_SEED = 6

Corpus = dict[str, dict[str, bytes]]


# --- real torrents ------------------------------------------------------------------


def _payload(root: Path) -> tuple[Path, Path]:
    """A single file and a small tree (nested dirs, an empty file) to make torrents of."""
    rng = random.Random(7)
    single = root / "single.bin"
    single.write_bytes(rng.randbytes(70_000))
    tree = root / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "deep.txt").write_bytes(rng.randbytes(40_000))
    (tree / "a" / "x.bin").write_bytes(rng.randbytes(20_000))
    (tree / "empty").write_bytes(b"")
    (tree / "z.txt").write_text("hello\n")
    return single, tree


def _run(argv: list[str]) -> bool:
    if shutil.which(argv[0]) is None:
        print(f"note: {argv[0]} not installed; its torrents are skipped", file=sys.stderr)
        return False
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return True


def real_torrents(work: Path) -> dict[str, bytes]:
    single, tree = _payload(work)
    out: dict[str, bytes] = {}
    for label, src in (("single", single), ("tree", tree)):
        dst = work / f"mk-{label}.torrent"
        if _run(["mktorrent", "-d", "-p", "-l", "15", "-a", ANNOUNCE, "-o", str(dst), str(src)]):
            out[f"mktorrent-{label}"] = dst.read_bytes()
        dst = work / f"tc-{label}.torrent"
        if _run(
            ["transmission-create", "-p", "-s", "16", "-t", ANNOUNCE, "-o", str(dst), str(src)]
        ):
            out[f"transmission-{label}"] = dst.read_bytes()
        made = _libtorrent(src)
        if made is not None:
            out[f"libtorrent-{label}"] = made
    out["roost-single"] = _roost_torrent(single)
    return out


def _libtorrent(src: Path) -> bytes | None:
    try:
        import libtorrent as lt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print("note: libtorrent not importable; its torrents are skipped", file=sys.stderr)
        return None
    fs = lt.file_storage()
    with warnings.catch_warnings():  # the file_storage API is deprecated, still the simplest
        warnings.simplefilter("ignore", DeprecationWarning)
        lt.add_files(fs, str(src))
        ct = lt.create_torrent(fs, 16384, flags=lt.create_torrent.v1_only)
    ct.add_tracker(ANNOUNCE)
    ct.set_priv(True)
    lt.set_piece_hashes(ct, str(src.parent))
    data: bytes = lt.bencode(ct.generate())
    return data


def _roost_torrent(single: Path) -> bytes:
    data = single.read_bytes()
    pieces = b"".join(
        hashlib.sha1(data[i : i + 16384]).digest() for i in range(0, len(data), 16384)
    )
    info = metainfo.build_info(single.name, len(data), 16384, pieces)
    return metainfo.build_torrent(info, [ANNOUNCE, "http://backup.invalid/announce"])


# --- mutation ----------------------------------------------------------------------------


def mutants(name: str, data: bytes, count: int) -> dict[str, bytes]:
    """Deterministic structure-unaware mutants: flip, truncate, duplicate, splice digits.

    Each seed has its own RNG (seeded by its name), so one mutant set does not
    depend on which other seeds exist (e.g. whether the torrent tools ran)."""
    rng = random.Random(f"roost-corpus:{name}")
    out: dict[str, bytes] = {}
    for i in range(count):
        buf = bytearray(data)
        kind = ("flip", "truncate", "dup", "digit", "delete", "insert")[i % 6]
        pos = rng.randrange(len(buf)) if buf else 0
        if kind == "flip" and buf:
            buf[pos] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "dup":
            buf[pos:pos] = buf[pos : pos + rng.randrange(1, 64)]
        elif kind == "digit":
            # rewrite the first digit run after pos: lengths and integers are the soft spots
            while pos < len(buf) and not 0x30 <= buf[pos] <= 0x39:
                pos += 1
            buf[pos:pos] = rng.choice([b"9", b"0", b"-", b"99999999999"])
        elif kind == "delete" and buf:
            del buf[pos : pos + rng.randrange(1, 16)]
        else:
            buf[pos:pos] = bytes([rng.randrange(256)])
        out[f"{name}-mut{i}-{kind}"] = bytes(buf)
    return out


# --- hand-written cases --------------------------------------------------------------------


def bencode_cases() -> dict[str, bytes]:
    return {
        "empty": b"",
        "int-zero": b"i0e",
        "int-neg": b"i-42e",
        "int-leading-zero": b"i03e",
        "int-neg-zero": b"i-0e",
        "int-empty": b"ie",
        "int-minus-only": b"i-e",
        "int-100k-digits": b"i" + b"9" * 100_000 + b"e",
        "int-64-digits": b"i" + b"9" * 64 + b"e",
        "str-4gib-prefix": b"4294967296:abc",
        "str-4gib-minus-1-prefix": b"4294967295:",
        "str-11-digit-prefix": b"99999999999:x",
        "str-20-digit-prefix": b"18446744073709551616:x",
        "str-leading-zero": b"03:abc",
        "str-short": b"5:abc",
        "str-negative": b"-1:a",
        "list-nest-1e6": b"l" * 1_000_000,
        "list-nest-1e6-closed": b"l" * 1_000 + b"e" * 1_000,
        "list-nest-64": b"l" * 64 + b"e" * 64,
        "list-nest-63": b"l" * 63 + b"e" * 63,
        "dict-nest-deep": b"d1:a" * 100_000 + b"i0e" + b"e" * 100_000,
        "dict-unsorted": b"d1:bi1e1:ai2ee",
        "dict-duplicate": b"d1:ai1e1:ai2ee",
        "dict-int-key": b"di1ei2ee",
        "dict-unterminated": b"d1:a",
        "trailing-data": b"i1ei2e",
        "unknown-lead": b"x",
        "nul": b"\x00",
        "valid-dict": b"d3:bar4:spam3:fooi42ee",
    }


def _torrent(info: dict[bytes, object], **top: object) -> bytes:
    body: dict[bytes, object] = {b"announce": ANNOUNCE.encode(), b"info": info}
    body.update({k.replace("_", " ").encode(): v for k, v in top.items()})
    return bencode.encode(body)


def metainfo_cases() -> dict[str, bytes]:
    one = hashlib.sha1(b"x").digest()

    def single(name: bytes = b"ok", length: int = 100, **extra: object) -> dict[bytes, object]:
        info: dict[bytes, object] = {
            b"name": name,
            b"piece length": 16384,
            b"pieces": one,
            b"length": length,
        }
        info.update({k.replace("_", " ").encode(): v for k, v in extra.items()})
        return info

    def multi(*paths: list[bytes]) -> dict[bytes, object]:
        return {
            b"name": b"top",
            b"piece length": 16384,
            b"pieces": one,
            b"files": [{b"length": 1, b"path": list(p)} for p in paths],
        }

    cases = {
        "name-dotdot": _torrent(single(b"..")),
        "name-dot": _torrent(single(b".")),
        "name-empty": _torrent(single(b"")),
        "name-absolute": _torrent(single(b"/etc/passwd")),
        "name-slash": _torrent(single(b"a/b")),
        "name-backslash": _torrent(single(b"..\\..\\x")),
        "name-nul": _torrent(single(b"a\x00b")),
        "name-not-utf8": _torrent(single(b"\xff\xfe")),
        "name-device": _torrent(single(b"CON.txt")),
        "name-256-bytes": _torrent(single(b"a" * 256)),
        "name-control-char": _torrent(single(b"a\nb")),
        "path-dotdot": _torrent(multi([b"..", b"x"])),
        "path-dotdot-deep": _torrent(multi([b"a", b"..", b"..", b"etc"])),
        "path-absolute": _torrent(multi([b"/etc", b"passwd"])),
        "path-empty-list": _torrent(multi([])),
        "path-empty-component": _torrent(multi([b"a", b""])),
        "path-65-deep": _torrent(multi([b"d"] * 65)),
        "path-duplicate": _torrent(multi([b"a"], [b"a"])),
        "path-through-file": _torrent(multi([b"a"], [b"a", b"b"])),
        "path-not-bytes": _torrent(multi([b"a"]) | {b"files": [{b"length": 1, b"path": [1]}]}),
        "pieces-4gib-prefix": b"d8:announce3:url4:infod6:lengthi1e4:name2:ok12:piece lengthi16384e"
        b"6:pieces4294967296:",
        "pieces-not-multiple-of-20": _torrent(single(pieces=b"x" * 19)),
        "pieces-count-mismatch": _torrent(single(length=2**62)),
        "piece-length-zero": _torrent(single(piece_length=0)),
        "piece-length-huge": _torrent(single(piece_length=2**40)),
        "length-negative": _torrent(single(length=-1)),
        "length-and-files": _torrent(single() | {b"files": []}),
        "no-length-no-files": _torrent({b"name": b"x", b"piece length": 16384, b"pieces": b""}),
        "files-empty": _torrent(multi() | {b"files": []}),
        "files-not-list": _torrent(multi() | {b"files": b"x"}),
        "info-not-dict": bencode.encode({b"info": [1, 2]}),
        "no-info": bencode.encode({b"announce": b"x"}),
        "top-list": b"le",
        "announce-int": _torrent(single(), announce=5),
        "announce-list-bad": _torrent(single(), announce_list=[b"x"]),
        "announce-list-nested": _torrent(single(), announce_list=[[[b"x"]]]),
        "comment-dict": _torrent(single(), comment={b"a": 1}),
        "private-string": _torrent(single(private=b"1")),
        "info-nested-64": b"d4:info" + b"l" * 70 + b"e" * 70 + b"e",
    }
    return cases


def _frame(mid: int, payload: bytes) -> bytes:
    return struct.pack(">IB", 1 + len(payload), mid) + payload


def wire_cases() -> dict[str, bytes]:
    conn = wire.PeerConnection(IH, b"-FZ0001-" + b"x" * 12, NUM_PIECES)
    conn.receive(handshake())
    bf = Bitfield(NUM_PIECES)
    bf.set(0)
    bf.set(NUM_PIECES - 1)
    spare = bytearray(bf.to_bytes())
    spare[-1] |= 1  # a bit past the last piece
    ext_hs = bencode.encode({b"m": {b"ut_metadata": 3}, b"v": b"fuzz", b"reqq": 250, b"p": 6881})
    valid = (
        _frame(wire.EXTENDED, b"\x00" + ext_hs)
        + conn.send_bitfield(bf)
        + conn.send_keepalive()
        + conn.send_unchoke()
        + conn.send_interested()
        + conn.send_have(3)
        + conn.send_request(1, 0, 16384)
        + conn.send_piece(1, 16384, b"\xab" * 16384)
        + conn.send_cancel(1, 0, 16384)
        + conn.send_port(6881)
        + _frame(wire.EXTENDED, b"\x03" + b"payload")
        + conn.send_not_interested()
        + conn.send_choke()
    )
    fast = (
        _frame(wire.ALLOWED_FAST, struct.pack(">I", 2))
        + _frame(wire.HAVE_ALL, b"")
        + _frame(wire.SUGGEST, struct.pack(">I", 5))
        + _frame(wire.REJECT, struct.pack(">III", 1, 0, 16384))
    )
    huge = 0xFFFFFFFF
    return {
        "valid-session": valid,
        "valid-fast": fast,
        "valid-have-none": _frame(wire.HAVE_NONE, b""),
        "keepalive-flood": b"\x00\x00\x00\x00" * 10_000,
        "piece-4gib-prefix": struct.pack(">IB", huge, wire.PIECE),
        "bitfield-4gib-prefix": struct.pack(">IB", huge, wire.BITFIELD),
        "extended-4gib-prefix": struct.pack(">IB", huge, wire.EXTENDED),
        "unknown-id-4gib-prefix": struct.pack(">IB", huge, 99),
        "choke-4gib-prefix": struct.pack(">IB", huge, wire.CHOKE),
        "piece-1mib-plus-one": struct.pack(">IB", wire.MAX_BLOCK + 10, wire.PIECE),
        "extended-just-over-cap": struct.pack(">IB", wire.MAX_EXTENDED + 3, wire.EXTENDED),
        "extended-at-cap-partial": struct.pack(">IB", wire.MAX_EXTENDED + 2, wire.EXTENDED)
        + b"\x00" * 1000,
        "bitfield-spare-bits": _frame(wire.BITFIELD, bytes(spare)),
        "bitfield-short": _frame(wire.BITFIELD, b"\xff"),
        "bitfield-after-have": conn.send_have(1) + conn.send_bitfield(bf),
        "have-out-of-range": _frame(wire.HAVE, struct.pack(">I", NUM_PIECES)),
        "have-max-index": _frame(wire.HAVE, struct.pack(">I", huge)),
        "request-past-piece": _frame(wire.REQUEST, struct.pack(">III", 0, PIECE_LENGTH, 1)),
        "request-past-last-piece": _frame(
            wire.REQUEST, struct.pack(">III", NUM_PIECES - 1, 0, 16384)
        ),
        "request-zero-length": _frame(wire.REQUEST, struct.pack(">III", 0, 0, 0)),
        "request-huge-length": _frame(wire.REQUEST, struct.pack(">III", 0, 0, huge)),
        "piece-short-frame": struct.pack(">IB", 9, wire.PIECE) + b"\x00" * 8,
        "piece-index-max": struct.pack(">IBII", 13, wire.PIECE, huge, 0) + b"abcd",
        "have-wrong-length": struct.pack(">IB", 6, wire.HAVE) + b"\x00" * 5,
        "extended-empty": struct.pack(">IB", 1, wire.EXTENDED),
        "extended-hs-not-dict": _frame(wire.EXTENDED, b"\x00li1ee"),
        "extended-hs-bad": _frame(wire.EXTENDED, b"\x00d1:a"),
        "extended-hs-nest-16": _frame(wire.EXTENDED, b"\x00d1:a" + b"l" * 15 + b"e" * 15 + b"e"),
        "extended-hs-nest-1e5": _frame(wire.EXTENDED, b"\x00d1:a" + b"l" * 100_000),
        "port-wrong-length": struct.pack(">IB", 2, wire.PORT) + b"\x00",
        "unknown-id": _frame(42, b"xyz"),
        "truncated-header": b"\x00\x00\x00",
    }


def wire_raw_cases() -> dict[str, bytes]:
    good = handshake()
    return {
        "handshake-valid": good + _frame(wire.UNCHOKE, b""),
        "handshake-other-torrent": handshake(b"\xee" * 20),
        "handshake-bad-protocol": b"\x13BitTorrent protocoX" + good[20:],
        "handshake-http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "handshake-truncated": good[:47],
        "handshake-length-0xff": b"\xff" + good[1:],
        "junk-after-unbound-handshake": good + b"\x00" * (wire.MAX_FRAME + 1),
        "handshake-then-4gib": good + struct.pack(">IB", 0xFFFFFFFF, wire.PIECE),
    }


def _query(**params: bytes | str | int) -> bytes:
    parts = []
    for name, value in params.items():
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(f"{name}={quote_from_bytes(raw, safe='')}")
    return "&".join(parts).encode()


def tracker_query_cases() -> dict[str, bytes]:
    base: dict[str, bytes | str | int] = {
        "info_hash": IH,
        "peer_id": b"-TR3000-" + b"\xfe" * 12,
        "port": 51413,
        "uploaded": 0,
        "downloaded": 0,
        "left": 1000,
    }
    good = _query(**base)
    return {
        "announce-valid": good,
        "announce-compact-event": _query(**base, compact=1, event="started", numwant=80),
        "announce-location-ip": _query(**base, ip="::ffff:10.0.0.1", location="rack-7"),
        "numwant-1e18": _query(**base, numwant=10**18),
        "numwant-20-digits": _query(**base, numwant=99999999999999999999),
        "numwant-100k-digits": good + b"&numwant=" + b"9" * 3000,
        "left-over-int64": _query(**base | {"left": 2**63}),
        "port-zero": _query(**base | {"port": 0}),
        "port-70000": _query(**base | {"port": 70000}),
        "info-hash-19": _query(**base | {"info_hash": b"x" * 19}),
        "repeated-param": good + b"&port=1",
        "65-params": good + b"&x=1" * 60,
        "query-5000-bytes": good + b"&pad=" + b"a" * 5000,
        "bad-escape": good + b"&key=%G1",
        "bad-escape-trailing": good + b"&key=%4",
        "escape-whitespace": b"info_hash=% 1" + b"%41" * 19,
        "plus-space": good + b"&key=a+b",
        "not-utf8": good + b"&event=\xff\xfe",
        "event-bogus": _query(**base, event="exploded"),
        "compact-2": _query(**base, compact=2),
        "ip-hostname": _query(**base, ip="example.com"),
        "location-bad": _query(**base, location="a b"),
        "empty": b"",
        "only-ampersands": b"&" * 63,
        "scrape-65-hashes": b"&".join([b"info_hash=" + b"%41" * 20] * 65),
        "scrape-valid": b"info_hash=" + quote_from_bytes(IH, safe="").encode(),
    }


def tracker_response_cases() -> dict[str, bytes]:
    peers = [
        protocol.PeerEntry(b"p" * 20, "10.0.0.1", 6881, protocol.compact_peer("10.0.0.1", 6881)),
        protocol.PeerEntry(b"q" * 20, "::1", 6882, protocol.compact_peer("::1", 6882)),
    ]

    def reply(compact: bool) -> bytes:
        return protocol.announce_response(
            peers, interval=1800, min_interval=60, complete=1, incomplete=1,
            compact=compact, no_peer_id=False, extra={"roost.expected": 5},
        )  # fmt: skip

    return {
        "announce-compact": reply(True),
        "announce-dict-model": reply(False),
        "failure": protocol.failure("invalid secret"),
        "scrape": protocol.scrape_response([(IH, 1, 2, 3)], min_interval=10),
        "failure-int": b"d14:failure reasoni5ee",
        "peers-4gib-prefix": b"d8:intervali1800e5:peers4294967296:",
        "peers-7-bytes": b"d8:intervali1800e5:peers7:abcdefge",
        "peers6-17-bytes": b"d8:intervali1800e6:peers617:" + b"x" * 17 + b"e",
        "peers-int": b"d8:intervali1800e5:peersi5ee",
        "peers-dict-garbage": bencode.encode(
            {
                b"interval": 1,
                b"peers": [
                    {b"ip": b"\xff\xfe", b"port": 1},
                    {b"ip": 5},
                    7,
                    {b"ip": b"a" * 300, b"port": 80},
                    {b"ip": b"host.example", b"port": 70000},
                ],
            }
        ),
        "interval-negative": b"d8:intervali-1ee",
        "interval-string": b"d8:interval3:abce",
        "interval-huge": b"d8:intervali" + b"9" * 60 + b"ee",
        "trailing-newline": protocol.failure("x") + b"\r\n",
        "not-dict": b"li1ee",
        "html": b"<html>502 Bad Gateway</html>",
        "nest-1e6": b"d5:peers" + b"l" * 1_000_000,
        "scrape-files-not-dict": b"d5:filesli1eee",
    }


def admin_api_cases() -> dict[str, bytes]:
    one = hashlib.sha1(b"x").digest()
    info = metainfo.build_info("t", 100, 16384, one)
    torrent = base64.b64encode(metainfo.build_torrent(info, [ANNOUNCE])).decode()
    return {
        "register-hash": json.dumps({"info_hash": IH.hex(), "expected_peers": 3}).encode(),
        "register-torrent": json.dumps({"torrent": torrent}).encode(),
        "torrent-not-base64": json.dumps({"torrent": "!!!"}).encode(),
        "torrent-garbage": json.dumps({"torrent": base64.b64encode(b"l" * 1000).decode()}).encode(),
        "info-hash-int": b'{"info_hash": 123}',
        "expected-bool": json.dumps({"info_hash": IH.hex(), "expected_peers": True}).encode(),
        "expected-float-inf": b'{"info_hash": "'
        + IH.hex().encode()
        + b'", "expected_peers": 1e999}',
        "expected-5000-digits": b'{"expected_peers": ' + b"9" * 5000 + b"}",
        "expected-negative": json.dumps({"info_hash": IH.hex(), "expected_peers": -1}).encode(),
        "token-bad": json.dumps({"info_hash": IH.hex(), "token": "short"}).encode(),
        "name-nested": json.dumps({"info_hash": IH.hex(), "name": [[[{"a": 1}]]]}).encode(),
        "list-top": b"[1, 2]",
        "not-json": b"{not json",
        "not-utf8": b'{"name": "\xff\xfe"}',
        "nan": b'{"expected_peers": NaN}',
        "empty": b"",
        "nest-1e6-lists": b"[" * 1_000_000,
        "nest-1e5-dicts": b'{"a":' * 100_000,
        "failed-peer-id-bad": json.dumps({"peer_id": "zz"}).encode(),
        "failed-address-junk": json.dumps({"address": "not an address"}).encode(),
        "failed-address-dict": json.dumps({"address": {"x": 1}}).encode(),
    }


# --- assembly ---------------------------------------------------------------------------


def build(use_tools: bool = True) -> Corpus:
    corpus: Corpus = {
        "bencode": bencode_cases(),
        "metainfo": metainfo_cases(),
        "wire": wire_cases(),
        "wire_raw": wire_raw_cases(),
        "tracker_query": tracker_query_cases(),
        "tracker_response": tracker_response_cases(),
        "admin_api": admin_api_cases(),
    }
    with tempfile.TemporaryDirectory(prefix="roost-corpus-") as tmp:
        torrents = real_torrents(Path(tmp)) if use_tools else {}
    for name, data in torrents.items():
        corpus["metainfo"][f"real-{name}"] = data
        corpus["bencode"][f"real-{name}"] = data
        corpus["metainfo"].update(mutants(f"real-{name}", data, MUTANTS_PER_SEED))
    seeds = {
        "wire": ["valid-session", "valid-fast"],
        "tracker_query": ["announce-compact-event", "announce-location-ip"],
        "tracker_response": ["announce-compact", "announce-dict-model", "scrape"],
        "bencode": ["valid-dict"],
    }
    for parser, names in seeds.items():
        for name in names:
            corpus[parser].update(mutants(name, corpus[parser][name], MUTANTS_PER_SEED))
    return corpus


def write(corpus: Corpus, out: Path) -> int:
    count = 0
    for parser, cases in corpus.items():
        directory = out / parser
        if directory.exists():
            for old in directory.glob("*.bin"):
                old.unlink()
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in sorted(cases.items()):
            (directory / f"{name}.bin").write_bytes(data)
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-tools", action="store_true", help="skip the real-torrent tools")
    ns = parser.parse_args(argv)
    count = write(build(use_tools=not ns.no_tools), ns.out)
    print(f"wrote {count} corpus files under {ns.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
