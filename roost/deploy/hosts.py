"""One target host as the configuration names it (a module of its own, so
that the inventory readers and the configuration can both use it without
importing each other)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostSpec:
    name: str
    address: str  # where SSH connects (an ~/.ssh/config alias works)
    port: int | None = None  # None: ~/.ssh/config's Port, else 22
    user: str | None = None
    location: str | None = None
    announce: str | None = None  # address to announce, from configuration
    interface: str | None = None  # or this interface's address
    groups: tuple[str, ...] = ()
    dest: str | None = None  # overrides the deploy's destination on this host
