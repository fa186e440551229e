"""No import cycle anywhere in roost/: the layers form a tree, not a circle.

Every import counts: at module level, inside functions (lazy), and under
`if TYPE_CHECKING:` (a type-only import back to a caller is still a circle a
reader has to untangle). Cycles are strongly connected components of the
module graph (Tarjan).
"""

from __future__ import annotations

from pathlib import Path

from tests.test_layering import ALL, imports_of


def module_graph(modules: list[tuple[str, Path]]) -> dict[str, set[str]]:
    names = {name for name, _ in modules}
    graph: dict[str, set[str]] = {}
    for name, path in modules:
        deps = set()
        for imported in imports_of(name, path):
            parts = imported.split(".")
            while parts and ".".join(parts) not in names:
                parts.pop()  # "roost.core.wire.Piece" -> the module roost.core.wire
            target = ".".join(parts)
            if target and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_in_roost() -> None:
    assert cycles(module_graph(ALL)) == []


def test_the_check_finds_a_planted_cycle(tmp_path: Path) -> None:
    """Not vacuous: a type-only import back to the caller is reported."""
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text("import roost.x.b\n")
    b.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import roost.x.c\n")
    c.write_text("def f():\n    import roost.x.a\n")
    graph = module_graph([("roost.x.a", a), ("roost.x.b", b), ("roost.x.c", c)])
    assert cycles(graph) == [["roost.x.a", "roost.x.b", "roost.x.c"]]
    assert cycles(module_graph(ALL[:0])) == []
