"""What a deploy's agent processes load at start-up: CPU paid on every host, every deploy.

Each host runs one agent session (roost session, under `python3 -I -S`) and one
tree fetch (exec'd by the session). Both run here in their own interpreter and
report the modules they loaded. The whole host protocol (roost.target.protocol:
errors, fetch events, origin, pull agent and dry-run records) is the operator's;
the session loads the host commands' records (protocol_host) and the fetch only
the common part (protocol_common). Neither reads a tar for a tree release, nor a
signature without --allowed-signers; the session never starts asyncio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from roost.deploy.host import Agent, HostRun
from roost.deploy.hosts import HostSpec
from tests.deploy.test_tree import _prepare, release
from tests.deploy.trees import make_sample_tree, tree_signature
from tests.swarm.harness import Procs

#: run an agent command in this interpreter, then print the modules it loaded
PROBE = (
    "import json, sys\n"
    "from roost.__main__ import main\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
)

#: never loaded by a tree fetch, nor by the agent session (each was once)
NEITHER = ("roost.target.protocol", "roost.target.signing", "tarfile")


def _run(argv: list[str], stdin: str = "") -> list[str]:
    """The modules `roost ARGV` loaded, run in its own interpreter; it must succeed."""
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], input=stdin,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, result.stderr
    return list(report["modules"])


def test_a_tree_fetch_loads_only_the_common_protocol(tmp_path: Path) -> None:
    """The deploy's fetch of a next release (--tree-manifest --reuse --stage): every
    file is held by the release before it, so it places them and stages with no peer."""
    src = make_sample_tree(tmp_path / "src", big=200_000)
    dest = tmp_path / "dest"
    procs = Procs()
    try:
        release(tmp_path, procs, src, dest, "v1")  # seeded, fetched, activated
    finally:
        procs.close()
    work, torrent, staging = _prepare(tmp_path, src, dest, "v2")
    modules = _run(["fetch", str(torrent), "--tree-manifest", str(work / "manifest.json"),
                    "--dest", str(dest), "--reuse", "copy", "--stage", "-d", str(staging),
                    "--no-tracker", "--no-seed", "--quiet", "--json"])
    assert tree_signature(dest / "releases" / "v2") == tree_signature(src)  # a real fetch
    loaded = [m for m in (*NEITHER, "roost.target.protocol_host") if m in modules]
    assert loaded == []
    assert "roost.target.protocol_common" in modules and "roost.engine.session" in modules


def test_the_agent_session_loads_its_commands_but_not_the_rest() -> None:
    modules = _run(["session"], stdin='{"op": "bye"}\n')
    loaded = [m for m in (*NEITHER, "asyncio") if m in modules]
    assert loaded == []
    # the commands it forks for were loaded once (roost.target.session._preload)
    assert {"roost.target.hostlock", "roost.target.hostops", "roost.target.release",
            "roost.target.protocol_host"} <= set(modules)


def test_the_session_starts_without_site_and_the_fetch_with_it() -> None:
    """`-S`: the session is the standard library alone, and a host's site (its .pth
    files, sitecustomize) is CPU it never uses; the fetch it execs keeps site, where
    uvloop may be installed (roost.target.session._self_argv)."""
    agent = Agent("roost-1-abc.pyz", "python3", b"PK")
    run = HostRun(HostSpec("h1", "h1"))
    command = run.probe_command(agent, then="session", push=True)
    assert 'exec python3 -I -S "$HOME/.cache/roost/roost-1-abc.pyz" session' in command
    assert "exec python3 -I -S -c " in command  # a first deploy: the agent is received
    assert "python3 -S -c 'import sys" in command  # the version probe
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv[0] = '/h/roost.pyz'\n"
         "from roost.target.session import _self_argv; print(_self_argv())"],
        capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "['-I', '/h/roost.pyz']", probe.stderr
