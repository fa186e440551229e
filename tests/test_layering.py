"""Enforce design.md's layering: what may import what (static, via ast).

Lazy imports inside functions count too. Pure modules import no
asyncio/socket/time/filesystem; target-side modules import only the
standard library and other target-side modules (the zipapp carries nothing
else); nothing imports a layer above it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from roost.layers import (
    FORBIDDEN_EDGES,
    IMPURE_STDLIB,
    PURE_MAX_RANK,
    is_target_side,
    rank_of,
)

PACKAGE = Path(__file__).resolve().parent.parent / "roost"


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        found.append((name, path))
    return found


def imports_of(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.add(module)
            # "from roost import x" may import the submodule roost.x
            out.update(
                f"{module}.{alias.name}"
                for alias in node.names
                if module.startswith("roost")
                and rank_of(f"{module}.{alias.name}") is not None
                and (PACKAGE.parent / f"{module}.{alias.name}".replace(".", "/"))
                .with_suffix(".py")
                .exists()
            )
    return out


ALL = modules()


def test_every_module_has_a_rank() -> None:
    missing = [name for name, _ in ALL if rank_of(name) is None]
    assert not missing, f"add these modules to roost/layers.py RANKS: {missing}"


@pytest.mark.parametrize(("name", "path"), ALL, ids=[n for n, _ in ALL])
def test_module_respects_layers(name: str, path: Path) -> None:
    rank = rank_of(name)
    assert rank is not None
    problems = []
    for imported in sorted(imports_of(name, path)):
        top = imported.split(".")[0]
        if top == "roost":
            other = rank_of(imported)
            if other is not None and other > rank:
                problems.append(f"imports {imported} (rank {other}) from rank {rank}")
            if is_target_side(name) and other is not None and not is_target_side(imported):
                # the zipapp carries only target-side modules: anything else
                # is missing on a bare host, and the import fails there
                problems.append(f"target-side module imports {imported}, which is not")
            for src, dst in FORBIDDEN_EDGES:
                if (name == src or name.startswith(src + ".")) and (
                    imported == dst or imported.startswith(dst + ".")
                ):
                    problems.append(f"imports {imported}: {src} must not use {dst}")
            continue
        if rank <= PURE_MAX_RANK and (top in IMPURE_STDLIB or imported in IMPURE_STDLIB):
            problems.append(f"pure module imports {imported}")
        if is_target_side(name) and top not in sys.stdlib_module_names and top != "__future__":
            problems.append(f"target-side module imports non-stdlib {imported}")
    assert not problems, f"{name}: " + "; ".join(problems)


def test_checker_catches_violations(tmp_path: Path) -> None:
    """The checker is not vacuous: a planted bad import is reported."""
    bad = tmp_path / "wire.py"
    bad.write_text("import socket\nfrom roost.engine import x\n")
    found = imports_of("roost.core.wire", bad)
    assert "socket" in found and "roost.engine" in found
