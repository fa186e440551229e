"""The wire codec moved to roost.core.wire; this name stays for importers
outside the package (scripts and tests written against it). New code imports
roost.core.wire."""

from roost.core.wire import *  # noqa: F403
from roost.core.wire import BLOCK_SIZE, MAX_BLOCK, PeerConnection  # noqa: F401
