"""Run `roost deploy` (the real CLI, as a subprocess) against a Fleet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fleet.fleet import Fleet

ROOT = Path(__file__).resolve().parents[2]


def deploy_argv(fleet: Fleet, src: Path, hosts: list[str], *extra: str,
                command: str = "deploy") -> list[str]:
    argv = [sys.executable, "-m", "roost", command]
    if command == "deploy":
        argv.append(str(src))
    argv += ["--hosts", ",".join(hosts), "--dest", str(fleet.dest), "--user", "root",
             "--key", str(fleet.key), "--known-hosts", str(fleet.known_hosts),
             "--connect-timeout", "5", "--json", *extra]
    return argv


def run_roost(argv: list[str], timeout: float = 300, src: Path | None = None,
              env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    """Run roost (from the checkout `src`, default this one; `env` added to ours);
    past `timeout` it gets SIGINT (so it cleans up), then SIGKILL."""
    environ = {**os.environ, **(env or {})}
    if src is not None:
        environ["PYTHONPATH"] = str(src)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=src or ROOT, env=environ)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise AssertionError(f"roost took over {timeout} s:\n{out[-3000:]}\n{err[-3000:]}"
                             ) from None
    try:
        report = json.loads(out)
    except ValueError:
        raise AssertionError(f"no JSON report (exit {proc.returncode}):\n"
                             f"{out[-2000:]}\n{err[-3000:]}") from None
    return proc.returncode, report, err


def by_host(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["host"]: row for row in report["hosts"]}


def remote_tree_digest(fleet: Fleet, i: int, path: str) -> str:
    """SHA-256 over (path, type, mode, content/link) of a tree on host i, via OpenSSH."""
    script = (
        "import hashlib, os, stat, sys\n"
        "root = os.path.realpath(sys.argv[1]); h = hashlib.sha256()\n"
        "for d, dirs, files in os.walk(root):\n"
        "    dirs.sort()\n"
        "    for n in sorted(dirs + files):\n"
        "        p = os.path.join(d, n); st = os.lstat(p); rel = os.path.relpath(p, root)\n"
        "        if stat.S_ISLNK(st.st_mode): v = 'L' + os.readlink(p)\n"
        "        elif stat.S_ISDIR(st.st_mode): v = 'D%o' % stat.S_IMODE(st.st_mode)\n"
        "        else: v = 'F%o' % stat.S_IMODE(st.st_mode) + "
        "hashlib.sha256(open(p, 'rb').read()).hexdigest()\n"
        "        h.update((rel + '\\0' + v + '\\n').encode())\n"
        "print(h.hexdigest())\n"
    )
    out = fleet.ssh(i, f"python3 -I -c {_q(script)} {_q(path)}")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def local_tree_digest(path: Path) -> str:
    import hashlib
    import os
    import stat

    root = os.path.realpath(path)
    h = hashlib.sha256()
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for n in sorted(dirs + files):
            p = os.path.join(d, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                v = "L" + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                v = f"D{stat.S_IMODE(st.st_mode):o}"
            else:
                v = f"F{stat.S_IMODE(st.st_mode):o}" + hashlib.sha256(
                    Path(p).read_bytes()).hexdigest()
            h.update((rel + "\0" + v + "\n").encode())
    return h.hexdigest()


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)
