"""The agent session (roost/target/session.py) through AgentSession, on this machine.

The session runs from the zipapp as on a host; the operator side is the
deploy's own AgentSession over a LocalTransport. The channel closing
without `bye` is what a dead operator or a dropped connection looks like
to the host: the session must stop the fetch, clean the deploy's files and
release the lock, recording `lost`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from roost.deploy.config import HostSpec
from roost.deploy.host import PUSH_HEADER, Agent, HostRun
from roost.deploy.pack import make_metainfo
from roost.deploy.run import make_agent
from roost.deploy.session import AgentSession, open_session
from roost.deploy.transport import (
    AgentCommand,
    HostFailure,
    LocalTransport,
    Result,
    _LocalStream,
)
from roost.deploy.zipapp import build_zipapp, compiled
from roost.target import session as target_session
from roost.target.hostlock import history, inspect_lock
from roost.target.protocol import ErrorKind, HostStatus
from roost.target.release import Dest


def cmd(prefix: list[str], *args: str) -> AgentCommand:
    """An agent command as host.py builds it."""
    return AgentCommand(shlex.join([*prefix, *args]), args)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] != "Z"


async def _open(tmp_path: Path) -> tuple[AgentSession, list[str]]:
    pyz = build_zipapp(tmp_path / "roost.pyz")
    prefix = [sys.executable, "-I", str(pyz)]
    session = await AgentSession.open(LocalTransport(tmp_path / "home"), sys.executable,
                                      str(pyz))
    return session, prefix


def test_requests_run_concurrently_and_reply_as_the_commands_did(tmp_path: Path) -> None:
    dest = tmp_path / "app"

    async def go() -> None:
        session, prefix = await _open(tmp_path)
        try:
            lock = await session.start(cmd(
                prefix, "host-lock", "--dest", str(dest), "--deploy-id", "d1", "--who", "me",
                "--tag", "v1", "--json"), stdin=True)
            first = await anext(aiter(lock.lines()))
            assert json.loads(first) == {"locked": True, "broke": None}
            # while the lock request runs, others come and go on the same session
            status = await session.run(cmd(prefix, "host-status", "--dest", str(dest),
                                           "--json"))
            assert status.code == 0 and json.loads(status.stdout)["lock"]["state"] == "held"
            bad = await session.run(cmd(prefix, "activate", "--dest", str(dest),
                                        "--tag", "nope", "--json"))
            assert bad.code != 0 and json.loads(bad.stdout.splitlines()[-1])["event"] == "error"
            assert "roost activate: error:" in bad.stderr
            # a shell command that is not the agent's goes to the transport as before
            plain = await session.run("echo plain")
            assert plain.stdout == "plain\n"
            await lock.send('release {"result": "ok"}\n', eof=True)
            assert await lock.wait() == 0
        finally:
            await session.close()
        assert inspect_lock(Dest(dest)).state == "free"
        assert history(Dest(dest))[-1].result is HostStatus.OK

    asyncio.run(go())


def test_the_channel_closing_stops_the_fetch_cleans_and_releases(tmp_path: Path) -> None:
    dest = tmp_path / "app"
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(256 * 1024))
    work = dest / ".roost" / "deploys" / "d2"

    async def go() -> int:
        session, prefix = await _open(tmp_path)
        lock = await session.start(cmd(
            prefix, "host-lock", "--dest", str(dest), "--deploy-id", "d2", "--who", "me",
            "--tag", "v2", "--json"), stdin=True)
        await anext(aiter(lock.lines()))
        work.mkdir(parents=True)
        (work / "payload.torrent").write_bytes(make_metainfo(payload))
        pidfile = work / "fetch.pid"
        # a fetch that never completes: nobody answers at its tracker
        args = ("fetch", str(work / "payload.torrent"), "-d", str(work / "staging"), "--json",
                "--tracker", "http://127.0.0.1:9/announce", "--timeout", "300")
        await session.start(AgentCommand(
            f"echo $$ > {shlex.quote(str(pidfile))} && exec {shlex.join([*prefix, *args])}",
            args, str(pidfile)))
        deadline = time.monotonic() + 30
        while not pidfile.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        fetch_pid = int(pidfile.read_text())
        assert _alive(fetch_pid)
        # the operator goes away: its end of the channel closes, no `bye`
        stream = session.stream
        assert isinstance(stream, _LocalStream) and stream.proc.stdin is not None
        stream.proc.stdin.close()
        assert await asyncio.wait_for(stream.proc.wait(), 60) == 0
        return fetch_pid

    fetch_pid = asyncio.run(go())
    assert not _alive(fetch_pid)
    assert not work.exists()
    assert inspect_lock(Dest(dest)).state == "free"
    last = history(Dest(dest))[-1]
    assert last.deploy_id == "d2" and last.result is HostStatus.LOST


def test_a_fetch_whose_deploy_directory_was_moved_aside_does_not_start(tmp_path: Path
                                                                     ) -> None:
    """host-clean moves the deploy's directory aside before it reads the pid files: the
    session cannot write the pid file there, so it never execs the fetch, and says so
    in one line (no traceback)."""
    work = tmp_path / "app" / ".roost" / "deploys" / "gone"
    pidfile = work / "fetch.pid"
    args = ("fetch", str(work / "payload.torrent"), "-d", str(work / "staging"), "--json")

    async def go() -> Result:
        session, prefix = await _open(tmp_path)
        try:
            return await session.run(AgentCommand(shlex.join([*prefix, *args]), args,
                                                  str(pidfile)))
        finally:
            await session.close()

    result = asyncio.run(go())
    assert result.code != 0
    assert result.stderr.strip() == (f"roost fetch: error: cannot write {pidfile}: "
                                     "No such file or directory"), result.stderr
    assert not work.exists()


async def _first_deploy(tmp_path: Path, agent: Agent) -> tuple[HostRun, AgentSession]:
    run = HostRun(HostSpec("local", "127.0.0.1"))
    run.transport = LocalTransport(tmp_path / "home")
    return run, await open_session(run, agent)


def test_a_host_without_the_agent_reads_it_on_the_probe_channel(tmp_path: Path) -> None:
    """The first deploy's one channel: the probe says `push`, reads the zipapp, execs it."""
    agent = make_agent(sys.executable)

    async def go() -> tuple[HostRun, Result]:
        run, session = await _first_deploy(tmp_path, agent)
        try:
            return run, await session.run(cmd(
                [sys.executable, "-I", run.pyz], "host-status", "--dest",
                str(tmp_path / "app"), "--json"), timeout=60)
        finally:
            await session.close()

    run, result = asyncio.run(go())
    assert run.pushed_agent
    assert result.code == 0, result
    assert "releases" in json.loads(result.stdout.splitlines()[-1])
    # a deploy that sends sources never built the compiled zipapp (0.18 s of its CPU)
    assert "data" not in agent.__dict__
    # the host was sent the sources only and compiled them: the zipapp it cached holds
    # what the operator's build does, each .pyc made from the very source beside it
    cached = tmp_path / "home" / ".cache" / "roost" / agent.name
    assert cached.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert os.stat(cached).st_mode & 0o777 == 0o755
    with zipfile.ZipFile(cached) as got, zipfile.ZipFile(io.BytesIO(agent.data)) as built:
        assert sorted(got.namelist()) == sorted(built.namelist())
        for name in built.namelist():
            if name.endswith(".pyc"):
                source = got.read(name[:-1])
                assert got.read(name)[:16] == built.read(name)[:16]
                assert got.read(name)[:16] == compiled(name[:-1], source)[:16]
            else:
                assert got.read(name) == built.read(name), name
    # a fifth of the zipapp's bytes cross the channel, not its base64
    assert len(agent.push_text) < len(agent.data) / 3


def _mangled(text: str, at: int) -> str:
    """`text` with one base85 character changed: same length, still base85."""
    return text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1:]


@pytest.mark.parametrize("how", ["sources", "text", "length"])
def test_a_corrupted_push_is_refused_in_one_line_and_never_cached(
        tmp_path: Path, how: str) -> None:
    good = make_agent(sys.executable)
    agent = Agent(good.name, good.python, good.source)
    if how == "sources":  # other sources than the ones whose SHA-256 the command carries
        agent.__dict__["push_sha256"] = good.push_sha256
        agent.source = good.source[:-1] + b"x"
    elif how == "text":  # the lzma stream damaged on the way
        agent.__dict__["push_text"] = _mangled(good.push_text, len(good.push_text) // 2)
    else:  # a length no push has
        agent.__dict__["push_text"] = "x" * PUSH_HEADER + good.push_text[PUSH_HEADER:]
    try:
        asyncio.run(_first_deploy(tmp_path, agent))
    except HostFailure as exc:
        failure = exc
    else:
        raise AssertionError("a corrupted agent was accepted")
    assert failure.kind is ErrorKind.AGENT
    assert str(failure) == "cannot install the roost agent: the agent arrived corrupted"
    assert not any((tmp_path / "home" / ".cache" / "roost").glob("*"))


def test_a_loop_turns_replies_go_out_as_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last lines of a request and its exit leave in one write (one SSH packet for
    the deploy process to decrypt and dispatch), not one each."""
    writes: list[bytes] = []

    def write(fd: int, data: bytes) -> int:
        assert fd == 1
        writes.append(bytes(data))
        return len(data)

    monkeypatch.setattr(target_session.os, "write", write)
    host = target_session.Session()
    host.reply({"id": 3, "out": "{\"ok\": true}\n"})
    host.reply({"id": 3, "exit": 0})
    assert writes == []
    host.flush()
    assert len(writes) == 1
    assert [json.loads(line) for line in writes[0].splitlines()] == [
        {"id": 3, "out": "{\"ok\": true}\n"}, {"id": 3, "exit": 0}]
    host.flush()
    assert len(writes) == 1  # nothing queued, nothing written


def _other_pythons() -> list[str]:
    """CPython >= 3.10 interpreters on this machine whose bytecode version is not ours."""
    found = {shutil.which(f"python3.{minor}") for minor in range(10, 20)}
    found |= {str(p) for p in Path("/root/.pyenv/versions").glob("3.*/bin/python3")}
    ours = importlib.util.MAGIC_NUMBER
    other = []
    for python in sorted(p for p in found if p):
        probe = subprocess.run(
            [python, "-c", "import sys, importlib.util as u; "
             "print(u.MAGIC_NUMBER.hex() if sys.version_info >= (3, 10) else '')"],
            capture_output=True, text=True, timeout=30)
        if probe.returncode == 0 and probe.stdout.strip() not in ("", ours.hex()):
            other.append(python)
    return other


def test_a_host_whose_python_has_another_bytecode_version_gets_its_own(tmp_path: Path) -> None:
    """The push carries sources only: the host compiles them with its own Python."""
    others = _other_pythons()
    if not others:
        pytest.skip("no CPython >= 3.10 with another bytecode version on this machine")
    python = others[0]
    agent = make_agent(python)

    async def go() -> tuple[HostRun, Result]:
        run, session = await _first_deploy(tmp_path, agent)
        try:
            return run, await session.run(cmd(
                [python, "-I", run.pyz], "host-status", "--dest", str(tmp_path / "app"),
                "--json"), timeout=60)
        finally:
            await session.close()

    run, result = asyncio.run(go())
    assert run.pushed_agent and result.code == 0, result
    magic = subprocess.run(
        [python, "-c", "import importlib.util as u; print(u.MAGIC_NUMBER.hex())"],
        capture_output=True, text=True, timeout=30).stdout.strip()
    with zipfile.ZipFile(run.pyz) as got:
        heads = {got.read(n)[:4].hex() for n in got.namelist() if n.endswith(".pyc")}
    assert heads == {magic} and magic != importlib.util.MAGIC_NUMBER.hex()
