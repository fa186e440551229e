"""Mutual TLS between roost peers (standard library only).

Theory of operation. With `--tls-cert/--tls-key/--tls-ca`, every peer
connection, in and out, is TLS 1.3 and both ends must present a certificate
signed by the given CA. `roost deploy --peer-tls` makes that CA per deploy
and hands each host its certificate and key over SSH, so a host outside the
deploy can neither read the transfer nor join it: its handshake fails before
a single BitTorrent byte (not even the info-hash) is sent.

Peers are identified by the deploy CA, not by DNS: hostname checking is off
(peers are dialled by the IP the tracker gave). A TLS peer cannot talk to a
plain one, on purpose.

asyncio completes the TLS handshake before the application protocol (Peer)
exists for the connection, so a refused handshake never reaches the
session. To count and report refusals anyway, the contexts use an SSLObject
subclass whose do_handshake() reports hard failures to `on_refused`; asyncio
and uvloop both drive the handshake through that method.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.errors import UsageError

#: (reason, server_side) of a failed handshake
RefusalHook = Callable[[str, bool], None]


@dataclass
class PeerTLS:
    """The two contexts of one session (listening and dialling) and its refusal count."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    refused: int = 0
    on_refused: RefusalHook | None = field(default=None, repr=False)

    def note_refusal(self, exc: ssl.SSLError, server_side: bool) -> None:
        self.refused += 1
        if self.on_refused is not None:
            self.on_refused(_reason(exc), server_side)


def load_peer_tls(cert: Path, key: Path, ca: Path) -> PeerTLS:
    """Both contexts from PEM files; one clear UsageError when a file is unusable."""
    tls = PeerTLS(
        server=_context(ssl.PROTOCOL_TLS_SERVER, cert, key, ca),
        client=_context(ssl.PROTOCOL_TLS_CLIENT, cert, key, ca),
    )
    for context in (tls.server, tls.client):
        context.sslobject_class = _watched_sslobject(tls)
    return tls


def peer_tls_from_args(cert: Path | None, key: Path | None, ca: Path | None) -> PeerTLS | None:
    """The three flags go together: all (TLS) or none (plain BitTorrent)."""
    given = {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}
    missing = [flag for flag, value in given.items() if value is None]
    if len(missing) == 3:
        return None
    if missing:
        raise UsageError(
            f"--tls-cert, --tls-key and --tls-ca go together (missing {', '.join(missing)})"
        )
    assert cert is not None and key is not None and ca is not None
    return load_peer_tls(cert, key, ca)


def _context(protocol: int, cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # identity is "signed by this deploy's CA", not a DNS name: peers are dialled by IP
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise UsageError(
            f"cannot load the TLS certificate {cert} / key {key}: {_reason(exc)}"
        ) from None
    try:
        context.load_verify_locations(cafile=ca)
    except OSError as exc:
        raise UsageError(f"cannot load the TLS CA {ca}: {_reason(exc)}") from None
    return context


def _watched_sslobject(tls: PeerTLS) -> type[ssl.SSLObject]:
    class WatchedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise  # not a failure: the handshake needs more bytes
            except ssl.SSLError as exc:
                tls.note_refusal(exc, self.server_side)
                raise

    return WatchedSSLObject


def _reason(exc: Any) -> str:
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
    return str(reason or getattr(exc, "strerror", None) or exc)
