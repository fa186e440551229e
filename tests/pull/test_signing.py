"""Signed instructions with the real ssh-keygen: what is accepted, what is refused and why."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from roost.target.signing import Freshness, SignatureError, open_envelope, sign, sign_bytes
from tests.pull.keys import allowed_signers, make_key


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    good = make_key(tmp_path, "publisher")
    other = make_key(tmp_path, "stranger")
    signers = allowed_signers(tmp_path / "allowed_signers", ("ci@example", good))
    return good, other, signers


def body(**extra: object) -> dict[str, object]:
    return {"kind": "activate", "deploy_id": "d1", "seq": 100, "expires": time.time() + 60,
            **extra}


def test_a_signed_instruction_opens_with_its_principal(keys: tuple[Path, Path, Path]) -> None:
    good, _, signers = keys
    v = open_envelope(sign(good, body(tag="v1")), signers)
    assert (v.principal, v.kind, v.deploy_id, v.seq, v.body["tag"]) == (
        "ci@example", "activate", "d1", 100, "v1")


def test_unsigned_is_refused(keys: tuple[Path, Path, Path]) -> None:
    _, _, signers = keys
    envelope = {"body": json.dumps(body())}
    with pytest.raises(SignatureError, match="unsigned"):
        open_envelope(envelope, signers)
    with pytest.raises(SignatureError, match="unsigned"):
        open_envelope({**envelope, "signature": ""}, signers)


def test_a_key_not_in_allowed_signers_is_refused(keys: tuple[Path, Path, Path]) -> None:
    _, other, signers = keys
    with pytest.raises(SignatureError, match="not in the allowed-signers"):
        open_envelope(sign(other, body()), signers)


def test_an_edited_body_is_refused(keys: tuple[Path, Path, Path]) -> None:
    good, _, signers = keys
    envelope = sign(good, body(tag="v1"))
    envelope["body"] = envelope["body"].replace('"v1"', '"v2"')
    with pytest.raises(SignatureError, match="bad signature"):
        open_envelope(envelope, signers)


def test_a_signature_for_another_namespace_is_refused(keys: tuple[Path, Path, Path]) -> None:
    good, _, signers = keys
    data = json.dumps(body()).encode()
    envelope = {"body": data.decode(), "signature": sign_bytes(good, data, namespace="git")}
    with pytest.raises(SignatureError):
        open_envelope(envelope, signers)


def test_replays_and_stale_instructions_are_refused(keys: tuple[Path, Path, Path]) -> None:
    good, _, signers = keys
    fresh = Freshness()
    old = open_envelope(sign(good, body(deploy_id="d1", seq=100)), signers)
    assert fresh.check(old)
    fresh.accept(old)
    new = open_envelope(sign(good, body(deploy_id="d2", seq=200)), signers)
    assert fresh.check(new)
    fresh.accept(new)
    assert not fresh.check(new)  # served again by the channel: already applied, no error
    with pytest.raises(SignatureError, match="replayed instruction: activate of deploy d1"):
        fresh.check(old)
    expired = open_envelope(sign(good, body(deploy_id="d2", seq=300,
                                            expires=time.time() - 5)), signers)
    with pytest.raises(SignatureError, match="expired instruction"):
        fresh.check(expired)


def test_malformed_bodies_are_refused(keys: tuple[Path, Path, Path]) -> None:
    good, _, signers = keys
    for bad in ({"kind": "activate"}, body(seq="1"), body(seq=True)):
        with pytest.raises(SignatureError, match="malformed"):
            open_envelope(sign(good, bad), signers)
    for envelope in (None, [], {"signature": "x"}):
        with pytest.raises(SignatureError, match="malformed"):
            open_envelope(envelope, signers)
