"""The architecture holds: no import cycles among lookalike modules, function-level imports included.

``lint-imports`` (run by ./test.sh) checks the layers contract in pyproject.toml; this test checks what that
contract cannot: that no two modules import each other in a ring, even inside one layer or through a package's
``__init__``. Imports under ``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import grimp


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), i.e. the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("lookalike", exclude_type_checking_imports=True)
    assert len(graph.modules) > 20
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]


def test_lower_layers_import_no_higher_one() -> None:
    """The bottom of the stack (errors, io, config, metrics) imports nothing of lookalike but errors."""
    graph = grimp.build_graph("lookalike", exclude_type_checking_imports=True)
    for module in ("lookalike.io", "lookalike.config", "lookalike.metrics", "lookalike.errors"):
        imported = {m for m in graph.find_modules_directly_imported_by(module) if m.startswith("lookalike")}
        assert imported <= {"lookalike.errors"}, (module, imported)
