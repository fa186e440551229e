"""Pull mode under attack: every forged, replayed or stale instruction is refused with a
reason in the agent's report, and nothing is fetched, staged or activated.

One agent first takes two real releases (v1, then v2) from a real `roost publish`, while a
tap records every envelope the channel serves (what an eavesdropper could keep). Then the
agent is pointed at impersonators serving forged, replayed and stale envelopes, and at a real
`roost publish` run with a key the host does not trust.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from roost.target.signing import sign
from tests.pull.harness import (
    AgentProc,
    ChannelTap,
    FakeChannel,
    agent_argv,
    current_of,
    free_port,
    publish_argv,
    release_tree,
    run_publish,
)
from tests.pull.keys import allowed_signers, make_key


@dataclass
class World:
    base: Path
    key: Path
    stranger: Path
    signers: Path
    dest: Path
    envelopes: dict[str, list[dict[str, Any]]]  # kind -> captured envelopes, both deploys
    deploy_ids: list[str]  # v1's, then v2's


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("pullsec")
    key, stranger = make_key(base, "publisher"), make_key(base, "stranger")
    signers = allowed_signers(base / "allowed_signers", ("release@ci", key))
    dest = base / "dest"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    agent = AgentProc("a0", dest, base / "a0.log", agent_argv("a0", dest, url, signers)).start()
    tap = ChannelTap(url)
    ids = []
    try:
        for tag in ("v1", "v2"):
            code, report, err = run_publish(publish_argv(
                release_tree(base, tag), key, "127.0.0.1", port, ["a0"], "--tag", tag,
                "--timeout", "60"))
            assert code == 0, (report.get("message"), err[-2000:])
            ids.append(report["deploy_id"])
    finally:
        agent.stop()
        tap.stop()
    assert current_of(dest) == "v2"
    kinds: dict[str, list[dict[str, Any]]] = {}
    for envelope in tap.seen.values():
        kinds.setdefault(json.loads(envelope["body"])["kind"], []).append(envelope)
    yield World(base, key, stranger, signers, dest, kinds, ids)


def untouched(w: World) -> None:
    assert current_of(w.dest) == "v2"
    assert sorted(p.name for p in (w.dest / "releases").iterdir()) == ["v1", "v2"]


def refusal(w: World, envelopes: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Serve `envelopes` to the agent from an impersonator; its refusal report."""
    fake = FakeChannel(envelopes)
    agent = AgentProc("a0", w.dest, w.base / f"{name}.log",
                      agent_argv("a0", w.dest, fake.url, w.signers)).start()
    try:
        assert agent.wait_for(lambda a: bool(a.reports("refused")), 30), agent.events()
        time.sleep(1.0)  # a few more polls: refused once, and nothing else happens
    finally:
        agent.stop()
        fake.close()
    refused = agent.reports("refused")
    assert len(refused) == 1, refused  # reported once, not once per poll
    assert [r for r in fake.reports if r["state"] == "refused"] == [
        {k: v for k, v in refused[0].items() if k not in ("event", "t")}]
    assert not [e for e in agent.events() if e.get("event") == "fetch_started"]
    untouched(w)
    return refused[0]


def new_release_body(w: World) -> dict[str, Any]:
    """v2's signed release, re-aimed at a new deploy of an evil tag (not signed)."""
    body = json.loads(w.envelopes["release"][-1]["body"])
    body.update(deploy_id="evil-1", seq=time.time_ns() // 1000, tag="v3evil",
                expires=time.time() + 600)
    body["manifest"]["tag"] = "v3evil"
    return body


def test_an_unsigned_manifest_is_refused(world: World) -> None:
    envelope = {"body": json.dumps(new_release_body(world))}
    report = refusal(world, [envelope], "unsigned")
    assert report["kind"] == "signature" and report["reason"].startswith("unsigned")


def test_a_tampered_manifest_is_refused(world: World) -> None:
    real = world.envelopes["release"][-1]
    body = json.loads(real["body"])
    body["manifest"]["sha256"] = "0" * 64
    report = refusal(world, [{"body": json.dumps(body), "signature": real["signature"]}],
                     "tampered")
    assert "bad signature" in report["reason"]


def test_a_manifest_signed_by_an_untrusted_key_is_refused(world: World) -> None:
    report = refusal(world, [sign(world.stranger, new_release_body(world))], "stranger")
    assert "not in the allowed-signers file" in report["reason"]


def test_a_replayed_activation_from_an_earlier_deploy_is_refused(world: World) -> None:
    old = [e for e in world.envelopes["activate"]
           if json.loads(e["body"])["deploy_id"] == world.deploy_ids[0]]
    assert len(old) == 1
    report = refusal(world, old, "replay")
    assert report["reason"].startswith(
        f"replayed instruction: activate of deploy {world.deploy_ids[0]}")


def test_an_expired_instruction_is_refused(world: World) -> None:
    body = {"kind": "rollback", "deploy_id": world.deploy_ids[1], "tag": "v2",
            "hosts": ["a0"], "seq": time.time_ns() // 1000, "expires": time.time() - 30}
    report = refusal(world, [sign(world.key, body)], "expired")
    assert report["reason"].startswith("expired instruction: rollback")


def test_a_coordinator_impersonator_with_its_own_key_gets_nothing(world: World) -> None:
    """A real `roost publish`, but signing with a key the host does not trust: the agent
    refuses the release, fetches nothing, and the impersonator's rollout fails (exit 3)."""
    port = free_port()
    agent = AgentProc("a0", world.dest, world.base / "impostor.log",
                      agent_argv("a0", world.dest, f"http://127.0.0.1:{port}",
                                 world.signers)).start()
    try:
        code, report, err = run_publish(publish_argv(
            release_tree(world.base, "v3evil"), world.stranger, "127.0.0.1", port, ["a0"],
            "--tag", "v3evil", "--timeout", "10"))
    finally:
        agent.stop()
    assert code == 3, (report.get("message"), err[-2000:])
    row = report["hosts"][0]
    assert (row["status"], row["kind"]) == ("failed", "signature")
    assert "not in the allowed-signers file" in row["reason"]
    refused = agent.reports("refused")  # the release, and the `finish` that followed it
    assert {r["reason"] for r in refused} == {row["reason"]}
    assert refused[0]["instruction"]["kind"] == "release"
    untouched(world)


def test_an_unsigned_copy_does_not_hide_the_signed_original(world: World) -> None:
    """An impersonator that races the real channel with an unsigned copy of a genuine
    instruction gets the copy refused; the signed original is still applied."""
    body = {"kind": "finish", "deploy_id": world.deploy_ids[1], "seq": time.time_ns() // 1000,
            "expires": time.time() + 60}
    signed = sign(world.key, body)
    fake = FakeChannel([{"body": signed["body"]}, signed])
    agent = AgentProc("a0", world.dest, world.base / "race.log",
                      agent_argv("a0", world.dest, fake.url, world.signers)).start()
    try:
        assert agent.wait_for(lambda a: bool(a.reports("finished")), 30), agent.events()
    finally:
        agent.stop()
        fake.close()
    assert [r["reason"][:8] for r in agent.reports("refused")] == ["unsigned"]
    untouched(world)


def test_a_signed_but_malformed_release_fetches_nothing(world: World) -> None:
    """A trusted key signed a release whose route is not [address, port]: the agent
    reports the malformed order in one line and fetches nothing."""
    body = new_release_body(world)
    body["route"] = "10.0.0.1:6969; rm -rf /"
    fake = FakeChannel([sign(world.key, body)])
    agent = AgentProc("a0", world.dest, world.base / "malformed.log",
                      agent_argv("a0", world.dest, fake.url, world.signers)).start()
    try:
        assert agent.wait_for(lambda a: bool(a.reports("failed")), 30), agent.events()
        time.sleep(1.0)
    finally:
        agent.stop()
        fake.close()
    failed = agent.reports("failed")
    assert len(failed) == 1, failed
    assert failed[0]["reason"] == ("the signed release is malformed: signed release: field "
                                   "'route' has the wrong type")
    assert not [e for e in agent.events() if e.get("event") == "fetch_started"]
    untouched(world)
