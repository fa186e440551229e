"""A location's networks reach its hosts' fetches as --local-net (zone locality):
from roost.toml or --location-net, checked before any host is touched."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from roost.commands.demo import local_connector
from roost.deploy.config import (
    DeployConfig,
    check_location_nets,
    load_config,
    parse_location_nets,
)
from roost.deploy.run import new_deploy, run_deploy
from roost.deploy.transport import Transport
from roost.errors import UsageError
from roost.target import agentargv
from tests.deploy.test_local_deploy import hosts
from tests.deploy.trees import make_sample_tree, tree_signature


def test_the_toml_table_takes_one_network_or_a_list(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    path.write_text('[hosts]\nlocation_nets = { rack1 = "10.1.0.0/16", '
                    'rack2 = ["10.2.0.0/16", "fd00:2::/48"] }\n')
    config = load_config(path, {})
    assert config.location_nets == {"rack1": ["10.1.0.0/16"],
                                    "rack2": ["10.2.0.0/16", "fd00:2::/48"]}
    path.write_text("[hosts]\nlocation_nets = { rack1 = 7 }\n")
    with pytest.raises(UsageError, match="location_nets must map location labels"):
        load_config(path, {})


def test_flags_are_label_equals_networks_and_every_network_is_checked() -> None:
    table = parse_location_nets(["rack1=10.1.0.0/16", "rack1=10.9.0.1", "rack2=10.2.0.0/16,::1"])
    assert check_location_nets(table) == {"rack1": ["10.1.0.0/16", "10.9.0.1/32"],
                                          "rack2": ["10.2.0.0/16", "::1/128"]}
    with pytest.raises(UsageError, match="not LABEL=CIDR"):
        parse_location_nets(["10.1.0.0/16"])
    with pytest.raises(UsageError, match=r"'10.1.0.300' \(location 'rack1'\) is not an address"):
        check_location_nets({"rack1": ["10.1.0.300"]})


def test_a_bad_location_network_is_one_line_before_any_host(tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", big=1_000)
    done = subprocess.run(
        [sys.executable, "-m", "roost", "deploy", str(src), "--hosts", "127.0.0.1:1",
         "--dest", "/srv/app", "--location-net", "r1=nonsense"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "roost: error: location_nets: 'nonsense' (location 'r1') is not an address "
        "or a network"]


@pytest.mark.slow
def test_each_hosts_fetch_gets_its_own_locations_networks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    told: dict[str, list[str]] = {}
    real_fetch = agentargv.fetch

    def fetch(a: agentargv.FetchArgs) -> list[str]:
        argv = real_fetch(a)
        told[a.dest or ""] = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--local-net"]
        return argv

    monkeypatch.setattr(agentargv, "fetch", fetch)
    src = make_sample_tree(tmp_path / "src", big=100_000)
    base = tmp_path / "hosts"
    specs = hosts(base, 3)
    specs = [replace(specs[0], location="rack1"), replace(specs[1], location="rack2"), specs[2]]
    config = DeployConfig(dest="/unused", python=sys.executable, port_range="0", timeout=120,
                          location_nets={"rack1": ["127.0.0.0/8"], "rack2": ["10.9.0.0/16"]})
    d = new_deploy(config, specs, "r1")
    connect = local_connector(base)

    async def connector(spec: Any) -> Transport:
        return await connect(spec)

    asyncio.run(run_deploy(d, src, connector, listen="127.0.0.1"))
    # every fetch parsed its flags and finished: rack2's host sees every peer as
    # remote (one request in flight each), and still completes
    assert d.exit_code == 0, [h.reason for h in d.hosts]
    assert told == {str(base / "p0" / "app"): ["127.0.0.0/8"],
                    str(base / "p1" / "app"): ["10.9.0.0/16"],
                    str(base / "p2" / "app"): []}
    for i in range(3):
        assert tree_signature(base / f"p{i}" / "app" / "current") == tree_signature(src)
