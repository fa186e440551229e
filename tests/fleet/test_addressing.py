"""Addressing end to end: the address a host advertises, over real SSH (root; see fleet.py).

Each test gives one or more hosts a second address that differs from the
source address of the host's route to the tracker, deploys with real sshd
and the embedded tracker, and proves which address the swarm used, two
ways that both fail if the deploy advertised the other address:

* the tracker's own peer list (its public status endpoint, polled during the
  deploy with the announce URL read from the host's `roost fetch` command
  line) holds exactly the expected addresses;
* nftables counters inside the host's namespace: peer connections (TCP
  SYNs on the peer ports, PEER_PORTS) went to or left from the expected
  address, and not one packet of peer traffic, either direction, used the
  other address. Each pair of peers holds one connection, opened by
  whichever learnt of the other first (the other does not dial back), so a
  host may have only incoming or only outgoing ones.

The last test's configured address belongs to a NAT in front of the host
(the bridge): the host announces it, cannot bind it, and is reached through it.

The transfer is slowed (`--download-rate`) so that it spans several of the
tracker's 2 s announce intervals: every peer re-announces while the others
still run, so every peer learns every other peer's advertised address.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool
from tests.deploy.trees import make_sample_tree
from tests.fleet.conftest import require_fleet_tools
from tests.fleet.fleet import Fleet, in_ns, sh
from tests.fleet.helpers import ROOT, by_host

pytestmark = [pytest.mark.root, pytest.mark.slow]

PEER_PORTS = "6881-6999"  # network.port_range's default: every host's peer listen port
TABLE = "roostaddr"
DEPLOY_TIMEOUT = 180.0
SYN = "tcp flags & (syn | ack) == syn"  # a connection's first packet


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    """Three hosts, fresh per test: each test rewires addresses and routes."""
    require_fleet_tools()
    require_tool("nft")
    with Fleet(3, dest_size="64m") as fleet:
        yield fleet


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_tree(tmp_path_factory.mktemp("release") / "app", big=8_000_000)


# --- network setup inside the fleet's namespaces -------------------------------------------


def route_source(fleet: Fleet, i: int, target: str) -> str:
    """What the kernel of host i picks as source toward `target` (`ip route get`)."""
    family = "-6" if ":" in target else "-4"
    words = in_ns(fleet.hosts[i].ns, "ip", family, "-o", "route", "get", target).split()
    return words[words.index("src") + 1]


def add_nic(fleet: Fleet, i: int, name: str, cidr: str) -> None:
    """A second NIC on host i: a veth into the fleet's bridge holding `cidr`.

    Its subnet route gets metric 1024, above eth0's (0 for IPv4, 256 for IPv6), and
    an IPv6 address is deprecated: so the route to the tracker, and its source, stay
    on eth0, and the two candidate addresses differ."""
    ns = fleet.hosts[i].ns
    sh("ip", "link", "add", name, "netns", ns, "type", "veth",
       "peer", "name", f"{name}h{i}", "netns", fleet.switch_ns)
    extra = ["nodad", "preferred_lft", "0"] if ":" in cidr else []
    in_ns(ns, "ip", "addr", "add", cidr, "dev", name, "metric", "1024", *extra)
    in_ns(ns, "ip", "link", "set", name, "up")
    in_ns(fleet.switch_ns, "ip", "link", "set", f"{name}h{i}", "master", "br0", "up")
    # packets for one address may arrive on the other NIC (both sit on one bridge)
    in_ns(ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
          f"net.ipv4.conf.{name}.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0")


def count_peer_traffic(fleet: Fleet, i: int, used: str, avoided: str) -> None:
    """nftables counters in host i: connections to/from `used` on peer ports, and
    any peer-port packet at all on `avoided`."""
    fam = "ip6" if ":" in used else "ip"
    syn = SYN
    rules = f"""table inet {TABLE} {{
 counter syn_in_used {{}}
 counter syn_out_used {{}}
 counter in_avoided {{}}
 counter out_avoided {{}}
 chain input {{
  type filter hook input priority 0; policy accept;
  {fam} daddr {used} tcp dport {PEER_PORTS} {syn} counter name syn_in_used
  {fam} daddr {avoided} tcp dport {PEER_PORTS} counter name in_avoided
 }}
 chain output {{
  type filter hook output priority 0; policy accept;
  {fam} saddr {used} tcp dport {PEER_PORTS} {syn} counter name syn_out_used
  {fam} saddr {avoided} tcp dport {PEER_PORTS} counter name out_avoided
  {fam} saddr {avoided} tcp sport {PEER_PORTS} counter name out_avoided
 }}
}}
"""
    in_ns(fleet.hosts[i].ns, "nft", "-f", "-", input=rules)


def counters(fleet: Fleet, i: int) -> dict[str, int]:
    data = json.loads(in_ns(fleet.hosts[i].ns, "nft", "-j", "list", "table", "inet", TABLE))
    return {item["counter"]["name"]: int(item["counter"]["packets"])
            for item in data["nftables"] if "counter" in item}


# --- the deploy, watched -------------------------------------------------------------------


def write_inventory(path: Path, fleet: Fleet, v6: bool = False,
                    host_vars: dict[int, str] | None = None) -> Path:
    lines = ["[web]"]
    for i, host in enumerate(fleet.hosts):
        address = host.address6 if v6 else host.address
        lines.append(f"h{i} ansible_host={address} {(host_vars or {}).get(i, '')}".rstrip())
    path.write_text("\n".join(lines) + "\n")
    return path


def deploy_argv(fleet: Fleet, src: Path, inventory: Path, tag: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "roost", "deploy", str(src), "-i", str(inventory),
            "--dest", str(fleet.dest), "--user", "root", "--key", str(fleet.key),
            "--known-hosts", str(fleet.known_hosts), "--connect-timeout", "5", "--json",
            "--tag", tag, "--download-rate", "2M", *extra]


@dataclass
class Watched:
    code: int
    report: dict[str, Any]
    stderr: str
    advertised: set[str]  # every peer address the tracker listed during the deploy


def status_url(fleet: Fleet, i: int) -> str | None:
    """The swarm's status URL, from the announce URL on host i's `roost fetch` command
    line (the secret token is in it; the test runs as root on the same machine)."""
    for pid in fleet.extra_pids(i):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            if "fetch" in argv and "--tracker" in argv:
                announce = argv[argv.index("--tracker") + 1]
                base, secret, _ = announce.rsplit("/", 2)  # <base>/<secret>/announce
                return f"{base}/status/{secret}"
    return None


def watch_deploy(fleet: Fleet, argv: list[str], subject: int) -> Watched:
    """Run the deploy; meanwhile collect the tracker's peer list as it changes."""
    advertised: set[str] = set()
    url: str | None = None
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + DEPLOY_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            url = url or status_url(fleet, subject)
            if url is not None:
                with contextlib.suppress(OSError, ValueError):  # the swarm may be gone
                    with urllib.request.urlopen(url, timeout=2) as response:
                        status = json.loads(response.read())
                    advertised |= {p["address"] for p in status["peers"]}
            time.sleep(0.2)
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:  # ours, by pid: SIGINT makes it clean the hosts up
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    try:
        report = json.loads(out)
    except ValueError:
        raise AssertionError(f"no JSON report (exit {proc.returncode}):\n{err[-3000:]}") from None
    return Watched(proc.returncode, report, err, advertised)


def assert_swarm_used(fleet: Fleet, watched: Watched, expected: dict[int, str],
                      avoided: dict[int, str], gateway: str) -> None:
    """Host i advertised expected[i] and the swarm used it; avoided[i] carried nothing."""
    assert watched.code == 0, (watched.report["message"], watched.stderr[-2000:])
    rows = by_host(watched.report)
    assert {name: row["status"] for name, row in rows.items()} == {
        f"h{i}": "ok" for i in range(fleet.n)}
    for i, address in expected.items():
        assert rows[f"h{i}"]["announce"] == address
    # the tracker handed out these addresses and no others: the origin's and the hosts'
    assert watched.advertised == {gateway, *expected.values()}, watched.advertised
    for i, address in avoided.items():
        seen = counters(fleet, i)
        # one connection per pair of peers: whichever learnt of the other first
        # dials, the other never dials back (roost.core.peers.listens_at), so a
        # host may have only incoming or only outgoing ones; either way they use
        # the expected address, and the avoided one carries nothing (below)
        assert seen["syn_in_used"] + seen["syn_out_used"] > 0, (
            f"no peer connection to or from h{i}'s {expected[i]}: {seen}")
        assert seen["in_avoided"] == 0 and seen["out_avoided"] == 0, (
            f"peer traffic on h{i}'s {address}: {seen}")


# --- the tests -----------------------------------------------------------------------------


def test_a_configured_address_is_what_the_swarm_uses(fleet: Fleet, src: Path,
                                                     tmp_path: Path) -> None:
    """roost_address in the inventory: h0 advertises a second address on eth0, not the
    source of its route to the tracker (its primary, also the SSH address)."""
    configured = f"10.78.{fleet.subnet}.100"
    in_ns(fleet.hosts[0].ns, "ip", "addr", "add", f"{configured}/24", "dev", "eth0")
    route = route_source(fleet, 0, fleet.gateway)
    assert route == fleet.hosts[0].address != configured  # the two candidates differ
    count_peer_traffic(fleet, 0, used=configured, avoided=route)
    inventory = write_inventory(tmp_path / "inv.ini", fleet,
                                host_vars={0: f"roost_address={configured}"})
    watched = watch_deploy(fleet, deploy_argv(fleet, src, inventory, "v-conf"), subject=0)
    expected = {0: configured, 1: fleet.hosts[1].address, 2: fleet.hosts[2].address}
    assert_swarm_used(fleet, watched, expected, {0: route}, fleet.gateway)


def test_the_interface_key_announces_that_interfaces_address(fleet: Fleet, src: Path,
                                                             tmp_path: Path) -> None:
    """network.interface in roost.toml: every host has a second NIC `adv0` and
    advertises its address, though its route to the tracker leaves by eth0."""
    adv = {i: f"10.78.{fleet.subnet}.{110 + i}" for i in range(fleet.n)}
    for i in range(fleet.n):
        add_nic(fleet, i, "adv0", f"{adv[i]}/24")
    routes = {i: route_source(fleet, i, fleet.gateway) for i in range(fleet.n)}
    assert routes == {i: h.address for i, h in enumerate(fleet.hosts)}
    for i in range(fleet.n):
        count_peer_traffic(fleet, i, used=adv[i], avoided=routes[i])
    inventory = write_inventory(tmp_path / "inv.ini", fleet)
    config = tmp_path / "roost.toml"
    config.write_text('[network]\ninterface = "adv0"\n')
    watched = watch_deploy(fleet, deploy_argv(fleet, src, inventory, "v-if", "-c", str(config)),
                           subject=0)
    assert_swarm_used(fleet, watched, adv, routes, fleet.gateway)


def test_by_default_the_route_source_is_announced(fleet: Fleet, src: Path,
                                                  tmp_path: Path) -> None:
    """No configuration: h2's route to the tracker takes a source that is neither its
    SSH address nor eth0's primary, and that source is what the swarm uses."""
    route_src = f"10.78.{fleet.subnet}.120"
    ns = fleet.hosts[2].ns
    in_ns(ns, "ip", "addr", "add", f"{route_src}/24", "dev", "eth0")
    in_ns(ns, "ip", "route", "add", f"{fleet.gateway}/32", "dev", "eth0", "src", route_src)
    assert route_source(fleet, 2, fleet.gateway) == route_src
    count_peer_traffic(fleet, 2, used=route_src, avoided=fleet.hosts[2].address)
    inventory = write_inventory(tmp_path / "inv.ini", fleet)
    watched = watch_deploy(fleet, deploy_argv(fleet, src, inventory, "v-route"), subject=2)
    expected = {0: fleet.hosts[0].address, 1: fleet.hosts[1].address, 2: route_src}
    assert_swarm_used(fleet, watched, expected, {2: fleet.hosts[2].address}, fleet.gateway)


def test_ipv6_a_per_host_interface(fleet: Fleet, src: Path, tmp_path: Path) -> None:
    """IPv6 throughout: roost_interface for h1 only; its `adv0` holds a global address
    (deprecated, so never a route's source) that the swarm must use."""
    adv = f"fd78:{fleet.subnet:x}::6f"
    add_nic(fleet, 1, "adv0", f"{adv}/64")
    route = route_source(fleet, 1, fleet.gateway6)
    assert route == fleet.hosts[1].address6
    count_peer_traffic(fleet, 1, used=adv, avoided=route)
    inventory = write_inventory(tmp_path / "inv.ini", fleet, v6=True,
                                host_vars={1: "roost_interface=adv0"})
    watched = watch_deploy(fleet, deploy_argv(fleet, src, inventory, "v-six"), subject=1)
    expected = {0: fleet.hosts[0].address6, 1: adv, 2: fleet.hosts[2].address6}
    assert_swarm_used(fleet, watched, expected, {1: route}, fleet.gateway6)


def test_a_configured_address_forwarded_to_the_host_is_announced_not_bound(
        fleet: Fleet, src: Path, tmp_path: Path) -> None:
    """roost_address need not be on the host: here the bridge (a NAT box) owns .200
    and forwards its peer ports to h0. h0 announces .200, listens on every address,
    and every peer reaches it through the NAT, none at its own address."""
    forwarded, h0 = f"10.78.{fleet.subnet}.200", fleet.hosts[0].address
    sw = fleet.switch_ns
    in_ns(sw, "ip", "addr", "add", f"{forwarded}/24", "dev", "br0")
    # a router that must not tell peers to skip it (an ICMP redirect to h0 would)
    in_ns(sw, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
          "net.ipv4.conf.br0.send_redirects=0")
    in_ns(sw, "nft", "-f", "-", input=f"""table ip {TABLE} {{
 counter syn_forwarded {{}}
 chain pre {{
  type nat hook prerouting priority dstnat; policy accept;
  ip daddr {forwarded} tcp dport {PEER_PORTS} {SYN} counter name syn_forwarded dnat to {h0}
 }}
 chain post {{
  type nat hook postrouting priority srcnat; policy accept;
  ip daddr {h0} tcp dport {PEER_PORTS} ct status dnat masquerade
 }}
}}
""")
    # in h0: SYNs to its peer port that did not come through the NAT (masqueraded)
    in_ns(fleet.hosts[0].ns, "nft", "-f", "-", input=f"""table inet {TABLE} {{
 counter syn_direct {{}}
 chain input {{
  type filter hook input priority 0; policy accept;
  ip daddr {h0} ip saddr != {forwarded} tcp dport {PEER_PORTS} {SYN} counter name syn_direct
 }}
}}
""")
    inventory = write_inventory(tmp_path / "inv.ini", fleet,
                                host_vars={0: f"roost_address={forwarded}"})
    watched = watch_deploy(fleet, deploy_argv(fleet, src, inventory, "v-nat"), subject=0)
    assert watched.code == 0, (watched.report["message"], watched.report["hosts"])
    assert by_host(watched.report)["h0"]["announce"] == forwarded
    assert watched.advertised == {fleet.gateway, forwarded, fleet.hosts[1].address,
                                  fleet.hosts[2].address}, watched.advertised
    nat = json.loads(in_ns(sw, "nft", "-j", "list", "table", "ip", TABLE))
    (forwarded_syns,) = [c["counter"]["packets"] for c in nat["nftables"] if "counter" in c]
    assert forwarded_syns > 0, "no peer connected through the forwarded address"
    assert counters(fleet, 0) == {"syn_direct": 0}
