"""roost: push a release to a fleet of servers over a BitTorrent swarm."""

import time

__version__ = "0.1.0"
#: when this process imported roost: where a deploy's timeline starts (`main`)
IMPORTED_AT = time.monotonic()
