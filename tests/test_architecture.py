"""The layout rules of the code base: the core's modules import each other in one direction only, with
no import hidden in a function or behind TYPE_CHECKING; its packages do too (a layer never imports one
above it); pricing never loads JAX or SPU; only the run-directory module spells run-directory paths;
and plugins reach the core only through ``benchbed.api``."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "benchbed"
PLUGINS = ROOT / "plugins"
# The packages from the bottom up; a package may import only those below it (and the base modules).
LAYERS = ["data", "model", "train", "robustness", "secure", "plugin", "run", "preflight", "submissions", "report"]
BASE = {"benchbed.errors", "benchbed.files", "benchbed.config", "benchbed.schemas", "benchbed.registry"}
RUN_DIR_NAMES = {"suite.json", "data.json", "run.lock", "teacher.pt", "teacher.json"}
RUN_DIR_FOLDERS = {"entries", "secure_infer", "work"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _core_files() -> dict[str, Path]:
    return {_module_name(p): p for p in CORE.rglob("*.py") if p.stem != "__main__"}


def _imports(path: Path, known: set[str] | None = None) -> list[tuple[str, int, bool]]:
    """(module, line, at top level) of every ``benchbed`` import in ``path``; ``from pkg import sub``
    names the submodule when ``sub`` is one of ``known``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [s for s in subs if known and s in known] or [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found += [(n, node.lineno, id(node) in top) for n in names if n == "benchbed" or n.startswith("benchbed.")]
    return found


def _graph() -> dict[str, set[str]]:
    files = _core_files()
    known = set(files)
    return {name: {m for m, _, _ in _imports(path, known) if m in known and m != name} for name, path in files.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_core_imports_only_at_module_level():
    hidden = [f"{p.relative_to(ROOT)}:{line} imports {m}" for p in CORE.rglob("*.py") for m, line, top in _imports(p)
              if not top]
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


def test_packages_import_only_the_layers_below():
    upward = []
    for module, imported in _graph().items():
        own = _layer(module)
        if own is None:
            continue
        upward += [f"{module} imports {m}" for m in sorted(imported)
                   if m not in BASE and (_layer(m) is None and m != "benchbed.api" or (_layer(m) or 0) > own)]
    assert upward == []


def test_base_modules_import_no_package():
    for name in BASE:
        imported = _graph()[name]
        assert all(m in BASE for m in imported), f"{name} imports {imported}"


def test_pricing_loads_neither_jax_nor_spu():
    code = ("import sys, benchbed.secure.cost, benchbed.plugin.manager, benchbed.run.runner; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'spu', 'libspu')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
    importlib.import_module("benchbed.secure.cost")


def test_only_the_run_directory_module_spells_its_layout():
    spelled = []
    for path in CORE.rglob("*.py"):
        if path.name == "rundir.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    node.value in RUN_DIR_NAMES or (node.value.startswith("teacher") and node.value.endswith(".pt"))):
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                for side in (node.left, node.right):
                    if isinstance(side, ast.Constant) and side.value in RUN_DIR_FOLDERS:
                        spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} / {side.value!r}")
    assert spelled == []


def test_plugins_import_the_core_only_through_the_api():
    leaks = [f"{p.name}:{line} imports {m}" for p in PLUGINS.glob("*.py") for m, line, _ in _imports(p)
             if m != "benchbed.api"]
    assert leaks == []


def test_the_checks_see_a_leak(tmp_path):
    leaky = tmp_path / "leaky.py"
    leaky.write_text("from benchbed.api import hookimpl\n\ndef f():\n    from benchbed.data import to_float\n")
    assert [(m, top) for m, _, top in _imports(leaky)] == [("benchbed.api", True), ("benchbed.data", False)]


def test_every_package_says_what_it_owns():
    for package in LAYERS:
        doc = ast.get_docstring(ast.parse((CORE / package / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), f"benchbed/{package}/__init__.py must say what it owns and may import"
