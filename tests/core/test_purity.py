"""The protocol core is sans-IO: its modules import only pure code."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import roost

CORE = ["bitfield", "wire", "picker", "choker"]
ALLOWED = {
    "__future__", "collections", "dataclasses", "enum", "hashlib", "random", "struct",
    "typing", "roost", "roost.bitfield", "roost.bencode", "roost.errors",
}  # fmt: skip


@pytest.mark.parametrize("name", CORE)
def test_core_module_imports_only_pure_modules(name: str) -> None:
    path = Path(roost.__file__).parent / f"{name}.py"
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        for module in modules:
            top = module if module.startswith("roost") else module.split(".")[0]
            assert top in ALLOWED, f"roost.{name} imports {module}"


@pytest.mark.parametrize("name", CORE)
def test_core_module_has_theory_of_operation(name: str) -> None:
    module = importlib.import_module(f"roost.{name}")
    assert module.__doc__ and len(module.__doc__.splitlines()) > 5
