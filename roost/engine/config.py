"""A Session's settings (SessionConfig) and the --allow address filter.

Standard library only: it runs on target hosts (see roost.layers). The
swarm policy's own settings are roost.core.member.MemberConfig; this adds
what only the adapter uses (ports, TLS, the tracker client, zero copy).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from roost.core.config import MemberConfig, Network
from roost.engine.tls import PeerTLS
from roost.errors import RoostError

__all__ = ["Network", "SessionConfig", "parse_allow"]


@dataclass
class SessionConfig(MemberConfig):
    """A Session's settings; `roost fetch` and `roost seed` set them from their flags."""

    ports: tuple[int, int] = (6881, 6999)
    location: str | None = None
    numwant: int = 200
    zero_copy: bool = True  # sendfile uploads where the transport allows (roost.engine.zerocopy)
    upload_log: str | None = None  # a JSON line per whole piece uploaded (BEP 16 audits)
    tls: PeerTLS | None = None  # mutual TLS with the deploy CA (roost.engine.tls)
    loop_stall: float = 1.0  # report an event-loop lag over this many s (roost.engine.loopwatch)


def parse_allow(entries: list[str], flag: str = "--allow") -> list[Network]:
    """CIDRs or addresses, as given to --allow (or --local-net)."""
    nets: list[Network] = []
    for entry in entries:
        for item in entry.replace(",", " ").split():
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise RoostError(f"{flag}: {item!r} is not an address or network") from None
    return nets
