"""The roost tracker: a private, locality-aware BitTorrent HTTP tracker.

Pure parts: `protocol` (queries and bencoded replies) and `swarm` (peer
tables, selection, the `Tracker` registry). Adapters: `server` (aiohttp;
embed with `roost.tracker.server.TrackerServer`) and `state` (atomic state
file). This package __init__ imports nothing, so the pure parts stay pure.
"""
