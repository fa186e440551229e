"""Link shaping and loss rules for the fleet lab (pure: builds command text).

Theory of operation
-------------------
Every host has one link: a veth pair whose host end sits in the host's
namespace and whose other end sits in the switch namespace, on the bridge.
A link is shaped in both directions by an egress qdisc:

* upload   = egress of the host end (packets leaving the host), and
* download = egress of the switch end (packets the bridge hands to the host).

This kernel has no fq, fq_codel, sfq or netem, so a plain rate limiter is a
single FIFO and one TCP flow can starve another on the same link. With the
``htb`` shaper each link therefore gets one htb class per peer address
(classified by destination IP on upload, by source IP on download), each with
a guaranteed rate of R/(P+1) and a ceiling of R, plus a default class for
everything else (ARP, strangers). Classes borrow unused bandwidth in
round-robin with equal quantum, so k active flows to k distinct peers share
the link about evenly. ``tbf`` is the plain single-FIFO limiter, kept for
comparison.

Loss is emulated with an nftables rule in each host namespace that drops a
random fraction of incoming IPv4 packets (``numgen random``), at the
prerouting hook, so it applies to every packet the host receives.
"""

from __future__ import annotations

from collections.abc import Sequence

MTU_BYTES = 1514
# Per-class FIFO length in packets. Short enough to keep queueing delay sane at
# low rates, long enough for TCP to fill the link.
CLASS_QUEUE_PACKETS = 100
SHAPERS = ("htb", "tbf")


def _kbit(rate_mbit: float) -> int:
    return max(8, round(rate_mbit * 1000))


def _burst_bytes(rate_mbit: float) -> int:
    # About 2 ms worth of bytes, at least a few MTUs (GSO packets on veth can
    # be larger than one MTU; htb lets a class go into debt for those).
    return max(4 * MTU_BYTES, int(rate_mbit * 1e6 / 8 * 0.002))


def htb_batch(dev: str, rate_mbit: float, peer_ips: Sequence[str], match: str) -> str:
    """`tc -batch` text for an htb tree on `dev` with one class per peer.

    `match` is ``"dst"`` (upload side: classify by destination address) or
    ``"src"`` (download side: classify by source address).
    """
    if match not in ("dst", "src"):
        raise ValueError(f"match must be 'dst' or 'src', not {match!r}")
    if rate_mbit <= 0:
        raise ValueError("rate must be positive")
    total = _kbit(rate_mbit)
    share = max(8, total // (len(peer_ips) + 1))
    burst = _burst_bytes(rate_mbit)
    lines = [
        f"qdisc replace dev {dev} root handle 1: htb default 2",
        f"class add dev {dev} parent 1: classid 1:1 htb rate {total}kbit ceil {total}kbit "
        f"burst {burst} cburst {burst}",
    ]
    # Class 1:2 is the default class; peers use 1:10, 1:11, ... (hex minor ids).
    minors = [2] + [0x10 + i for i in range(len(peer_ips))]
    for minor in minors:
        cid = f"1:{minor:x}"
        lines.append(
            f"class add dev {dev} parent 1:1 classid {cid} htb rate {share}kbit "
            f"ceil {total}kbit burst {burst} cburst {burst} quantum {MTU_BYTES}"
        )
        lines.append(
            f"qdisc add dev {dev} parent {cid} handle {minor:x}: pfifo limit {CLASS_QUEUE_PACKETS}"
        )
    for minor, ip in zip(minors[1:], peer_ips, strict=True):
        lines.append(
            f"filter add dev {dev} parent 1: protocol ip prio 1 u32 "
            f"match ip {match} {ip}/32 flowid 1:{minor:x}"
        )
    return "\n".join(lines) + "\n"


def tbf_batch(dev: str, rate_mbit: float) -> str:
    """`tc -batch` text for a plain token bucket (single FIFO, no fairness)."""
    if rate_mbit <= 0:
        raise ValueError("rate must be positive")
    burst = _burst_bytes(rate_mbit)
    limit = burst + CLASS_QUEUE_PACKETS * MTU_BYTES
    return (
        f"qdisc replace dev {dev} root tbf rate {_kbit(rate_mbit)}kbit "
        f"burst {burst} limit {limit}\n"
    )


def shaping_batch(
    shaper: str, dev: str, rate_mbit: float, peer_ips: Sequence[str], match: str
) -> str:
    if shaper == "htb":
        return htb_batch(dev, rate_mbit, peer_ips, match)
    if shaper == "tbf":
        return tbf_batch(dev, rate_mbit)
    raise ValueError(f"unknown shaper {shaper!r} (choose from {', '.join(SHAPERS)})")


NFT_TABLE = "roostlab"


def loss_ruleset(loss_pct: float) -> str:
    """nftables script dropping `loss_pct` percent of incoming IPv4 packets."""
    if not 0 < loss_pct < 100:
        raise ValueError("loss_pct must be in (0, 100)")
    threshold = round(loss_pct * 100)  # in units of 0.01 %
    return (
        f"table ip {NFT_TABLE} {{\n"
        f"  chain loss {{\n"
        f"    type filter hook prerouting priority raw; policy accept;\n"
        f"    numgen random mod 10000 < {threshold} counter drop\n"
        f"  }}\n"
        f"}}\n"
    )
