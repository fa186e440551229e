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
        " for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.startswith('roost/')]"
    )
    result = run_isolated("-c", code, str(pyz))
    assert result.returncode == 0, result.stderr
