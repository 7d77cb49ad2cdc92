"""Imports run one way (docs/architecture.md): read every module's imports from its source (top level and inside
functions alike) and check that no import circle exists and that no module imports upward past its layer."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "kernels", "roofline")
ENTRY = {"bench.run": ROOT / "bench" / "run.py"}

# (importer prefix, imported prefix, why not): a prefix names a module and everything under it
NEVER = [
    ("kernels", "harness", "kernels/ stand alone: the harness imports them, never the reverse"),
    ("kernels", "roofline", "kernels/ stand alone"),
    ("harness.registry", "harness.families", "the registry finds families by name (load_all); they import it"),
    ("harness.records", "harness.compare", "compare reads records"),
    ("harness.records", "harness.report", "the report reads records"),
    ("harness.records", "roofline", "the figures read records"),
    ("harness.records", "harness.runner", "the runner writes records"),
    ("harness.runner", "harness.cli", "the runner knows no command line"),
    ("harness.families", "harness.runner", "a family is judged by the runner, not the reverse"),
    ("harness.families", "harness.cli", "a family knows no command line"),
    ("harness.interp", "harness.cuda", "the CPU interpreter is harness.cuda's backend: what both need is cuda_common"),
    ("harness.cuda_common", "harness.cuda", "cuda_common lies under harness.cuda and harness.interp"),
    ("harness.cuda_common", "harness.interp", "cuda_common lies under harness.cuda and harness.interp"),
    ("harness.hotloop", "harness.xray", "the hot-loop model lies under the X-ray: what both need is harness.sm"),
]


@functools.cache
def _modules() -> dict[str, Path]:
    mods = dict(ENTRY)
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _imports(name: str, path: Path, known: set[str]) -> dict[str, int]:
    """Project modules that ``name`` imports -> first line (``from pkg import sub``: pkg.sub when that is a module)."""
    tree = _tree(path)
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base, node.lineno)
    return out


@functools.cache
def _graph() -> dict[str, dict[str, int]]:
    mods = _modules()
    return {n: _imports(n, p, set(mods)) for n, p in mods.items()}


def _circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _under(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def test_the_graph_sees_the_imports_it_checks():
    """The reader itself: top-level, function-level and ``from pkg import module`` imports all become edges."""
    g = _graph()
    assert "harness.registry" in g["harness.families.knn"]  # top level
    assert "harness.runner" in g["harness.cli"]  # inside a function
    assert "roofline.model" in g["roofline.plot"]  # from roofline import model
    assert "kernels.knn_search" in g["harness.families._knn_cuda"]
    assert len(g) > 40


def test_no_import_circles():
    circles = _circles(_graph())
    assert not circles, "import circles (each a set of modules that import each other): " + "; ".join(
        " <-> ".join(c) for c in circles)


def test_no_module_imports_an_entry_point():
    """Nothing imports a ``__main__`` or bench/run.py, by name or by path: shared CLI code lives in harness/cli.py."""
    bad = [f"{m} -> {t} (line {line})" for m, ts in _graph().items() for t, line in ts.items()
           if t.endswith("__main__") or t == "bench.run"]
    for name, path in _modules().items():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "spec_from_file_location":
                strings = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
                if any(s.endswith(("run.py", "__main__.py")) for s in strings):
                    bad.append(f"{name} loads {strings} by path (line {node.lineno})")
    assert not bad, bad


def test_no_import_runs_upward():
    g = _graph()
    bad = [f"{m} -> {t} (line {line}): {why}" for src, dst, why in NEVER for m, ts in g.items() if _under(m, src)
           for t, line in ts.items() if _under(t, dst)]
    assert not bad, "\n".join(bad)
