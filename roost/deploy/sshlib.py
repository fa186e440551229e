"""asyncssh, imported without its dependencies' deprecation noise.

asyncssh (up to at least 2.24) still names DSA key types that cryptography
(>= 48) deprecates; every import printed ten lines of
CryptographyDeprecationWarning that the operator can do nothing about. The
filter is scoped to that one import and that one category, so roost's own
warnings and any later ones still show.
"""

from __future__ import annotations

import warnings
from typing import Any

with warnings.catch_warnings():
    try:
        from cryptography.utils import CryptographyDeprecationWarning
    except ImportError:  # pragma: no cover - cryptography moved it
        CryptographyDeprecationWarning = DeprecationWarning  # type: ignore[misc,assignment]
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh as asyncssh
    import asyncssh.config  # same noise, same place



def _log_packets_only_when_debugging() -> None:
    logger_class = getattr(asyncssh.logging, "SSHLogger", None)
    packet_logger = getattr(asyncssh.packet, "SSHPacketLogger", None)
    log_packet = getattr(packet_logger, "_log_packet", None)
    if logger_class is None or log_packet is None or not hasattr(logger_class, "_debug_level"):
        return  # another asyncssh: left as it is

    def log_packet_when_debugging(self: Any, *args: Any) -> None:
        if logger_class._debug_level >= 3:
            log_packet(self, *args)

    packet_logger._log_packet = log_packet_when_debugging  # type: ignore[union-attr]


_log_packets_only_when_debugging()

__all__ = ["asyncssh"]
