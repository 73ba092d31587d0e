"""Layering, checked on the source (an import-linter equivalent that understands our package_dir mapping):
the application (the CLI, the stage orchestrator `hetero.pipeline` and `hetero.embed_job`; the front door
`hetero/__init__` names them lazily) -> hetero.devices -> hetero.export -> the core (hetero.data, .models,
.training, .release and the shared contracts), never upwards, and no import circle between the modules or
subpackages of a package. Function-level (lazy) imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"hetero": REPO / "hetero", "hetero.export": REPO / "export", "hetero.devices": REPO / "devices"}


def _modules() -> dict[str, Path]:
    mods = {}
    for package, folder in ROOTS.items():
        for f in folder.rglob("*.py"):
            rel = f.relative_to(folder).with_suffix("").parts
            rel = rel[:-1] if rel[-1] == "__init__" else rel
            mods[".".join((package, *rel))] = f
    return mods


def _imports(path: Path, name: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in ("hetero", "export", "devices")}


APPLICATION = ("hetero.cli", "hetero.pipeline", "hetero.embed_job")


def _layer(module: str) -> int:
    if module.startswith(APPLICATION):  # `hetero` itself resolves its front door by name (lazily), not by import
        return 3
    if module.startswith("hetero.devices"):
        return 2
    if module.startswith("hetero.export"):
        return 1
    return 0


GRAPH = {m: _imports(p, m) for m, p in _modules().items()}


def _known(target: str) -> str | None:
    """The module an import names (`from a.b import c` may name module a.b.c or attribute c of a.b)."""
    while target and target not in GRAPH:
        target = target.rpartition(".")[0]
    return target or None


def test_no_import_uses_the_old_top_level_names():
    bad = sorted((m, t) for m, ts in GRAPH.items() for t in ts if t.split(".")[0] in ("export", "devices"))
    assert not bad, f"import hetero.export / hetero.devices instead: {bad[:3]}"


def test_dependencies_point_down():
    up = sorted((m, t) for m, ts in GRAPH.items() for t in filter(None, map(_known, ts)) if _layer(t) > _layer(m))
    assert not up, f"upward imports: {up}"


def _siblings_cycle() -> list[str] | None:
    """A cycle among modules of one package (edges between children of the same parent), or None."""
    edges: dict[str, set[str]] = {}
    for m, ts in GRAPH.items():
        for t in filter(None, map(_known, ts)):
            a, b = m.split("."), t.split(".")
            i = 0
            while i < min(len(a), len(b)) and a[i] == b[i]:
                i += 1
            if i < len(a) and i < len(b):  # children of the common ancestor a[:i]
                edges.setdefault(".".join(a[: i + 1]), set()).add(".".join(b[: i + 1]))
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for k in edges.get(n, ()):
            if state.get(k) == 1:
                return [*stack[stack.index(k) :], k]
            if k not in state and (cycle := visit(k)):
                return cycle
        state[n] = 2
        stack.pop()
        return None

    for n in list(edges):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_no_import_circles():
    assert _siblings_cycle() is None, f"import circle: {' -> '.join(_siblings_cycle())}"


def test_the_checker_sees_a_circle_and_an_upward_import(monkeypatch):
    monkeypatch.setitem(GRAPH, "hetero.devices.base", GRAPH["hetero.devices.base"] | {"hetero.devices.ort"})
    assert _siblings_cycle() is not None
    monkeypatch.setitem(GRAPH, "hetero.release.metrics", GRAPH["hetero.release.metrics"] | {"hetero.export.validate"})
    with pytest.raises(AssertionError, match="upward imports"):
        test_dependencies_point_down()


def test_modules_and_functions_stay_readable():
    """The layout's promise: no module in hetero/ over 400 lines, no function anywhere over 80 (the parser tables
    of the CLI's `register` functions are data, and exempt)."""
    long_modules = [
        (str(p.relative_to(REPO)), n)
        for p in (REPO / "hetero").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    ]
    assert not long_modules, long_modules
    long_functions = [
        (m, node.name, node.end_lineno - node.lineno + 1)
        for m, path in _modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 80 and node.name != "register"
    ]
    assert not long_functions, long_functions
