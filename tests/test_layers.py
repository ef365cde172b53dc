"""Layers point down (docs/architecture.md): the import-linter contract in pyproject.toml holds,
and no module of unidb imports itself back through other modules.

The cycle check reads every import statement of every module with `ast` — module level,
inside functions, under `if TYPE_CHECKING:` — because an import moved into a function to dodge
a cycle is still a cycle: the two modules still need each other.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "unidb"


def module_files(package: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__) for every module under `package`."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts.pop()
        out[".".join(parts)] = (path, is_pkg)
    return out


def _imported(name: str, is_pkg: bool, node: ast.Import | ast.ImportFrom,
              modules: dict) -> list[str]:
    """The modules of `modules` an import statement in module `name` loads by name."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            pkg = name.split(".") if is_pkg else name.split(".")[:-1]
            pkg = pkg[:len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([node.module] if node.module else []))
        # `from a.b import c` loads the module a.b.c when there is one, else a name of a.b
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                   for a in node.names]
    found = []
    for t in targets:
        while t and t not in modules:      # `import a.b.c` of a name inside a module
            t = t.rpartition(".")[0]
        if t:
            found.append(t)
    return found


def import_graph(package: Path) -> dict[str, dict[str, int]]:
    """importer -> {imported: first line} over the modules of `package`, every import counted.

    A package's __init__ runs before its submodules, but that implicit step is not an edge
    here: only what a module names in an import statement is."""
    modules = module_files(package)
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for name, (path, is_pkg) in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(name, is_pkg, node, modules):
                    if target != name:
                        graph[name].setdefault(target, node.lineno)
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def describe(graph: dict[str, dict[str, int]], group: list[str]) -> str:
    inside = set(group)
    edges = [f"  {a}:{line} imports {b}" for a in group for b, line in sorted(graph[a].items())
             if b in inside]
    return "import cycle among " + ", ".join(group) + ":\n" + "\n".join(edges)


def test_no_import_cycles_between_modules():
    graph = import_graph(PACKAGE)
    assert len(graph) > 50 and "unidb.query.planner" in graph     # the walk found the code
    cycles = find_cycles(graph)
    assert not cycles, "\n".join(describe(graph, g) for g in cycles)


def test_cycle_finder_sees_function_level_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n    return a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    import pkg.a\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b": 1} and graph["pkg.b"] == {"pkg.a": 2}
    assert graph["pkg.c"] == {"pkg.a": 3}
    assert find_cycles(graph) == [["pkg.a", "pkg.b"]]


def _lint_imports() -> str | None:
    beside = Path(sys.executable).with_name("lint-imports")
    return str(beside) if beside.exists() else shutil.which("lint-imports")


def test_layer_contract_holds():
    exe = _lint_imports()
    if exe is None:
        pytest.skip("import-linter is not installed (it is in the `dev` extra: "
                    "pip install -e '.[dev]'), so the layer contract in pyproject.toml "
                    "was not checked")
    # lint-imports analyses the unidb found from its working directory: this checkout's.
    r = subprocess.run([exe, "--no-logo", "--no-cache"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
