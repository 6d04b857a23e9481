"""The import graph: no circle, the runtime imports nothing that builds, the service enters by one door.

Every import statement counts, wherever it stands: at module level, inside a function (a lazy import) and
under ``if TYPE_CHECKING:``, so a circle cannot hide behind laziness or annotations.
"""

from __future__ import annotations

import ast
import functools
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("converter", "service", "deploy", "benchmarks", "tsc_snn")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """What ``name`` imports: ``from P import N`` names P.N when that is a project module, else P."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found


LAZY_ROOTS = ("converter", "converter.snn")  # packages whose __init__ imports nothing at run time


def _edges(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports, with the packages whose ``__init__`` importing them runs
    (``a.b`` for ``a.b.c``) when ``name`` is outside them (inside, the package is already running); not
    the lazy roots, whose ``__init__`` imports nothing at run time (checked below)."""
    found = {m for m in _imports(name, path, known) if m in known}
    parents = {m.rsplit(".", i)[0] for m in found for i in range(1, m.count(".") + 1)}
    outside = {p for p in parents if not (name == p or name.startswith(p + "."))}
    return {m for m in found | outside if m in known and m not in LAZY_ROOTS and m != name}


@functools.cache
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _edges(name, path, known) for name, path in modules.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_circle_through_a_lazy_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_every_project_import_names_a_module_that_exists() -> None:
    modules = _modules()
    known = set(modules)
    missing = {
        (name, imported)
        for name, path in modules.items()
        for imported in _imports(name, path, known)
        if imported.split(".")[0] in PACKAGES and imported not in known
    }
    assert missing == set()


def test_no_import_circle() -> None:
    assert _circles(_graph()) == []


def test_the_runtime_imports_no_build_module() -> None:
    graph = _graph()
    runtime = [m for m in graph if m == "converter.snn" or m.startswith("converter.snn.")]
    assert len(runtime) > 10
    outside = {
        (m, dep)
        for m in runtime
        for dep in graph[m]
        if dep.startswith("converter") and not dep.startswith("converter.snn")
    }
    assert outside == set()


@pytest.mark.parametrize("package", ["service", "deploy"])
def test_the_service_reaches_the_converter_only_through_the_runtime_package(package: str) -> None:
    modules = _modules()
    doors = {
        imported
        for name, path in modules.items()
        if name.startswith(package)
        for imported in _imports(name, path, set(modules))
        if imported.split(".")[0] == "converter"
    }
    assert doors <= {"converter.snn"}
    if package == "service":
        assert doors == {"converter.snn"}


def test_no_module_is_longer_than_350_lines() -> None:
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > 350}
    assert long == {}


@pytest.mark.parametrize("package", ["converter", "converter.snn"])
def test_no_public_name_is_shadowed_by_a_submodule(package: str) -> None:
    """A lazily exported name that is also a submodule's would become the module once that is imported."""
    exported = set(importlib.import_module(package).__all__)
    submodules = {p.stem for p in (ROOT / package.replace(".", "/")).iterdir()}
    assert exported & submodules == set()


def test_function_level_and_type_checking_imports_are_seen(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from converter.snn.model import Network\n"
        "def run():\n    from converter.snn import engines\n    import service.settings\n"
    )
    known = set(_modules())
    expected = {"converter.snn.model", "converter.snn.engines", "service.settings"}
    assert expected <= _imports("probe", source, known)
    assert _edges("probe", source, known) == expected | {"service"}  # service/__init__ runs too


@pytest.mark.parametrize("root", LAZY_ROOTS)
def test_the_lazy_roots_import_nothing_at_run_time_and_export_what_is_imported(root: str) -> None:
    """Their __init__ runs only ``lazy_exports``; every name the project imports from them is exported."""
    path = _modules()[root]
    tree = ast.parse(path.read_text())
    runtime = [
        node
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node.module not in ("__future__", "typing")
    ]
    assert [node.module for node in runtime] == ["converter.snn.system"]
    exported = set(importlib.import_module(root).__all__)
    asked = {
        alias.name
        for p in _modules().values()
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module == root
        for alias in node.names
    }
    submodules = {p.stem for p in (ROOT / root.replace(".", "/")).iterdir()}
    assert asked - submodules <= exported
