"""The target-side agent runs from a zipapp with only the standard library.

`python3 -I -S` ignores PYTHONPATH, user site and site-packages: nothing
third-party is importable, just like a bare host.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from roost.deploy.zipapp import build_zipapp


def run_isolated(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", *argv], capture_output=True, text=True, timeout=60
    )


def test_isolated_interpreter_really_lacks_third_party_packages() -> None:
    probe = run_isolated("-c", "import click")
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr


def test_zipapp_holds_only_target_side_modules(tmp_path: Path) -> None:
    import zipfile

    pyz = build_zipapp(tmp_path / "roost.pyz")
    names = set(zipfile.ZipFile(pyz).namelist())
    assert "roost/target/agent.py" in names and "__main__.py" in names
    assert "roost/commands/cli.py" not in names
    assert not any(n.startswith("roost/commands/") for n in names)
    assert not any(n.startswith("roost/tracker/") for n in names)


def test_agent_runs_from_zipapp_without_third_party(tmp_path: Path) -> None:
    pyz = build_zipapp(tmp_path / "roost.pyz")
    result = run_isolated(str(pyz), "nonsense")
    assert result.returncode == 2 and "expected one of" in result.stderr
    for command in ("fetch", "seed"):
        result = run_isolated(str(pyz), command, "--help")
        assert result.returncode == 0, result.stderr
        assert f"roost {command}" in result.stdout
    # every target-side module imports cleanly in the bare interpreter
    code = (
        "import sys, zipfile; sys.path.insert(0, sys.argv[1]);"
        "import importlib;"
        "[importlib.import_module(n[:-3].replace('/', '.').removesuffix('.__init__'))"
        " for n in zipfile.ZipFile(sys.argv[1]).namelist()"
        " if n.startswith('roost/') and n.endswith('.py')]"
    )
    result = run_isolated("-c", code, str(pyz))
    assert result.returncode == 0, result.stderr


IMPORT_FROM_PYZ = ("import sys; sys.path.insert(0, sys.argv[1]);"
                   "import roost.target.agent as a, roost.engine.session as s;"
                   "print(a.__file__); print(s.__file__)")


def test_zipapp_modules_run_from_bytecode_built_with_them(tmp_path: Path) -> None:
    """No agent process compiles the modules again (Python cannot cache bytecode
    inside a zip): each .py has its .pyc, and that is what gets imported."""
    import zipfile

    pyz = build_zipapp(tmp_path / "roost.pyz")
    names = set(zipfile.ZipFile(pyz).namelist())
    sources = [n for n in names if n.endswith(".py") and n != "__main__.py"]
    assert sources and all(n + "c" in names for n in sources)
    result = run_isolated("-c", IMPORT_FROM_PYZ, str(pyz))
    assert result.returncode == 0, result.stderr
    assert all(line.endswith(".pyc") for line in result.stdout.split()), result.stdout


def test_zipapp_bytecode_of_another_python_falls_back_to_source(tmp_path: Path) -> None:
    """A host whose Python has another bytecode version compiles the source."""
    import zipfile

    pyz = build_zipapp(tmp_path / "roost.pyz")
    other = tmp_path / "other.pyz"
    with zipfile.ZipFile(pyz) as src, zipfile.ZipFile(other, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".pyc"):
                data = b"\x00\x00\r\n" + data[4:]  # a magic no Python uses
            dst.writestr(info, data)
    result = run_isolated("-c", IMPORT_FROM_PYZ, str(other))
    assert result.returncode == 0, result.stderr
    assert all(line.endswith(".py") for line in result.stdout.split()), result.stdout
    result = run_isolated(str(other), "fetch", "--help")
    assert result.returncode == 0 and "roost fetch" in result.stdout, result.stderr


def test_the_agent_keeps_its_name_whatever_the_process_does_meanwhile() -> None:
    """Hosts cache the agent by name: a rebuild must not re-push it. The zip's bytes
    may differ (marshal marks objects by reference count, which other threads
    move while it runs), so the name comes from the sources."""
    code = ("import threading, json; from roost.deploy.run import make_agent;"
            "stop = threading.Event();"
            "churn = lambda: [json.loads(json.dumps({'a': [1, 'x'] * 50})) for _ in iter("
            "stop.is_set, True)];"
            "t = threading.Thread(target=churn); t.start();"
            "print(make_agent('python3').name); stop.set(); t.join()")
    plain = ("from roost.deploy.run import make_agent; print(make_agent('python3').name)")
    names = {subprocess.run([sys.executable, "-c", c], capture_output=True, text=True,
                            timeout=120, check=True).stdout for c in (code, plain, code)}
    assert len(names) == 1, names
