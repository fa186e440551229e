"""The protocol core is sans-IO: its modules import only pure code."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import roost

PACKAGE = Path(roost.__file__).parent
CORE = ["bitfield", *sorted(f"core.{p.stem}" for p in (PACKAGE / "core").glob("[a-z]*.py"))]
ALLOWED = {
    "__future__", "collections", "dataclasses", "enum", "hashlib", "ipaddress", "random",
    "struct", "typing", "roost", "roost.core.bitfield", "roost.core.bencode", "roost.errors",
    "roost.core.metainfo", "roost.core.ratelimit", "roost.core",
}  # fmt: skip


def test_the_core_is_found() -> None:
    assert {"core.member", "core.conn", "core.wire", "core.picker", "core.choker"} <= set(CORE)


@pytest.mark.parametrize("name", CORE)
def test_core_module_imports_only_pure_modules(name: str) -> None:
    path = PACKAGE / (name.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        for module in modules:
            if module.startswith("roost.core."):
                module = "roost.core"
            top = module if module.startswith("roost") else module.split(".")[0]
            assert top in ALLOWED, f"roost.{name} imports {module}"


@pytest.mark.parametrize("name", CORE)
def test_core_module_has_theory_of_operation(name: str) -> None:
    module = importlib.import_module(f"roost.{name}")
    assert module.__doc__ and len(module.__doc__.splitlines()) > 5
