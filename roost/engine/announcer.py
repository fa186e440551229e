"""A Session's tracker announces: started, periodic, completed, stopped.

Theory of operation. `run` is one background task of the Session: it
announces `started`, then again at the tracker's interval, and at once
(waking every 0.25 s to check) when the payload completes, so the tracker,
the deploy's source of truth for progress, learns it without delay. A failed
announce is retried with a growing pause (2 s per failure, at most 30 s).
Peers from a response become connection candidates at once; the expected and
complete peer counts feed the Session's completion policy.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from roost.engine.tracker_client import AnnounceResponse, TrackerClient, TrackerError

if TYPE_CHECKING:
    from roost.engine.session import Session

POLL_SECONDS = 0.25  # how often the wait between announces checks for completion


class Announcer:
    def __init__(self, session: Session, tiers: list[list[str]]) -> None:
        self.session = session
        self.tiers = tiers
        self.client: TrackerClient | None = None

    def start(self) -> None:
        """Make the tracker client, once the Session knows its listening port."""
        session = self.session
        if self.tiers:
            self.client = TrackerClient(
                self.tiers,
                info_hash=session.info_hash,
                peer_id=session.peer_id,
                port=session.port,
                location=session.config.location,
                ip=session.config.announce_ip,
            )

    async def announce(self, event: str | None) -> AnnounceResponse | None:
        if self.client is None:
            return None
        session = self.session
        return await self.client.announce(
            event=event,
            uploaded=session.uploaded,
            downloaded=session.downloaded,
            left=session.picker.bytes_left(),
            numwant=session.config.numwant,
        )

    async def announce_stopped(self) -> None:
        """At shutdown; best effort, bounded."""
        if self.client is not None:
            with contextlib.suppress(TrackerError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self.announce("stopped"), 3.0)

    async def run(self) -> None:
        session = self.session
        event: str | None = "started"
        completed_sent = session.complete
        failures = 0
        while not session.stopping.is_set():
            if self.client is None:
                return
            try:
                response = await self.announce(event)
            except TrackerError as exc:
                failures += 1
                session.reporter.event("tracker_error", message=str(exc))
                await self._sleep_or_stop(min(30.0, 2.0 * failures))
                continue
            failures = 0
            event = None
            if response is not None:
                self._on_response(response)
            if session.complete and not completed_sent:
                event, completed_sent = "completed", True
                continue
            interval = self.client.next_announce_in()
            waited = 0.0
            # wake early to send `completed` at once
            while waited < interval and not session.stopping.is_set():
                await self._sleep_or_stop(POLL_SECONDS)
                waited += POLL_SECONDS
                if session.complete and not completed_sent:
                    break

    def _on_response(self, response: AnnounceResponse) -> None:
        session = self.session
        session.reporter.event("announced", peers=len(response.peers))
        if response.expected_peers is not None:
            session.swarm_expected = response.expected_peers
        if response.complete_peers is not None:
            session.swarm_complete = response.complete_peers
        for address in response.peers:
            if self._is_self(address) or address in session.peers:
                continue
            session.candidates.setdefault(address, 0.0)
        session.connect_more()  # now, not at the next tick: startup time matters

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.session.stopping.wait(), seconds)

    def _is_self(self, address: tuple[str, int]) -> bool:
        session = self.session
        if address[1] != session.port:
            return False
        own = {session.config.announce_ip, session.config.listen_host, "127.0.0.1", "::1"}
        return address[0] in own
