"""Who may join a deploy's swarm: the fleet's own addresses, unless widened.

A deploy knows every address its peers use: the one each host announces
(reported by host-prepare; the host also listens and dials from it), the
host's SSH address, and the origin's. Peers and the origin get exactly those
as `--allow`, so a machine outside the deploy can neither take a slot nor
fetch the payload. `network.allow` / `--allow` adds networks (for a host
behind NAT, whose connections come from an address the deploy never sees),
and `any` turns the filter off.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable

from roost.errors import UsageError

ANY = "any"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def check_extra(extra: Iterable[str]) -> list[str]:
    """The operator's additions, validated early: CIDRs, addresses, or `any`."""
    out: list[str] = []
    for entry in extra:
        for item in entry.replace(",", " ").split():
            if item != ANY:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    msg = f"allow: {item!r} is not an address, a network or 'any'"
                    raise UsageError(msg) from None
            out.append(item)
    return out


def resolve(host: str) -> list[str]:
    """The addresses of an SSH host name (an address stays itself); none on failure."""
    with contextlib.suppress(ValueError):
        return [str(ipaddress.ip_address(host))]
    with contextlib.suppress(OSError, UnicodeError):
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return sorted({str(info[4][0]) for info in infos})
    return []


def fleet_allowlist(addresses: Iterable[str | None], extra: Iterable[str]) -> list[str] | None:
    """`--allow` entries for the swarm's peers and origin; None: any address."""
    extra = check_extra(extra)
    if ANY in extra:
        return None
    found: list[Address] = []
    for text in addresses:
        if text:
            with contextlib.suppress(ValueError):
                addr = ipaddress.ip_address(text)
                if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
                    addr = addr.ipv4_mapped
                found.append(addr)
    v4 = sorted({a for a in found if isinstance(a, ipaddress.IPv4Address)})
    v6 = sorted({a for a in found if isinstance(a, ipaddress.IPv6Address)})
    # contiguous addresses collapse into networks: a short command line for a big fleet
    nets = [
        *ipaddress.collapse_addresses(ipaddress.IPv4Network(a) for a in v4),
        *ipaddress.collapse_addresses(ipaddress.IPv6Network(a) for a in v6),
    ]
    return [str(n) for n in nets] + extra
