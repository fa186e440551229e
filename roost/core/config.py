"""A swarm member's settings (MemberConfig). Pure.

These are the policy's knobs only: how many peers, how many upload slots,
rate caps, the address allowlist, super-seeding, and when to leave (seed,
linger, the expected swarm). What only the asyncio adapter needs (ports,
TLS, the tracker client's own settings, zero copy) is in
roost.engine.config.SessionConfig, which extends this class.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from roost.core.actions import Address

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class MemberConfig:
    """The policy settings of a swarm member (the engine's SessionConfig extends it)."""

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
    big_block: int = 256 * 1024
    # the picker's block: what one request asks at least. 16 KiB (BEP 3) is
    # what any client serves; only a swarm of roost peers that all accept
    # big_block may use more (the simulator does, to model fewer blocks)
    picker_block: int = 16 * 1024
    initial_peers: list[Address] = field(default_factory=list)
    peer_id_prefix: bytes = b"-RO0100-"
    # how we are known, to recognise ourselves in a tracker's peer list
    listen_host: str = "0.0.0.0"
    announce_ip: str | None = None
    # our zone's addresses: peers outside them are remote (one request in
    # flight; asked only for pieces no peer of our zone has). None: no zones
    local_nets: list[Network] | None = None

    def is_local(self, host: str) -> bool:
        """A peer at this address is in our zone (always, without local_nets)."""
        if self.local_nets is None:
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self.local_nets)
