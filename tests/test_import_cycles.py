"""No import cycles between the package's modules, lazy (function-level) imports included.

A cycle hidden behind an import inside a function still couples the two modules both ways: each
must be understood, tested and changed with the other. The graph is read from the source with
``ast``, so nothing is imported and every ``import`` statement counts wherever it stands.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "qwen3_rerank"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def module_name(path: Path, src: Path = SRC) -> str:
    parts = [PACKAGE, *path.relative_to(src).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module → the package's modules it imports (a name imported from a package counts as its
    submodule when one exists, else as the package)."""
    files = {module_name(p, src): p for p in src.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in files else module for alias in node.names
                ]
            for target in targets:
                while target and target not in files:  # `import a.b.c` of a name inside a module
                    target = target.rpartition(".")[0]
                if target.startswith(PACKAGE) and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
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


def test_the_reader_finds_a_planted_cycle(tmp_path):
    """The checker itself can fail: two modules that import each other lazily are caught."""
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from .b import g\n    return g\n")
    (package / "b.py").write_text("from . import a\n\ndef g():\n    return a\n")
    (package / "c.py").write_text("from qwen3_rerank.a import f\n")
    assert cycles(import_graph(package)) == [[f"{PACKAGE}.a", f"{PACKAGE}.b"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_module_shadows_the_standard_library():
    import sys

    shadowing = sorted(
        module_name(p) for p in SRC.rglob("*.py") if p.stem in sys.stdlib_module_names and p.stem != "__init__"
    )
    assert not shadowing, f"modules named like the standard library: {', '.join(shadowing)}"
