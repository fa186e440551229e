"""`roost deploy --origin`: parsing, and a deploy through the local transport where
the hosts get the payload from origin hosts alone (`--no-local-origin`)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roost.commands.demo import local_connector
from roost.deploy.config import DeployConfig, HostSpec
from roost.deploy.origins import check_format, parse_origin, parse_origins
from roost.deploy.run import Deploy, new_deploy, run_deploy
from roost.deploy.view import report
from roost.errors import UsageError
from roost.target.protocol import OriginOrder, PayloadFormat, ProtocolError

FLEET = [HostSpec(name="web1", address="10.0.0.1", port=2222, user="ops", announce="10.9.0.1")]


def test_an_origin_is_host_colon_absolute_path() -> None:
    config = DeployConfig(user="deploy", ssh_port=2200)
    spec = parse_origin("build7:/srv/builds/app.bin", FLEET, config)
    assert (spec.host.address, spec.host.user, spec.host.port, spec.path) == (
        "build7", "deploy", 2200, "/srv/builds/app.bin")
    spec = parse_origin("root@build7:22:/srv/app/", FLEET, config)
    assert (spec.host.user, spec.host.port, spec.path) == ("root", 22, "/srv/app")
    assert parse_origin("[fd00::7]:/x", FLEET, config).host.address == "fd00::7"
    # a fleet host by its name keeps its inventory settings
    assert parse_origin("web1:/srv/app/a.bin", FLEET, config).host == FLEET[0]


@pytest.mark.parametrize("text", ["build7", "build7:", "build7:srv/app", ":/srv/app",
                                  "build7:/srv/../etc/shadow", "a b:/x"])
def test_a_bad_origin_is_one_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match=r"--origin|host"):
        parse_origin(text, FLEET, DeployConfig())


def test_origins_as_a_whole() -> None:
    with pytest.raises(UsageError, match="given twice"):
        parse_origins(DeployConfig(origins=["b:/x", "b:/x"]), FLEET)
    with pytest.raises(UsageError, match="--no-local-origin needs"):
        parse_origins(DeployConfig(local_origin=False), FLEET)
    with pytest.raises(UsageError, match="not tar"):
        check_format(parse_origins(DeployConfig(origins=["b:/x"]), FLEET), PayloadFormat.TAR)
    check_format([], PayloadFormat.TAR)  # no origin: any format


def test_the_origin_order_is_a_closed_record() -> None:
    order = OriginOrder("http://t/a", 5, "0", ("10.0.0.0/24",), 1e6, True)
    assert OriginOrder.from_json(order.to_json()) == order
    with pytest.raises(ProtocolError):
        OriginOrder.from_json('{"tracker": "http://t/a", "expected_peers": 1, "x": 1}')
    with pytest.raises(ProtocolError):
        OriginOrder.from_json('{"tracker": "http://t/a", "expected_peers": 1, "allow": [1]}')


def deploy(base: Path, src: Path, tag: str, origins: list[str], **settings: object) -> Deploy:
    config = DeployConfig(dest="/unused", python=sys.executable, port_range="0", timeout=60,
                          origins=origins, **settings)  # type: ignore[arg-type]
    hosts = [HostSpec(name=f"p{i}", address="127.0.0.1", dest=str(base / f"p{i}" / "app"))
             for i in range(2)]
    d = new_deploy(config, hosts, tag)
    asyncio.run(run_deploy(d, src, local_connector(base), listen="127.0.0.1"))
    return d


def test_origins_alone_seed_and_a_corrupt_copy_is_dropped(tmp_path: Path) -> None:
    data = os.urandom(1_500_000)
    src = tmp_path / "app.bin"
    src.write_bytes(data)
    build = tmp_path / "build" / "artifact-77.bin"  # another name than the payload's
    build.parent.mkdir()
    build.write_bytes(data)
    bad = tmp_path / "stale.bin"
    bad.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    base = tmp_path / "hosts"
    d = deploy(base, src, "o1", [f"o1:{build}", f"o2:{bad}"], local_origin=False)
    assert d.exit_code == 0, d.message
    for i in range(2):
        got = (base / f"p{i}" / "app" / "releases" / "o1" / "app.bin").read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    rows = {row["host"]: row for row in report(d)["origins"]}
    assert rows["o1"]["status"] == "stopped" and rows["o1"]["uploaded"] >= len(data)
    assert rows["o2"]["status"] == "failed" and rows["o2"]["kind"] == "origin"
    assert re.fullmatch(f"{re.escape(str(bad))} is not this payload: 1 of [0-9]+ pieces "
                        r"differ \(a stale or corrupt copy\); not seeding it",
                        rows["o2"]["reason"]), rows["o2"]["reason"]


def test_no_origin_left_stops_before_any_fetch(tmp_path: Path) -> None:
    src = tmp_path / "app.bin"
    src.write_bytes(os.urandom(100_000))
    base = tmp_path / "hosts"
    d = deploy(base, src, "o2", [f"o1:{tmp_path}/nothing.bin"], local_origin=False)
    assert d.exit_code == 1
    assert d.message == (f"no origin can seed the payload (o1:{tmp_path}/nothing.bin: "
                         f"{tmp_path}/nothing.bin does not exist on this host); "
                         "nothing was changed")
    for i in range(2):
        app = base / f"p{i}" / "app"
        assert not (app / "releases" / "o2").exists()
        assert list((app / ".roost" / "deploys").iterdir()) == []


def test_origins_from_roost_toml_and_flags(tmp_path: Path) -> None:
    from roost.commands.deploy import overrides
    from roost.deploy.config import load_config

    toml = tmp_path / "roost.toml"
    toml.write_text('[network]\norigins = "build7:/srv/app.bin"\nlocal_origin = false\n')
    config = load_config(toml, {})
    assert (config.origins, config.local_origin) == (["build7:/srv/app.bin"], False)
    flags = overrides({"origins": ("a:/x", "b:/y"), "no_local_origin": True})
    config = load_config(None, flags)
    assert (config.origins, config.local_origin) == (["a:/x", "b:/y"], False)
    assert load_config(None, overrides({"origins": (), "no_local_origin": False})).local_origin


def test_a_tree_is_seeded_from_an_origins_copy_of_the_directory(tmp_path: Path) -> None:
    import shutil

    from tests.deploy.trees import make_sample_tree, tree_signature

    src = make_sample_tree(tmp_path / "src", big=1_000_000)
    shutil.copytree(src, tmp_path / "build" / "out", symlinks=True)
    base = tmp_path / "hosts"
    d = deploy(base, src, "tr1", [f"o1:{tmp_path}/build/out"], local_origin=False)
    assert d.exit_code == 0, d.message
    for i in range(2):
        assert tree_signature(base / f"p{i}" / "app" / "releases" / "tr1") == tree_signature(src)
    assert d.origins[0].uploaded is not None and d.origins[0].uploaded > 1_000_000


def test_an_origin_path_may_be_a_link_but_its_tree_may_not_leave_it(tmp_path: Path) -> None:
    """`--origin web1:/srv/app/current` names a release through a link: served. A link
    inside the directory to a file beside it (outside PATH) is refused, even when that
    file holds the right bytes: the origin serves PATH and nothing else."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.bin").write_bytes(os.urandom(300_000))
    (src / "b.txt").write_bytes(b"config\n")
    build = tmp_path / "build"
    (build / "releases" / "r1" / "sub").mkdir(parents=True)
    (build / "releases" / "r1" / "sub" / "a.bin").write_bytes((src / "sub" / "a.bin").read_bytes())
    (build / "releases" / "r1" / "b.txt").write_bytes(b"config\n")
    (build / "current").symlink_to(build / "releases" / "r1")
    (build / "beside.txt").write_bytes(b"config\n")
    (build / "escape").mkdir()
    shutil.copytree(build / "releases" / "r1", build / "escape" / "out")
    os.unlink(build / "escape" / "out" / "b.txt")
    (build / "escape" / "out" / "b.txt").symlink_to(build / "escape" / "beside.txt")
    (build / "escape" / "beside.txt").write_bytes(b"config\n")
    base = tmp_path / "hosts"
    d = deploy(base, src, "l1", [f"o1:{build}/current", f"o2:{build}/escape/out"],
               local_origin=False, format="dir")
    assert d.exit_code == 0, d.message
    rows = {row["host"]: row for row in report(d)["origins"]}
    assert rows["o1"]["status"] == "stopped", rows["o1"]
    assert rows["o2"]["status"] == "failed" and "outside" in str(rows["o2"]["reason"]), rows
    for i in range(2):
        got = base / f"p{i}" / "app" / "releases" / "l1"
        assert (got / "b.txt").read_bytes() == b"config\n"


def test_an_unreadable_origin_copy_is_one_line(tmp_path: Path) -> None:
    """A link loop in the origin's copy is an OSError while hashing: the origin says
    what it could not read (not a traceback and `exit 1`)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(50_000))
    (src / "b.txt").write_bytes(b"config\n")
    out = tmp_path / "build" / "out"
    shutil.copytree(src, out)
    os.unlink(out / "b.txt")
    (out / "b.txt").symlink_to("b.txt")  # ELOOP
    base = tmp_path / "hosts"
    d = deploy(base, src, "e1", [f"o1:{out}"], format="dir")
    assert d.exit_code == 0, d.message  # this machine still seeds
    row = report(d)["origins"][0]
    assert row["status"] == "failed", row
    assert row["reason"] == f"cannot read {out}/b.txt: Too many levels of symbolic links"


def test_a_bad_configured_address_is_a_usage_error_not_a_traceback() -> None:
    """host-prepare and host-origin share announce_address: a ValueError there
    escaped the agent's RoostError handler as a traceback."""
    from argparse import Namespace

    from roost.target.hostops import announce_address

    ns = Namespace(address="10.0.0.300", interface=None, tracker_host=None, tracker_port=0)
    with pytest.raises(UsageError, match=r"^--address '10\.0\.0\.300' is not an IP address$"):
        announce_address(ns)
    assert announce_address(Namespace(**{**vars(ns), "address": "::ffff:10.0.0.3"})) \
        == "::ffff:a00:3"


@pytest.mark.parametrize(("key", "what"), [("allow", "networks"), ("web_seeds", "URLs"),
                                           ("origins", "HOST:/path")])
def test_a_network_list_of_other_than_strings_is_one_line(tmp_path: Path, key: str,
                                                         what: str) -> None:
    from roost.deploy.config import load_config

    toml = tmp_path / "roost.toml"
    toml.write_text(f"[network]\n{key} = [1]\n")
    with pytest.raises(UsageError, match=f"{key} must be a list of {re.escape(what)}$"):
        load_config(toml, {})
    toml.write_text(f'[network]\n{key} = "10.0.0.0/8"\n')
    assert getattr(load_config(toml, {}), key) == ["10.0.0.0/8"]


def test_the_allowlist_is_the_hosts_the_origins_and_this_machine_only_if_it_seeds() -> None:
    from roost.deploy.origins import RemoteOrigin
    from roost.deploy.run import _fleet_allow

    for local in (True, False):
        config = DeployConfig(origins=["10.0.0.9:/srv/app.bin"], local_origin=local)
        d = new_deploy(config, [HostSpec(name="h", address="10.0.0.5")], "t1")
        d.hosts[0].address = "10.0.1.5"
        d.origins = [RemoteOrigin(s) for s in parse_origins(config, [])]
        d.origins[0].address = "10.0.2.9"
        want = {"10.0.0.5/32", "10.0.1.5/32", "10.0.0.9/32", "10.0.2.9/32"}
        assert set(_fleet_allow(d, config, "10.0.3.1") or []) == (
            want | {"10.0.3.1/32"} if local else want)


class _EndedStream:
    """A seeder's stream that printed `printed` and then exited with `code`."""

    def __init__(self, printed: list[str], code: int) -> None:
        self.printed, self.code = printed, code

    async def _lines(self) -> AsyncIterator[str]:
        for line in self.printed:
            yield line

    def lines(self) -> AsyncIterator[str]:
        return self._lines()

    async def wait(self) -> int:
        return self.code

    def close(self) -> None:
        pass

    async def send(self, text: str, eof: bool = False) -> None:
        pass


def test_a_seeder_that_dies_says_why_in_its_row() -> None:
    from roost.deploy.origins import RemoteOrigin
    from roost.target.protocol import ErrorKind, ErrorRecord

    origin = RemoteOrigin(parse_origin("b:/x", [], DeployConfig()))
    stream = _EndedStream(['{"event": "started"}',
                           ErrorRecord(ErrorKind.ERROR, "disk read failed: EIO").to_json()], 1)
    origin.stream, origin.lines = stream, stream.lines()
    asyncio.run(origin._follow())
    assert origin.failed and origin.run.reason == (
        "the origin's seeder exited with 1 during the transfer: disk read failed: EIO")


def test_a_hostile_origin_path_is_one_argument_not_shell(tmp_path: Path) -> None:
    """PATH reaches the origin host through a shell (`sh -c`, as over SSH): quoted, it
    is one argument, in the dry run's look and in host-origin alike."""
    data = os.urandom(200_000)
    src = tmp_path / "app.bin"
    src.write_bytes(data)
    odd = tmp_path / "a b;$(touch pwned)`touch pwned2`'q\"" / "art.bin"
    odd.parent.mkdir()
    odd.write_bytes(data)
    base = tmp_path / "hosts"
    dry = deploy(base, src, "q1", [f"o1:{odd}"], local_origin=False, dry_run=True)
    assert dry.exit_code == 0, dry.message
    assert dry.origins[0].facts is not None and dry.origins[0].facts.size == len(data)
    d = deploy(base, src, "q1", [f"o1:{odd}"], local_origin=False)
    assert d.exit_code == 0, d.message
    assert d.origins[0].uploaded is not None and d.origins[0].uploaded >= len(data)
    assert [p for p in tmp_path.rglob("pwned*")] == []
