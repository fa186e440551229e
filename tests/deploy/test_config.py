"""roost.toml, flags, host lists and Ansible inventories (INI and YAML)."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.deploy.config import (
    load_config,
    parse_host,
    parse_min_success,
    parse_rate,
    resolve_hosts,
)
from roost.errors import UsageError

INI = """\
# a comment
lonely.example ansible_host=10.0.0.9

[web]
web[01:03] roost_location=rack1
web-b ansible_host=10.0.1.5 ansible_port=2222 ansible_user=deploy roost_address=10.9.9.9

[db]
db1 roost_interface=eth1

[app:children]
web

[app:vars]
roost_location=zone-a
"""

YAML = """\
all:
  vars:
    roost_location: dc1
  children:
    web:
      hosts:
        w1: {ansible_host: 192.0.2.1}
        w2:
    db:
      hosts:
        d1: {ansible_port: 2200, roost_dest: /opt/db}
      vars:
        roost_location: dc2
"""


def test_toml_then_flags_override(tmp_path: Path) -> None:
    toml = tmp_path / "roost.toml"
    toml.write_text('[deploy]\ndest = "/srv/app"\nkeep = 3\nmin_success = 0.9\n'
                    '[hosts]\nlist = ["a", "root@b:2222"]\n[ssh]\nuser = "deploy"\n'
                    '[network]\nupload_rate = "100mbit"\n')
    config = load_config(toml, {"keep": 7, "tag": None})
    assert (config.dest, config.keep, config.min_success) == ("/srv/app", 7, "0.9")
    hosts = resolve_hosts(config)
    assert [(h.address, h.port, h.user) for h in hosts] == [("a", None, "deploy"),
                                                           ("b", 2222, "root")]


@pytest.mark.parametrize("text", ["[deploy]\nnope = 1\n", "[weird]\n", "dest = \n"])
def test_bad_toml_is_one_clear_error(tmp_path: Path, text: str) -> None:
    toml = tmp_path / "roost.toml"
    toml.write_text(text)
    with pytest.raises(UsageError):
        load_config(toml, {})


def test_ini_inventory_groups_children_vars_and_ranges(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text(INI)
    config = load_config(None, {"inventory": str(inv), "groups": ["app"]})
    hosts = {h.name: h for h in resolve_hosts(config)}
    assert sorted(hosts) == ["web-b", "web01", "web02", "web03"]
    assert hosts["web01"].location == "rack1"  # host var beats group var
    b = hosts["web-b"]
    assert (b.address, b.port, b.user, b.announce, b.location) == (
        "10.0.1.5", 2222, "deploy", "10.9.9.9", "zone-a")
    every = {h.name for h in resolve_hosts(load_config(None, {"inventory": str(inv)}))}
    assert {"lonely.example", "db1", "web02"} <= every
    with pytest.raises(UsageError, match="no group"):
        resolve_hosts(load_config(None, {"inventory": str(inv), "groups": ["nope"]}))


def test_yaml_inventory(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text(YAML)
    hosts = {h.name: h for h in resolve_hosts(load_config(None, {"inventory": str(inv)}))}
    assert hosts["w1"].address == "192.0.2.1" and hosts["w1"].location == "dc1"
    assert hosts["d1"].port == 2200 and hosts["d1"].location == "dc2"
    assert hosts["d1"].dest == "/opt/db"
    only_db = resolve_hosts(load_config(None, {"inventory": str(inv), "groups": ["db"]}))
    assert [h.name for h in only_db] == ["d1"]


def test_hosts_file_and_ipv6(tmp_path: Path) -> None:
    f = tmp_path / "hosts.txt"
    f.write_text("# fleet\n10.0.0.1\nops@[fd00::5]:2200  # v6\n\n")
    hosts = resolve_hosts(load_config(None, {"hosts_file": str(f)}))
    assert [(h.address, h.port, h.user) for h in hosts] == [("10.0.0.1", None, None),
                                                           ("fd00::5", 2200, "ops")]
    with pytest.raises(UsageError):
        parse_host("a b")
    with pytest.raises(UsageError, match="no hosts"):
        resolve_hosts(load_config(None, {}))


@pytest.mark.parametrize(("text", "total", "need"), [
    ("100%", 10, 10), ("90%", 10, 9), ("0.75", 10, 8), ("7", 10, 7), ("0", 3, 0),
    ("1.0", 3, 3), ("95%", 3, 3),
])
def test_min_success(text: str, total: int, need: int) -> None:
    assert parse_min_success(text, total) == need


@pytest.mark.parametrize("text", ["11", "-1", "lots", "150%"])
def test_bad_min_success(text: str) -> None:
    with pytest.raises(UsageError):
        parse_min_success(text, 10)


def test_rates() -> None:
    assert parse_rate("100mbit") == 12.5e6
    assert parse_rate("20M") == 20 * 2**20
    with pytest.raises(UsageError):
        parse_rate("fast")
