"""Signed instructions for pull mode: OpenSSH signatures over canonical JSON.

Standard library only: agents verify on bare hosts with the host's own
`ssh-keygen -Y verify` against an allowed-signers file that configuration
management installs (docs/agent.md). The publisher signs with
`ssh-keygen -Y sign` and the namespace "roost", so a signature made for
anything else (git commits, files) is never accepted here.

An envelope is {"body": "<canonical JSON>", "signature": "<armored>"}; the
body always carries `kind`, `deploy_id`, `seq` (a number that only grows,
across deploys: the publisher's microsecond clock) and `expires` (Unix
seconds). `Freshness` is the agent's memory of the highest sequence it has
accepted: an older sequence from another deploy is a replay, and an expired
instruction is stale; both are refused with a reason.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.errors import RoostError
from roost.target.protocol_common import EXIT_CODES, ErrorKind

NAMESPACE = "roost"
MAX_BODY = 1 << 20  # a manifest and a few hundred host names fit many times over
MAX_SIGNATURE = 16 * 1024
KEYGEN_TIMEOUT = 30.0
_PRINCIPAL = re.compile(r"[\x21-\x7e]{1,256}\Z")  # printable, no spaces: one token


class SignatureError(RoostError):
    """An envelope that is not signed, not by an allowed key, stale or replayed."""

    exit_code = EXIT_CODES[ErrorKind.SIGNATURE]  # the operator reads the kind from it


def _keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        raise SignatureError("ssh-keygen is not installed; it checks the publisher's signatures")
    return path


def canonical(body: dict[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, ASCII only."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_bytes(key: Path, data: bytes, namespace: str = NAMESPACE) -> str:
    """An armored OpenSSH signature of `data` by the private `key`."""
    result = subprocess.run(
        [_keygen(), "-q", "-Y", "sign", "-f", str(key), "-n", namespace],
        input=data, capture_output=True, timeout=KEYGEN_TIMEOUT,
    )
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise SignatureError(f"cannot sign with {key}: {detail[0]}")
    return result.stdout.decode()


def sign(key: Path, body: dict[str, Any]) -> dict[str, str]:
    """The envelope for `body`, signed by `key`."""
    data = canonical(body)
    return {"body": data.decode(), "signature": sign_bytes(key, data)}


def verify_bytes(allowed_signers: Path, data: bytes, signature: str,
                 namespace: str = NAMESPACE) -> str:
    """The principal whose allowed key made `signature` over `data`, or SignatureError."""
    if not signature.strip():
        raise SignatureError("unsigned: the instruction carries no signature")
    if len(signature) > MAX_SIGNATURE or "BEGIN SSH SIGNATURE" not in signature:
        raise SignatureError("the signature is not an OpenSSH signature")
    if not allowed_signers.is_file():
        raise SignatureError(f"allowed-signers file {allowed_signers} is missing")
    keygen = _keygen()
    with tempfile.TemporaryDirectory(prefix="roost-sig-") as tmp:
        sig = Path(tmp) / "msg.sig"
        sig.write_text(signature)
        found = subprocess.run(
            [keygen, "-Y", "find-principals", "-s", str(sig), "-f", str(allowed_signers)],
            capture_output=True, timeout=KEYGEN_TIMEOUT,
        )
        principals = [p for p in found.stdout.decode(errors="replace").split()
                      if _PRINCIPAL.match(p)]
        if found.returncode != 0 or not principals:
            raise SignatureError(
                f"signed by a key that is not in the allowed-signers file {allowed_signers}")
        checked = subprocess.run(
            [keygen, "-Y", "verify", "-f", str(allowed_signers), "-I", principals[0],
             "-n", namespace, "-s", str(sig)],
            input=data, capture_output=True, timeout=KEYGEN_TIMEOUT,
        )
    if checked.returncode != 0:
        return _bad_signature(checked.stderr.decode(errors="replace"), principals[0])
    return principals[0]


def _bad_signature(stderr: str, principal: str) -> str:
    text = stderr.lower()
    if "namespace" in text:
        raise SignatureError("the signature was made for another purpose (namespace), not roost")
    raise SignatureError(f"bad signature: the content does not match what {principal!r} signed")


@dataclass(frozen=True)
class Verified:
    body: dict[str, Any]
    principal: str
    digest: str  # SHA-256 of the signed body: names this exact instruction

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def deploy_id(self) -> str:
        return str(self.body["deploy_id"])

    @property
    def seq(self) -> int:
        return int(self.body["seq"])

    @property
    def expires(self) -> float:
        return float(self.body["expires"])


def open_envelope(envelope: Any, allowed_signers: Path) -> Verified:
    """Check an envelope's shape and signature; its freshness is Freshness's job."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("body"), str):
        raise SignatureError("malformed instruction: no body")
    text = envelope["body"]
    if len(text) > MAX_BODY:
        raise SignatureError("malformed instruction: the body is too large")
    signature = envelope.get("signature")
    if not isinstance(signature, str):
        raise SignatureError("unsigned: the instruction carries no signature")
    data = text.encode()
    principal = verify_bytes(allowed_signers, data, signature)
    try:
        body = json.loads(text)
    except ValueError:
        raise SignatureError("malformed instruction: the signed body is not JSON") from None
    if not isinstance(body, dict):
        raise SignatureError("malformed instruction: the signed body is not an object")
    for key, kind in (("kind", str), ("deploy_id", str), ("seq", int), ("expires", (int, float))):
        if not isinstance(body.get(key), kind) or isinstance(body.get(key), bool):
            raise SignatureError(f"malformed instruction: {key} is missing or of the wrong type")
    return Verified(body, principal, hashlib.sha256(data).hexdigest())


@dataclass
class Freshness:
    """The highest sequence accepted so far, and the deploy it belonged to."""

    seq: int = 0
    deploy_id: str = ""

    def check(self, v: Verified, now: float | None = None) -> bool:
        """True: a new instruction to apply; False: one this host already applied
        (the channel serves a deploy's instructions until it ends). Raises for a
        replay or a stale instruction."""
        if v.seq <= self.seq:
            if v.deploy_id == self.deploy_id:
                return False
            raise SignatureError(
                f"replayed instruction: {v.kind} of deploy {v.deploy_id} has sequence {v.seq}, "
                f"not newer than {self.seq} already accepted (deploy {self.deploy_id})")
        at = time.time() if now is None else now
        if at > v.expires:
            raise SignatureError(
                f"expired instruction: {v.kind} of deploy {v.deploy_id} expired "
                f"{at - v.expires:.0f} s ago")
        return True

    def accept(self, v: Verified) -> None:
        self.seq, self.deploy_id = v.seq, v.deploy_id
