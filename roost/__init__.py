"""roost: push a release to a fleet of servers over a BitTorrent swarm."""

__version__ = "0.1.0"
