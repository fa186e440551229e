"""Ansible inventories (INI and YAML) as roost host lists, with groups.

Only the parts a deploy needs: hosts, groups, `:children`, `:vars`, and the
variables ansible_host, ansible_port, ansible_user, roost_address,
roost_interface and roost_location. Host ranges like web[01:10] expand.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from roost.deploy.hosts import HostSpec
from roost.errors import UsageError

Vars = dict[str, Any]
_RANGE = re.compile(r"\[(\d+):(\d+)\]")


class _Inventory:
    def __init__(self) -> None:
        self.hosts: dict[str, Vars] = {}  # name -> host vars
        self.members: dict[str, list[str]] = {}  # group -> host names
        self.children: dict[str, list[str]] = {}
        self.group_vars: dict[str, Vars] = {}

    def add(self, group: str, name: str, host_vars: Vars) -> None:
        for expanded in _expand(name):
            self.hosts.setdefault(expanded, {}).update(host_vars)
            self.members.setdefault(group, []).append(expanded)

    def group_hosts(self, group: str, depth: int = 0) -> list[str]:
        if depth > 32:
            raise UsageError(f"inventory group {group!r} nests too deeply (a cycle?)")
        names = list(self.members.get(group, []))
        for child in self.children.get(group, []):
            names += self.group_hosts(child, depth + 1)
        return names

    def groups_of(self, name: str) -> list[str]:
        return [g for g in set(self.members) | set(self.children) if name in self.group_hosts(g)]

    def specs(self, groups: list[str], default_port: int | None) -> list[HostSpec]:
        known = set(self.members) | set(self.children) | {"all"}
        for group in groups:
            if group not in known:
                raise UsageError(f"inventory has no group {group!r}")
        if groups and "all" not in groups:
            names = [n for g in groups for n in self.group_hosts(g)]
        else:
            names = list(self.hosts)
        out: list[HostSpec] = []
        for name in dict.fromkeys(names):
            hv: Vars = {}
            for group in ["all", *sorted(self.groups_of(name))]:
                hv.update(self.group_vars.get(group, {}))
            hv.update(self.hosts[name])
            out.append(
                HostSpec(
                    name=name,
                    address=str(hv.get("ansible_host", name)),
                    port=_port(hv.get("ansible_port", default_port)),
                    user=hv.get("ansible_user"),
                    location=hv.get("roost_location"),
                    announce=hv.get("roost_address"),
                    interface=hv.get("roost_interface"),
                    groups=tuple(sorted(self.groups_of(name))),
                    dest=hv.get("roost_dest"),
                )
            )
        return out


def _port(value: Any) -> int | None:
    return None if value is None else int(value)


def _expand(name: str) -> list[str]:
    match = _RANGE.search(name)
    if not match:
        return [name]
    lo, hi = match.group(1), match.group(2)
    width = len(lo) if lo.startswith("0") else 0
    if int(hi) - int(lo) > 100_000:
        raise UsageError(f"inventory range {name!r} is too large")
    return [
        expanded
        for i in range(int(lo), int(hi) + 1)
        for expanded in _expand(name[: match.start()] + str(i).zfill(width) + name[match.end() :])
    ]


def load_inventory(path: Path, groups: list[str], default_port: int | None = None
                   ) -> list[HostSpec]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read inventory {path}: {exc.strerror}") from None
    inv = _parse_yaml(text, path) if path.suffix in (".yml", ".yaml") else _parse_ini(text, path)
    return inv.specs(groups, default_port)


def _parse_ini(text: str, path: Path) -> _Inventory:
    inv = _Inventory()
    section, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = (
            raw.split("#")[0].split(";")[0].strip()
            if not raw.lstrip().startswith(("#", ";"))
            else ""
        )
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section, _, kind = line[1:-1].partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "children", "vars"):
                raise UsageError(f"{path}:{number}: unknown section kind {kind!r}")
            inv.members.setdefault(section, []) if kind == "hosts" else None
            continue
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"{path}:{number}: {exc}") from None
        if kind == "hosts":
            inv.add(section, words[0], _kv(words[1:], path, number))
        elif kind == "children":
            inv.children.setdefault(section, []).append(words[0])
        else:
            inv.group_vars.setdefault(section, {}).update(_kv(words, path, number, eq=True))
    return inv


def _kv(words: list[str], path: Path, number: int, eq: bool = False) -> Vars:
    out: Vars = {}
    text = " ".join(words)
    if eq and "=" in text and len(words) >= 1:
        words = [w for w in re.split(r"\s*=\s*", text, maxsplit=1)]
        return {words[0]: words[1]} if len(words) == 2 else {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise UsageError(f"{path}:{number}: {word!r} is not key=value")
        out[key] = value
    return out


def _parse_yaml(text: str, path: Path) -> _Inventory:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: an inventory is a mapping of groups")
    inv = _Inventory()
    for group, body in data.items():
        _yaml_group(inv, str(group), body, path, 0)
    return inv


def _yaml_group(inv: _Inventory, group: str, body: Any, path: Path, depth: int) -> None:
    if depth > 32:
        raise UsageError(f"{path}: groups nest too deeply")
    if body is None:
        return
    if not isinstance(body, dict):
        raise UsageError(f"{path}: group {group!r} must be a mapping")
    inv.members.setdefault(group, [])
    for name, host_vars in (body.get("hosts") or {}).items():
        inv.add(group, str(name), dict(host_vars or {}))
    inv.group_vars.setdefault(group, {}).update(body.get("vars") or {})
    for child, child_body in (body.get("children") or {}).items():
        inv.children.setdefault(group, []).append(str(child))
        _yaml_group(inv, str(child), child_body, path, depth + 1)
