"""Stall diagnostics: say why a download makes no progress.

When no piece has been verified for STALL_SECONDS while the payload is
incomplete, a `stalled` event lists the first missing pieces and, per peer,
why it is not feeding us (choked, not interested, nothing we miss, snubbed,
its socket full...), once a period, so a stuck swarm can be diagnosed from
the JSON log alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roost.engine.session import Session

STALL_SECONDS = 10.0


class StallReporter:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._mark = -1  # bytes done when progress was last seen
        self._since = 0.0

    def check(self, now: float) -> None:
        """Called every tick."""
        session = self.session
        done = session.bytes_done()
        if done != self._mark:
            self._mark, self._since = done, now
            return
        if session.complete or now - self._since < STALL_SECONDS:
            return
        self._since = now
        missing = [i for i in range(session.num_pieces) if not session.have[i]][:8]
        peers = [
            {
                "peer": f"{p.address[0]}:{p.address[1]}",
                "choked_us": p.peer_choking,
                "interested": p.am_interested,
                "outstanding": len(p.outstanding),
                "has_missing": sum(1 for i in missing if p.bitfield[i]),
                "snubbed": p.snubbed,
                "write_paused": p.write_paused,
                "queue": len(p.upload_queue),
            }
            for p in session.peers.values()
            if p.ready
        ]
        session.reporter.event(
            "stalled",
            missing=missing,
            verifying=len(session.verifier.verifying),
            buffers=len(session.verifier.buffers),
            peers=peers,
        )
