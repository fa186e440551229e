"""The protocol core is sans-IO: its modules import only pure code."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import roost

PACKAGE = Path(roost.__file__).parent
CORE = sorted(f"core.{p.stem}" for p in (PACKAGE / "core").glob("[a-z]*.py"))
# Pure standard-library modules only: computation on values, never a socket, file,
# thread, process or clock (os, time, asyncio, socket, pathlib ... are absent on purpose).
ALLOWED = {
    "__future__", "bisect", "collections", "dataclasses", "enum", "functools", "hashlib",
    "heapq", "ipaddress", "itertools", "json", "math", "operator", "random", "re", "struct",
    "typing", "unicodedata", "urllib.parse", "roost", "roost.core", "roost.errors",
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
            assert module in ALLOWED or top in ALLOWED, f"roost.{name} imports {module}"


@pytest.mark.parametrize("name", CORE)
def test_core_module_has_theory_of_operation(name: str) -> None:
    module = importlib.import_module(f"roost.{name}")
    assert module.__doc__ and len(module.__doc__.splitlines()) > 5
