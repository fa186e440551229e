"""Stall diagnostics: say why a download makes no progress. Pure.

When no piece has passed for STALL_SECONDS while the payload is incomplete,
a `stalled` report lists the first missing pieces and, per peer, why it is
not feeding us (it chokes us, we are not interested, it has nothing we
miss, it is snubbed, our send window to it is full...), once a period, so a
stuck swarm can be diagnosed from the JSON log alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from roost.core.actions import Report
from roost.core.assembly import Assembly
from roost.core.bitfield import Bitfield
from roost.core.conn import Conn

STALL_SECONDS = 10.0


class StallWatch:
    def __init__(self) -> None:
        self._mark = -1  # bytes done when progress was last seen
        self._since = 0.0

    def check(
        self, now: float, done: int, have: Bitfield, conns: Iterable[Conn], assembly: Assembly
    ) -> Report | None:
        """Called every tick; a report when one is due."""
        if done != self._mark:
            self._mark, self._since = done, now
            return None
        if have.all() or now - self._since < STALL_SECONDS:
            return None
        self._since = now
        missing = [i for i in range(len(have)) if not have[i]][:8]
        peers = [
            {
                "peer": c.name,
                "choked_us": c.peer_choking,
                "interested": c.am_interested,
                "outstanding": len(c.outstanding),
                "has_missing": sum(1 for i in missing if c.bitfield[i]),
                "snubbed": c.snubbed,
                "write_paused": c.waiting_room,
                "queue": len(c.upload_queue),
            }
            for c in conns
            if c.ready
        ]
        fields = {
            "missing": missing,
            "verifying": len(assembly.checking),
            "buffers": len(assembly.buffers),
            "peers": peers,
        }
        return Report("stalled", fields)
