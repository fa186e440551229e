"""The deploy's tracker in a process of its own (roost.deploy.swarm.Swarm, trackerproc)."""

from __future__ import annotations

import asyncio
import os
from urllib.parse import quote_from_bytes

import aiohttp
import pytest

from roost.core.bencode import decode
from roost.deploy.swarm import Swarm
from roost.errors import RoostError

INFO_HASH = bytes(range(20))


async def _announce(url: str, peer: bytes, port: int, left: int) -> dict[bytes, object]:
    query = (f"info_hash={quote_from_bytes(INFO_HASH)}&peer_id={quote_from_bytes(peer)}"
             f"&port={port}&uploaded=0&downloaded=0&left={left}&compact=1")
    async with aiohttp.ClientSession() as session, session.get(f"{url}?{query}") as reply:
        body = decode(await reply.read())
    assert isinstance(body, dict)
    return body


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_tracker_runs_in_its_own_process_and_serves_the_swarm() -> None:
    async def scenario() -> None:
        swarm = await Swarm.start("127.0.0.1", INFO_HASH, "v1", hosts=2)
        try:
            assert swarm.proc.pid != os.getpid()
            assert swarm.route_target == ("127.0.0.1", int(swarm.announce_url.split(":")[2]
                                                          .split("/")[0]))
            assert swarm.expected == 3  # two hosts and the origin
            first = await _announce(swarm.announce_url, b"A" * 20, 7001, 100)
            assert b"failure reason" not in first
            second = await _announce(swarm.announce_url, b"B" * 20, 7002, 100)
            assert len(second[b"peers"]) == 6  # type: ignore[arg-type]  # the first peer
            await swarm.one_fewer()
            assert swarm.expected == 2
            await swarm.host_failed(b"A" * 20, None)
        finally:
            await swarm.stop()
        assert swarm.proc.returncode == 0
        assert _gone(swarm.proc.pid)
        assert swarm.cpu_s is not None and swarm.cpu_s > 0  # it said what it cost

    asyncio.run(scenario())


def test_a_tracker_that_cannot_listen_is_one_clear_error() -> None:
    async def scenario() -> None:
        with pytest.raises(RoostError, match=r"cannot listen on 192\.0\.2\.1"):
            await Swarm.start("192.0.2.1", INFO_HASH, "v1", hosts=1)  # not ours (TEST-NET-1)

    asyncio.run(scenario())
