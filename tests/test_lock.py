"""requirements.lock must agree with pyproject.toml (scripts/lockcheck.py)."""

from __future__ import annotations

from pathlib import Path

from scripts.lockcheck import ROOT, problems


def test_the_lock_agrees_with_pyproject() -> None:
    assert problems(ROOT / "pyproject.toml", ROOT / "requirements.lock") == []


def test_a_changed_range_is_caught(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    assert '"click>=8.1"' in text
    pyproject.write_text(text.replace('"click>=8.1"', '"click>=99"'))
    found = problems(pyproject, ROOT / "requirements.lock")
    assert any("changed since" in p for p in found)
    assert any(p.startswith("click==") and "outside >=99" in p for p in found)


def test_a_new_dependency_missing_from_the_lock_is_caught(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    pyproject.write_text(text.replace('"pyyaml>=6",', '"pyyaml>=6",\n    "leftpad>=1",'))
    found = problems(pyproject, ROOT / "requirements.lock")
    assert any("leftpad is required" in p for p in found)


def test_an_unhashed_pin_is_caught(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text((ROOT / "requirements.lock").read_text() + "\nleftpad==1.0\n")
    assert any("leftpad==1.0 has no hashes" in p
               for p in problems(ROOT / "pyproject.toml", lock))
