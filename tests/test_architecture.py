"""The layout rules of the code base: the core's imports form a DAG with no import hidden in a
function or behind TYPE_CHECKING, and plugins reach the core only through ``benchbed.api``."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "benchbed"
PLUGINS = ROOT / "plugins"


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, at top level) of every ``benchbed`` import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "benchbed" else [f"benchbed.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found += [(n, node.lineno, id(node) in top) for n in names if n == "benchbed" or n.startswith("benchbed.")]
    return found


def _graph() -> dict[str, set[str]]:
    modules = {f"benchbed.{p.stem}": p for p in CORE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    return {name: {m for m, _, _ in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_core_imports_only_at_module_level():
    hidden = [f"{p.name}:{line} imports {m}" for p in CORE.glob("*.py") for m, line, top in _imports(p) if not top]
    assert hidden == []


def test_core_import_graph_has_no_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_plugins_import_the_core_only_through_the_api():
    leaks = [f"{p.name}:{line} imports {m}" for p in PLUGINS.glob("*.py") for m, line, _ in _imports(p)
             if m != "benchbed.api"]
    assert leaks == []


def test_the_checks_see_a_leak(tmp_path):
    leaky = tmp_path / "leaky.py"
    leaky.write_text("from benchbed.api import hookimpl\n\ndef f():\n    from benchbed.data import to_float\n")
    assert [(m, top) for m, _, top in _imports(leaky)] == [("benchbed.api", True), ("benchbed.data", False)]
