"""`roost publish --web-seed`: the signed release names the web seeds, and every pull
agent's fetch takes pieces from a real nginx besides the swarm."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from tests.pull.harness import (
    AgentProc,
    agent_argv,
    current_of,
    free_port,
    publish_argv,
    release_tree,
    run_publish,
)
from tests.pull.keys import allowed_signers, make_key
from tests.webseed.nginx import Nginx

SIZE = 3_000_000


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pull_agents_take_pieces_from_the_published_web_seed(
        tmp_path: Path, www: tuple[Path, Nginx]) -> None:
    root, nginx = www
    key = make_key(tmp_path, "publisher")
    signers = allowed_signers(tmp_path / "allowed_signers", ("ci", key))
    src = release_tree(tmp_path / "src", "app", size=SIZE)
    # a directory published with web seeds is sent as itself (format dir):
    # BEP 19 multi-file, <url>/<torrent name = the directory's name>/<path>
    shutil.copytree(src, root / src.name)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    agents = [AgentProc(f"a{i}", tmp_path / f"dest{i}", tmp_path / f"a{i}.log",
                        agent_argv(f"a{i}", tmp_path / f"dest{i}", url, signers)).start()
              for i in range(2)]
    try:
        # origin and agents capped at 32 KiB/s: 3 MB from the swarm alone would take
        # over 90 s, beyond --timeout; the web seed has no cap
        code, report, err = run_publish(publish_argv(
            src, key, "127.0.0.1", port, ["a0", "a1"], "--tag", "w1", "--upload-rate", "32K",
            "--timeout", "60", "--web-seed", nginx.url()), timeout=150)
    finally:
        for agent in agents:
            agent.stop()
    assert code == 0, (report.get("message"), err[-2000:])
    for agent in agents:
        assert current_of(agent.dest) == "w1"
        assert digest(agent.dest / "current" / "data.bin") == digest(src / "data.bin")
    asked = [line for line in nginx.requests() if f'"GET /{src.name}/' in line]
    assert asked and all('" 206 ' in line for line in asked), asked[:3]
    served = sum(int(line.split('" 206 ')[1].split()[0]) for line in asked)
    assert served >= SIZE // 2, f"the web seed served {served} of {SIZE} bytes x 2 agents"


def test_publish_refuses_web_seeds_for_a_tarball_it_makes(tmp_path: Path) -> None:
    key = make_key(tmp_path, "publisher")
    src = release_tree(tmp_path / "src", "app", size=1000)

    def publish(*extra: str) -> tuple[int, str]:
        argv = publish_argv(src, key, "127.0.0.1", free_port(), ["a0"], "--tag", "t1", *extra)
        code, _, err = run_publish(argv, timeout=60)
        return code, err

    code, err = publish("--web-seed", "http://127.0.0.1:9/", "--format", "tar")
    assert code == 2 and "--web-seed needs a payload" in err, err[-1000:]
    assert "Traceback" not in err
    code, err = publish("--web-seed", "ftp://x/")
    assert code == 2 and "is not an http" in err and "Traceback" not in err, err[-1000:]
