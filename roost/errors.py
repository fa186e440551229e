"""Error classes. Pure: no I/O.

Two roots, as in h11: a local mistake raises a plain RoostError subclass; a
remote peer breaking the protocol raises RemoteProtocolError, which closes
that one connection and never the session. Every message is one sentence a
user can read.
"""

from __future__ import annotations


class RoostError(Exception):
    """Base of every error roost raises on purpose. str(e) is for the user."""

    exit_code = 1


class UsageError(RoostError):
    """A bad argument or a misuse by the local caller."""

    exit_code = 2


class DecodeError(RoostError, ValueError):
    """Bytes that are not valid, canonical bencoding."""


class MetainfoError(RoostError, ValueError):
    """A torrent file (or info dictionary) that breaks BEP 3 or our safety rules."""


class UnsafePathError(MetainfoError):
    """A path that could escape the destination directory."""


class RemoteProtocolError(RoostError):
    """A remote peer or tracker sent something the protocol does not allow.

    `ban` is true when the peer sent bad data on purpose or by fault (for
    example a block failing its hash), so the engine should refuse it again.
    """

    def __init__(self, message: str, *, ban: bool = False) -> None:
        super().__init__(message)
        self.ban = ban


class ReleaseError(RoostError):
    """A release operation failed on this host (message says why)."""


class DiskFullError(ReleaseError):
    exit_code = 4
