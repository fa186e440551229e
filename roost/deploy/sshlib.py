"""asyncssh, imported without its dependencies' deprecation noise.

asyncssh (up to at least 2.24) still names DSA key types that cryptography
(>= 48) deprecates; every import printed ten lines of
CryptographyDeprecationWarning that the operator can do nothing about. The
filter is scoped to that one import and that one category, so roost's own
warnings and any later ones still show.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    try:
        from cryptography.utils import CryptographyDeprecationWarning
    except ImportError:  # pragma: no cover - cryptography moved it
        CryptographyDeprecationWarning = DeprecationWarning  # type: ignore[misc,assignment]
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh as asyncssh
    import asyncssh.config  # same noise, same place

__all__ = ["asyncssh"]
