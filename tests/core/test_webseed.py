"""Web seed policy (roost.core.webseed) driven through a SwarmMember with a fake clock."""

from __future__ import annotations

from roost.core import metainfo
from roost.core.actions import DropWebSeed, Flush, WebData, WebFailed, WebFetch, WebPart
from roost.core.bitfield import Bitfield
from roost.core.webseed import MAX_FAILURES, MAX_FETCHES, file_url
from roost.core.wire import BLOCK_SIZE
from roost.errors import UsageError
from tests.core.member_kit import Kit

URL = "http://127.0.0.1:8080/pub/"


def pending(kit: Kit) -> list[WebFetch]:
    """Fetches issued and not yet answered."""
    answered = {a.request for a in kit.answered}  # type: ignore[attr-defined]
    return [a for a in kit.of(WebFetch) if a.request not in answered]


class Answered:
    def __init__(self, request: int) -> None:
        self.request = request


def answer(kit: Kit, fetch: WebFetch, data: bytes | None = None) -> None:
    kit.answered.append(Answered(fetch.request))  # type: ignore[attr-defined]
    if data is None:
        data = kit.block(fetch.index, fetch.begin, fetch.length)
    kit.run(kit.member.event(WebData(fetch.request, data), kit.now))


def fail(kit: Kit, fetch: WebFetch, reason: str, status: int | None) -> None:
    kit.answered.append(Answered(fetch.request))  # type: ignore[attr-defined]
    kit.run(kit.member.event(WebFailed(fetch.request, reason, status), kit.now))


def web_kit(**kw: object) -> Kit:
    kit = Kit(web_seeds=[URL], **kw)  # type: ignore[arg-type]
    kit.answered = []  # type: ignore[attr-defined]
    return kit


def drain(kit: Kit, rounds: int = 200) -> None:
    """Answer every fetch with the right bytes until none is left."""
    for _ in range(rounds):
        todo = pending(kit)
        if not todo:
            return
        for fetch in todo:
            answer(kit, fetch)
        kit.check()


def test_a_web_seed_alone_fetches_the_whole_payload_byte_exact() -> None:
    kit = web_kit(pieces=8)
    assert kit.reports("web_seed_added") == [{"url": URL}]
    first = pending(kit)
    assert 0 < len(first) <= MAX_FETCHES
    # whole pieces, one range each (single file: the name appended to the directory URL)
    for fetch in first:
        assert fetch.begin == 0 and fetch.length == kit.info.piece_size(fetch.index)
        assert fetch.parts == (
            WebPart(URL + "payload", fetch.index * kit.info.piece_length, fetch.length),
        )
    drain(kit)
    assert kit.member.complete
    assert kit.of(Flush)
    assert not kit.reports("web_seed_dropped")
    assert kit.of(DropWebSeed) == [DropWebSeed(-1)]  # its connections close, quietly


def test_in_flight_stays_within_the_budget() -> None:
    kit = web_kit(pieces=64)
    seed = kit.member.webseeds.seeds[-1]
    assert len(seed.inflight) == MAX_FETCHES
    kit.advance(2.0)  # ticks do not add more while nothing came back
    assert len(seed.inflight) == MAX_FETCHES and len(pending(kit)) == MAX_FETCHES


def test_a_web_seed_that_serves_wrong_bytes_is_dropped_and_peers_fill_in() -> None:
    kit = web_kit(pieces=4)
    fetch = pending(kit)[0]
    answer(kit, fetch, bytes(fetch.length))  # zeros: the piece fails its hash
    kit.check()
    assert kit.reports("hash_failed")[0]["piece"] == fetch.index
    (dropped,) = kit.reports("web_seed_dropped")
    assert dropped["reason"] == f"served piece {fetch.index} that failed its hash check"
    assert DropWebSeed(-1) in kit.actions
    assert not kit.member.webseeds
    # every other fetch in flight is now stale: its bytes are not used
    before = kit.member.have.count()
    for other in pending(kit):
        answer(kit, other)
    kit.check()
    assert kit.member.have.count() == before
    # a peer serves everything, the failed piece included
    peer = kit.connect(have=Bitfield.full(4))
    peer.say(peer.wire.send_unchoke())
    for _ in range(20):
        for req in peer.requests():
            peer.answer(req)
        kit.check()
    assert kit.member.complete
    assert len(kit.of(WebFetch)) == MAX_FETCHES  # nothing more was asked of it


def test_a_404_drops_the_web_seed_at_once_with_its_reason() -> None:
    kit = web_kit(pieces=8)
    fail(kit, pending(kit)[0], "Not Found", 404)
    (dropped,) = kit.reports("web_seed_dropped")
    assert dropped == {"url": URL, "reason": "HTTP 404: Not Found"}
    assert not pending(kit) or all(f.request not in kit.member.webseeds.requests
                                   for f in pending(kit))


def test_server_errors_back_off_then_drop_after_repeated_failures() -> None:
    kit = web_kit(pieces=8)
    fail(kit, pending(kit)[0], "Internal \x1b[2J Error", 500)
    (err,) = kit.reports("web_seed_error")
    assert err["failures"] == 1 and err["retry_in"] == 1.0
    assert "\x1b" not in err["reason"] and "\\x1b[2J" in err["reason"]  # inert text
    # the other requests of the same outage fail too: counted once
    for fetch in pending(kit):
        fail(kit, fetch, "Internal Error", 500)
    assert len(kit.reports("web_seed_error")) == 1
    issued = len(kit.of(WebFetch))
    kit.advance(0.6)
    assert len(kit.of(WebFetch)) == issued  # backing off
    for n in range(2, MAX_FAILURES + 1):
        kit.advance(2 ** (n - 1) + 0.6)
        assert len(kit.of(WebFetch)) > issued, f"asked again after back-off {n - 1}"
        issued = len(kit.of(WebFetch))
        for fetch in pending(kit):
            fail(kit, fetch, "Bad Gateway", 502)
    (dropped,) = kit.reports("web_seed_dropped")
    assert dropped["reason"] == f"{MAX_FAILURES} failures in a row, the last: HTTP 502: Bad Gateway"
    kit.advance(60.0)
    assert len(kit.of(WebFetch)) == issued


def test_a_success_resets_the_failure_count() -> None:
    kit = web_kit(pieces=64)
    for _ in range(MAX_FAILURES + 1):
        todo = pending(kit)
        fail(kit, todo[0], "timed out", None)
        for fetch in todo[1:]:
            answer(kit, fetch)
        kit.check()
        kit.advance(1.6)
        for fetch in pending(kit):
            answer(kit, fetch)
        kit.check()
    assert not kit.reports("web_seed_dropped")


def test_a_short_body_is_a_failure_and_its_blocks_go_back() -> None:
    kit = web_kit(pieces=8)
    fetch = pending(kit)[0]
    answer(kit, fetch, kit.block(fetch.index, fetch.begin, fetch.length)[:-1])
    (err,) = kit.reports("web_seed_error")
    assert err["reason"].startswith("a wrong length")
    assert kit.member.picker.piece_state(fetch.index) == "partial"
    kit.advance(1.6)
    drain(kit)
    assert kit.member.complete


def test_the_web_seed_asks_for_pieces_the_swarm_lacks_first() -> None:
    kit = web_kit(pieces=32)
    half = Bitfield(32)
    for i in range(16):
        half.set(i)
    peer = kit.connect(have=half)  # chokes us: trades nothing
    drain_some = 0
    while kit.member.have.count() < kit.member.picker.random_first:
        for fetch in pending(kit):
            answer(kit, fetch)
            drain_some += 1
        kit.check()
    assert drain_some
    after_random = {f.request for f in kit.of(WebFetch)}
    for fetch in pending(kit):
        answer(kit, fetch)
    kit.check()
    later = [f.index for f in kit.of(WebFetch) if f.request not in after_random]
    assert later and all(i >= 16 for i in later), later
    assert peer.closed is None


def test_multi_file_ranges_skip_pad_files_and_quote_paths() -> None:
    kit = web_kit(pieces=8, multi_file=True)
    info = kit.info
    a, pad, b = info.files
    assert pad.pad
    assert (a.offset, pad.offset, b.offset) == (0, a.length, a.length + pad.length)
    start = a.length - 1000
    parts = kit.member.webseeds.parts_of(URL, start, 1000 + pad.length + BLOCK_SIZE)
    assert parts == (
        WebPart(URL + "payload/a", start, 1000),
        WebPart(None, 0, pad.length),
        WebPart(URL + "payload/dir/b%20c", 0, BLOCK_SIZE),
    )
    # and the member assembles them byte-exact
    drain(kit)
    assert kit.member.complete


def test_url_forms_follow_bep_19() -> None:
    kit = Kit(pieces=2)
    assert file_url("http://h/x/", kit.info, ("payload",)) == "http://h/x/payload"
    assert file_url("http://h/file.bin", kit.info, ("payload",)) == "http://h/file.bin"
    multi = Kit(pieces=8, multi_file=True)
    assert file_url("http://h/x", multi.info, ("a",)) == "http://h/x/payload/a"


def test_url_list_round_trips_through_the_metainfo() -> None:
    info = metainfo.build_info("p", 10, 16384, b"\0" * 20)
    raw = metainfo.build_torrent(info, url_list=["http://a/", "https://b/p"])
    assert metainfo.parse(raw).url_list == ("http://a/", "https://b/p")
    for bad in ("ftp://a/", "http://u:p@a/", "http://a/ x", "a/b"):
        try:
            metainfo.build_torrent(info, url_list=[bad])
        except UsageError:
            continue
        raise AssertionError(f"{bad!r} accepted")
    # a foreign torrent's unusable entries are skipped, a single string is a list of one
    from roost.core import bencode

    top = bencode.decode(raw)
    assert isinstance(top, dict)
    top[b"url-list"] = [b"ftp://x/", b"http://ok/", 7]
    assert metainfo.parse(bencode.encode(top)).url_list == ("http://ok/",)
    top[b"url-list"] = b"http://one/"
    assert metainfo.parse(bencode.encode(top)).url_list == ("http://one/",)


def test_a_complete_member_does_not_use_its_web_seeds() -> None:
    kit = Kit(pieces=4, complete=True, web_seeds=[URL])
    kit.advance(2.0)
    assert not kit.of(WebFetch)
