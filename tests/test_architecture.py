"""Who may import whom, read from the code: no import cycle between mlprep's modules, no import
of another module's private name, and a library that never edits ``sys.path``."""

from __future__ import annotations

import ast
from pathlib import Path

import mlprep

PACKAGE = Path(mlprep.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = ("mlprep", *p.relative_to(PACKAGE).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, mods: dict[str, Path]) -> tuple[set[str], list[str]]:
    """(mlprep modules imported anywhere in the file, uses of other modules' private names)."""
    edges: set[str] = set()
    private: list[str] = []
    aliases: dict[str, str] = {}  # a local name bound to an mlprep module
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in mods:
                    edges.add(a.name)
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, path, node)
            for a in node.names:
                full = f"{base}.{a.name}"
                if full in mods:  # a module: from mlprep.batch import job
                    edges.add(full)
                    aliases[a.asname or a.name] = full
                elif base in mods:
                    edges.add(base)
                    if _private(a.name) and base != module:
                        private.append(f"{module}: from {base} import {a.name}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                and aliases.get(node.value.id, module) != module):
            private.append(f"{module}: {node.value.id}.{node.attr} ({aliases[node.value.id]})")
    return edges - {module}, private


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    mods = _modules()
    graph, private = {}, []
    for m, p in mods.items():
        graph[m], bad = _imports(m, p, mods)
        private += bad
    return graph, private


def test_no_import_cycle():
    graph, _ = _graph()
    assert _cycles(graph) == []


def test_no_module_imports_another_modules_private_name():
    _, private = _graph()
    assert private == []


def test_the_library_never_edits_sys_path():
    hits = [f"{p.relative_to(PACKAGE)}:{i}" for p in PACKAGE.rglob("*.py")
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if "sys.path" in line]
    assert hits == []


def test_the_checks_find_what_they_look_for(tmp_path):
    """The detectors themselves: a cycle, a private import and a private attribute are caught."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    mods = {"mlprep.x": Path("x.py"), "mlprep.y": Path("y.py")}
    tree_text = "from mlprep.y import _hidden\nimport mlprep.y as yy\nyy._other()\nfrom mlprep.y import __version__\n"
    probe = tmp_path / "x.py"
    probe.write_text(tree_text)
    edges, private = _imports("mlprep.x", probe, mods)
    assert edges == {"mlprep.y"}
    assert private == ["mlprep.x: from mlprep.y import _hidden", "mlprep.x: yy._other (mlprep.y)"]
