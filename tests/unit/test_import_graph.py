"""The package's import graph: no cycle between modules, and the bottom layer imports nothing above it.

Parsed with ``ast`` (nothing is imported). Every ``import`` counts, at module level or inside a
function: a function-level import hides a cycle from the interpreter, not from this test. Imports
under ``if TYPE_CHECKING:`` are left out: they are never executed (annotations only).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "streams"

#: The bottom layer: every stage may import these, and they import only each other.
BOTTOM = {"streams.records", "streams.errors", "streams.settings", "streams.keyspace"}

#: One layer up: the clients built from the settings. Every package may import them, so they import
#: only the bottom layer.
CLIENTS = {"streams.connections"}

#: Known cycles left for their owners, each with why. A cycle not listed here fails; a listed
#: one that is gone fails too (so the list shrinks as they are fixed).
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` refers to: itself, or the module that defines the imported name."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_nodes(tree)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against this module's package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                if target.split(".")[0] != "streams":
                    continue
                dep = _resolve(target, modules)
                if dep and dep != module and dep != "streams":
                    graph[module].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    graph = import_graph()
    assert "streams.records" in graph and "streams.records" in graph["streams.ingest.processor"]


def test_no_import_cycle_between_modules():
    found = set(cycles(import_graph()))
    new = [sorted(c) for c in found - set(KNOWN_CYCLES)]
    assert not new, f"import cycles: {new}"
    gone = [sorted(c) for c in set(KNOWN_CYCLES) - found]
    assert not gone, f"fixed, remove from KNOWN_CYCLES: {gone}"


def _imports_beyond(modules: set[str], allowed: set[str]) -> dict[str, list[str]]:
    graph = import_graph()
    assert modules <= set(graph)
    return {m: sorted(graph[m] - allowed) for m in modules if graph[m] - allowed}


def test_bottom_layer_imports_nothing_above_it():
    upward = _imports_beyond(BOTTOM, BOTTOM)
    assert not upward, f"the bottom layer imports higher modules: {upward}"


def test_the_clients_layer_imports_only_the_bottom_layer():
    upward = _imports_beyond(CLIENTS, BOTTOM)
    assert not upward, f"streams.connections imports above the bottom layer: {upward}"


def test_a_cycle_and_an_upward_import_are_caught():
    # The checks themselves: a made-up graph with one cycle through a function-level edge.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]
    assert cycles({"a": {"b"}, "b": set()}) == []
