"""A certificate authority per deploy, for `roost deploy --peer-tls`.

Theory of operation. The deploy makes a fresh CA (ECDSA P-256) and, from it,
one certificate + key per host and one for the origin. The CA's private key
lives only in this process's memory and is gone when the deploy ends, so
nothing signed later can join; a host's bundle travels over its SSH session
(the trusted channel, with the manifest) and is written 0600 in that
deploy's directory on the host, which `host-clean` removes. `roost fetch`
and `roost seed` then accept only peers signed by this CA (roost.engine.tls).

Certificates carry both serverAuth and clientAuth: every peer listens and
dials. Validity starts an hour back (clock skew between hosts) and lasts
long enough for the deploy's own timeout.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from roost.target.hostops import PEER_TLS

SKEW = datetime.timedelta(hours=1)
MIN_LIFETIME = datetime.timedelta(days=1)
#: file names of a bundle, in the deploy directory on a host (and the origin's scratch dir)
CERT_FILE, KEY_FILE, CA_FILE = PEER_TLS["cert"], PEER_TLS["key"], PEER_TLS["ca"]


@dataclass(frozen=True)
class Bundle:
    """What one peer needs: its certificate and key, and the CA it trusts (PEM)."""

    cert: bytes
    key: bytes
    ca: bytes

    def to_dict(self) -> dict[str, str]:
        return {"cert": self.cert.decode(), "key": self.key.decode(), "ca": self.ca.decode()}

    def write(self, directory: Path) -> tuple[Path, Path, Path]:
        """Write the three files 0600 (created so, never chmod'ed after); their paths."""
        paths = (directory / CERT_FILE, directory / KEY_FILE, directory / CA_FILE)
        for path, data in zip(paths, (self.cert, self.key, self.ca), strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        return paths


class DeployCA:
    """One deploy's CA; `issue(name)` signs a peer certificate."""

    def __init__(self, name: str, lifetime: datetime.timedelta = MIN_LIFETIME) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.not_before = datetime.datetime.now(datetime.timezone.utc) - SKEW
        self.not_after = self.not_before + SKEW + max(lifetime, MIN_LIFETIME)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"roost deploy {name}")])
        public = self._key.public_key()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, name: str) -> Bundle:
        key = ec.generate_private_key(ec.SECP256R1())
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return Bundle(cert.public_bytes(serialization.Encoding.PEM), key_pem, self.ca_pem)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
