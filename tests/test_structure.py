"""The house's shape, checked: no import circle among successor's modules, no module over 400 lines, no
workload branch outside the workloads' own folders, and the public API importable from the package."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import successor

PKG = Path(successor.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["successor", *parts])] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every successor module `name` imports, at the top or inside a function (a lazy import closes a circle
    just the same)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # annotations only: `if TYPE_CHECKING:` imports never run
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in modules:
                    out.add(sub)
                elif target in modules:
                    out.add(target)
    return out - {name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["successor.driver"] >= {"successor.lab", "successor.workloads"}  # the walk sees imports
    assert _cycles(graph) == []


def test_the_walk_finds_a_circle_where_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_400_lines():
    long = {str(p.relative_to(PKG)): n for p in _modules().values() if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_no_workload_branch_outside_the_workloads():
    branch = re.compile(r"""workload\)?\s*(==|!=)\s*["'](script|tinylm)["']|get\(["']workload["']""")
    found = [f"{p.relative_to(PKG)}:{i}" for p in _modules().values() if "workloads" not in p.parts
             for i, line in enumerate(p.read_text().splitlines(), 1) if branch.search(line)]
    assert found == []


def test_the_public_api_is_the_package():
    for name in ("run", "open_run", "RunResult", "load_config", "Policy", "Progress", "PlainProgress", "Workload",
                 "Driver", "status", "verify"):
        assert callable(getattr(successor, name)), name
    assert set(successor.__all__) >= {"run", "load_config", "RunResult"}
