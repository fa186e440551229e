"""A Session's settings (SessionConfig) and the --allow address filter.

Standard library only: it runs on target hosts (see roost.layers).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from roost.engine.tls import PeerTLS
from roost.errors import RoostError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class SessionConfig:
    """A Session's settings; `roost fetch` and `roost seed` set them from their flags."""

    listen_host: str = "0.0.0.0"
    ports: tuple[int, int] = (6881, 6999)
    announce_ip: str | None = None
    max_peers: int = 60
    # upload to every interested peer: with fewer slots than peers, ranking by
    # rate lets the leaders pull ahead and the last host ends the deploy late
    # (lab, N=16: hosts finished 3.8 s apart with 8 slots, 0.7 s with all)
    unchoke_slots: int = 60
    allow: list[Network] | None = None
    upload_rate: float | None = None
    download_rate: float | None = None
    super_seed: bool = False
    seed: bool = True  # keep uploading after completion
    linger: float | None = 10.0  # None: never stop for lack of interest
    expected_peers: int | None = None
    stop_when_swarm_complete: bool = False
    location: str | None = None
    big_block: int = 256 * 1024
    initial_peers: list[tuple[str, int]] = field(default_factory=list)
    numwant: int = 200
    peer_id_prefix: bytes = b"-RO0100-"
    zero_copy: bool = True  # sendfile uploads where the transport allows (roost.engine.zerocopy)
    upload_log: str | None = None  # a JSON line per whole piece uploaded (BEP 16 audits)
    tls: PeerTLS | None = None  # mutual TLS with the deploy CA (roost.engine.tls)


def parse_allow(entries: list[str]) -> list[Network]:
    """CIDRs or addresses, as given to --allow."""
    nets: list[Network] = []
    for entry in entries:
        for item in entry.replace(",", " ").split():
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise RoostError(f"--allow: {item!r} is not an address or network") from None
    return nets
