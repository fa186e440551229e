"""Deploy configuration: roost.toml, overridden by command-line flags.

Hosts come from an inline list, a file (one per line), or an Ansible
inventory (INI or YAML) narrowed to groups. A host entry is
`[user@]name[:port]`; inventories may add ansible_host/ansible_port/
ansible_user and roost's own variables roost_address (the address to
announce), roost_interface (announce that interface's address) and
roost_location (a rack/zone label for the tracker).
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from roost.core.ratelimit import parse_rate as parse_rate  # re-exported: importers name it here
from roost.deploy.hosts import HostSpec as HostSpec  # re-exported: importers name it here
from roost.errors import UsageError


@dataclass
class DeployConfig:
    dest: str = ""
    tag: str | None = None
    keep: int = 5
    format: str = "auto"
    reuse: str = "copy"  # tree format: copy | hardlink | none (roost.target.treestage)
    compress: bool = False
    min_success: str = "100%"
    activate: bool = True
    pre_activate: list[str] = field(default_factory=list)
    post_activate: list[str] = field(default_factory=list)
    hook_timeout: float = 300.0
    hosts: list[str] = field(default_factory=list)
    hosts_file: str | None = None
    inventory: str | None = None
    groups: list[str] = field(default_factory=list)
    user: str | None = None
    ssh_port: int | None = None  # None: ~/.ssh/config's Port, else 22
    ssh_config: str | None = None  # default: ~/.ssh/config when it exists
    sudo: bool = False  # run roost on the hosts through `sudo -n`
    sudo_user: str | None = None  # ... as this user, the destination's owner (implies sudo)
    key: str | None = None
    known_hosts: str | None = None  # a path, or "off"; None: asyncssh's default
    connect_timeout: float = 10.0
    concurrency: int = 50
    timeout: float = 900.0  # the whole fetch phase
    python: str = "python3"
    listen: str | None = None  # tracker/origin address; default: route source to hosts
    allow: list[str] = field(default_factory=list)  # beyond the fleet (roost.deploy.allowlist)
    port_range: str = "6881-6999"
    upload_rate: str | None = None
    download_rate: str | None = None
    link_rate: str | None = None  # the hosts' link rate, for the bound S·8/R only
    web_seeds: list[str] = field(default_factory=list)  # BEP 19: HTTP servers of the payload
    origins: list[str] = field(default_factory=list)  # HOST:PATH seeders (roost.deploy.origins)
    local_origin: bool = True  # also seed from this machine (False: --no-local-origin)
    super_seed: bool = False  # BEP 16 on the origin (see roost.deploy.swarm.Origin)
    peer_tls: bool = False  # mutual TLS between peers, per-deploy CA (roost.deploy.pki)
    tracker: str | None = None  # an external `roost tracker` base URL; default: embedded
    tracker_token: str | None = None  # its admin token (or $ROOST_TRACKER_TOKEN)
    interface: str | None = None
    locations: dict[str, str] = field(default_factory=dict)  # host name -> label
    # label -> that location's networks: its hosts' fetches treat peers outside as remote
    location_nets: dict[str, list[str]] = field(default_factory=dict)
    batch: str | None = None  # activate N hosts (or N%) at a time; None: all at once
    canary: int = 0  # hosts activated (and health-checked) alone, before the batches
    health_check: str | None = None  # run in `current` after each batch; exit 0 = healthy
    health_timeout: float = 30.0
    break_lock: bool = False  # take over a stale lock left by a deploy that died
    dry_run: bool = False  # preflight checks only; change nothing
    sign_key: str | None = None  # private key that signs the manifest (roost.target.signing)
    require_signature: bool = False  # hosts refuse a manifest not signed by allowed_signers
    allowed_signers: str | None = None  # the allowed-signers file's path on the hosts


#: roost.toml [section] key -> DeployConfig attribute
TOML_KEYS: dict[str, dict[str, str]] = {
    "deploy": {
        k: k
        for k in (
            "dest",
            "tag",
            "keep",
            "format",
            "reuse",
            "compress",
            "min_success",
            "activate",
            "pre_activate",
            "post_activate",
            "hook_timeout",
            "timeout",
            "batch",
            "canary",
            "health_check",
            "health_timeout",
            "sign_key",
            "require_signature",
            "allowed_signers",
        )
    },
    "hosts": {
        "list": "hosts",
        "file": "hosts_file",
        "inventory": "inventory",
        "groups": "groups",
        "locations": "locations",
        "location_nets": "location_nets",
    },
    "ssh": {
        "user": "user",
        "port": "ssh_port",
        "key": "key",
        "known_hosts": "known_hosts",
        "connect_timeout": "connect_timeout",
        "concurrency": "concurrency",
        "python": "python",
        "config": "ssh_config",
        "sudo": "sudo",
        "sudo_user": "sudo_user",
    },
    "network": {
        "listen": "listen",
        "allow": "allow",
        "port_range": "port_range",
        "upload_rate": "upload_rate",
        "download_rate": "download_rate",
        "link_rate": "link_rate",
        "web_seeds": "web_seeds",
        "origins": "origins",
        "local_origin": "local_origin",
        "super_seed": "super_seed",
        "peer_tls": "peer_tls",
        "tracker": "tracker",
        "tracker_token": "tracker_token",
        "interface": "interface",
    },
}


def load_config(path: Path | None, overrides: dict[str, Any]) -> DeployConfig:
    """roost.toml (if any) then the flags that were given (None means not given)."""
    config = DeployConfig()
    if path is None and Path("roost.toml").is_file():
        path = Path("roost.toml")
    if path is not None:
        config = _apply_toml(config, _read_toml(path), path)
    given = {k: v for k, v in overrides.items() if v not in (None, (), [])}
    valid = {f.name for f in fields(DeployConfig)}
    unknown = set(given) - valid
    if unknown:
        raise UsageError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return replace(config, **given)


def _read_toml(path: Path) -> dict[str, Any]:
    try:  # by name: tomllib is 3.11+, and mypy checks against 3.10
        tomllib = importlib.import_module("tomllib")
    except ImportError:
        raise UsageError("reading roost.toml needs Python 3.11 or later") from None
    try:
        with path.open("rb") as f:
            data: dict[str, Any] = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    return data


def _apply_toml(config: DeployConfig, data: dict[str, Any], path: Path) -> DeployConfig:
    values: dict[str, Any] = {}
    for section, table in data.items():
        keys = TOML_KEYS.get(section)
        if keys is None or not isinstance(table, dict):
            raise UsageError(f"{path}: unknown section [{section}]")
        for key, value in table.items():
            if key not in keys:
                raise UsageError(f"{path}: unknown key {key!r} in [{section}]")
            values[keys[key]] = value
    # [network] lists that also take one string
    for key, what in (("allow", "networks"), ("web_seeds", "URLs"), ("origins", "HOST:/path")):
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
        if key in values and not all(isinstance(v, str) for v in values[key]):
            raise UsageError(f"{path}: [network] {key} must be a list of {what}")
    if "location_nets" in values:
        values["location_nets"] = _location_nets_table(values["location_nets"], path)
    if isinstance(values.get("batch"), int):
        values["batch"] = str(values["batch"])
    if isinstance(values.get("min_success"), int | float):
        values["min_success"] = str(values["min_success"])
    try:
        return replace(config, **values)
    except TypeError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _location_nets_table(table: object, path: Path) -> dict[str, list[str]]:
    """[hosts] location_nets = { rack1 = "10.1.0.0/16", rack2 = ["10.2.0.0/16", ...] }"""
    bad = UsageError(f"{path}: [hosts] location_nets must map location labels to networks")
    if not isinstance(table, dict):
        raise bad
    out: dict[str, list[str]] = {}
    for label, nets in table.items():
        nets = [nets] if isinstance(nets, str) else nets
        if not isinstance(nets, list) or not all(isinstance(n, str) for n in nets):
            raise bad
        out[str(label)] = nets
    return out


def parse_location_nets(rules: Iterable[str]) -> dict[str, list[str]]:
    """--location-net LABEL=CIDR[,CIDR] (repeatable) as a label -> networks table."""
    out: dict[str, list[str]] = {}
    for rule in rules:
        label, eq, nets = rule.partition("=")
        if not eq or not label.strip() or not nets.strip():
            raise UsageError(f"--location-net: {rule!r} is not LABEL=CIDR[,CIDR...]")
        out.setdefault(label.strip(), []).append(nets)
    return out


def check_location_nets(table: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every network of every location, validated before any host is touched; the
    result has one network per entry."""
    out: dict[str, list[str]] = {}
    for label, entries in table.items():
        nets = out.setdefault(label, [])
        for entry in entries:
            for item in entry.replace(",", " ").split():
                try:
                    nets.append(str(ipaddress.ip_network(item, strict=False)))
                except ValueError:
                    raise UsageError(f"location_nets: {item!r} (location {label!r}) is not "
                                     "an address or a network") from None
    return out


# --- hosts -------------------------------------------------------------------------------

_HOST = re.compile(
    r"(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^:\s\[\]]+)"
    r"(?::(?P<port>\d+))?\Z"
)


def parse_host(text: str, default_port: int | None = None, **extra: Any) -> HostSpec:
    match = _HOST.match(text.strip())
    if not match:
        raise UsageError(f"host {text!r} is not [user@]host[:port]")
    address = match["host"].strip("[]")
    return HostSpec(
        name=address,
        address=address,
        port=int(match["port"]) if match["port"] else default_port,
        user=match["user"],
        **extra,
    )


def resolve_hosts(config: DeployConfig) -> list[HostSpec]:
    hosts: list[HostSpec] = []
    for item in config.hosts:
        for text in str(item).replace(",", " ").split():
            hosts.append(parse_host(text, config.ssh_port))
    if config.hosts_file:
        hosts += _hosts_file(Path(config.hosts_file).expanduser(), config.ssh_port)
    if config.inventory:
        from roost.deploy.inventory import load_inventory

        hosts += load_inventory(Path(config.inventory).expanduser(), config.groups, config.ssh_port)
    seen: set[str] = set()
    unique: list[HostSpec] = []
    for host in hosts:
        if host.name in seen:
            continue
        seen.add(host.name)
        location = config.locations.get(host.name, host.location)
        unique.append(
            replace(
                host,
                location=location,
                user=host.user or config.user,
                interface=host.interface or config.interface,
            )
        )
    if not unique:
        raise UsageError("no hosts: give --hosts, --hosts-file or --inventory (or roost.toml)")
    return unique


def _hosts_file(path: Path, port: int | None) -> list[HostSpec]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read hosts file {path}: {exc.strerror}") from None
    return [parse_host(line.split("#")[0], port) for line in lines if line.split("#")[0].strip()]


def parse_min_success(text: str, total: int) -> int:
    """'100%', '0.9' (a fraction) or '12' (a count) -> hosts needed."""
    value = text.strip()
    try:
        if value.endswith("%"):
            need = -(-total * float(value[:-1]) // 100)
        elif "." in value:
            need = -(-total * float(value) // 1)
        else:
            need = int(value)
    except ValueError:
        raise UsageError(
            f"--min-success {text!r} is not a count, a fraction or a percent"
        ) from None
    if need < 0 or need > total:
        raise UsageError(f"--min-success {text!r} asks for {int(need)} of {total} hosts")
    return int(need)


def parse_size(text: str, what: str = "size") -> int:
    """'32M' -> 33554432 bytes (binary units, as `ls -h`); a bare number is bytes."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise UsageError(f"{what} {text!r} is not a size like 512K, 32M or 1G")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[match.group(2)]
    return int(float(match.group(1)) * scale)
