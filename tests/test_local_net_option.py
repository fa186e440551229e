"""`fetch --local-net CIDR` reaches the member's config (zone locality)."""

from __future__ import annotations

import argparse
import ipaddress

import pytest

from roost.errors import RoostError
from roost.target.fetch_seed import add_fetch, make_config


def parse(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_fetch(parser)
    return parser.parse_args(["x.torrent", *args])


def test_local_net_sets_the_zone() -> None:
    config = make_config(parse(["--local-net", "10.16.0.0/12", "--local-net", "10.99.0.1"]))
    assert config.local_nets == [
        ipaddress.ip_network("10.16.0.0/12"), ipaddress.ip_network("10.99.0.1/32")
    ]
    assert config.is_local("10.20.0.9") and not config.is_local("10.32.0.9")


def test_no_local_net_means_no_zones() -> None:
    assert make_config(parse([])).local_nets is None


def test_a_bad_local_net_is_one_clear_error() -> None:
    with pytest.raises(RoostError, match="--local-net: 'nope'"):
        make_config(parse(["--local-net", "nope"]))
