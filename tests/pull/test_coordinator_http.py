"""The coordinator's HTTP side refuses what it should: bad, oversized, foreign input."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

from roost.deploy.config import DeployConfig, HostSpec
from roost.deploy.coordinator import MAX_REPORT, Coordinator
from roost.deploy.run import new_deploy
from roost.target.protocol import Instruction
from tests.pull.keys import make_key


def call(url: str, data: bytes | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {}


def test_reports_and_queries_are_checked(tmp_path: Path) -> None:
    key = make_key(tmp_path, "publisher")
    deploy = new_deploy(DeployConfig(), [HostSpec("a0", "a0")], "v1")

    async def main() -> list[tuple[int, dict[str, object]]]:
        coordinator = Coordinator(deploy, key, "127.0.0.1", 0)
        await coordinator.start()
        base = coordinator.url
        try:
            await coordinator.publish(Instruction.RELEASE, 60)
            report = {"host": "a0", "deploy_id": deploy.deploy_id, "state": "failed",
                      "kind": "fetch", "reason": "x" * 2000}
            calls = [
                (f"{base}/v1/report", b"not json"),
                # fields the protocol does not allow: one clear 400 each
                (f"{base}/v1/report", json.dumps({**report, "reason": "x" * 5000}).encode()),
                (f"{base}/v1/report", json.dumps({**report, "state": "melted"}).encode()),
                (f"{base}/v1/report", json.dumps({**report, "bytes_done": "lots"}).encode()),
                (f"{base}/v1/report", json.dumps({**report, "host": "intruder"}).encode()),
                (f"{base}/v1/report", json.dumps({**report, "deploy_id": "other"}).encode()),
                (f"{base}/v1/report", b"{" + b" " * (MAX_REPORT + 10) + b"}"),
                (f"{base}/v1/channel?since=abc", None),
                (f"{base}/v1/torrent/other", None),
                (f"{base}/v1/channel?since=-1&wait=5", None),
                (f"{base}/v1/report", json.dumps(report).encode()),
            ]
            return [await asyncio.to_thread(call, url, data) for url, data in calls]
        finally:
            await coordinator.stop()

    answers = asyncio.run(main())
    assert [code for code, _ in answers] == [400, 400, 400, 400, 404, 409, 413, 400, 404, 200,
                                             200]
    assert [answers[i][1]["error"] for i in (1, 2, 3)] == [
        "agent report: field 'reason' is over 4096 characters",
        "agent report: unknown state 'melted'",
        "agent report: field 'bytes_done' has the wrong type"]
    channel = answers[9][1]
    assert channel["version"] == 1 and len(channel["envelopes"]) == 1  # type: ignore[arg-type]
    run = deploy.hosts[0]
    # only the genuine report counted, and its reason is capped
    assert (run.status, run.kind, len(run.reason)) == ("failed", "fetch", 1000)
