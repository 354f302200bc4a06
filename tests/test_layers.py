"""The package's imports follow the layer table in docs/design.md.

The table ("Module layers" in docs/design.md) is the source of truth: every module of
``src/manycore`` must be listed there, and a module may import only from its own layer or
the layers below. The import graph has no cycle, counting imports made inside functions
(a cycle that only works because one side imports late is still a cycle); imports under
``if TYPE_CHECKING:`` are left out, as they never run.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "manycore"
DESIGN = ROOT / "docs" / "design.md"

_ROW = re.compile(r"^\|\s*(\d+)\s*\|(.*?)\|")
_NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_.]*)`")


def layer_table() -> dict[str, int]:
    """Module name (relative to ``manycore``, a package standing for all it holds) -> layer."""
    text = DESIGN.read_text(encoding="utf-8")
    section = text.split("## Module layers", 1)[1].split("\n## ", 1)[0]
    table: dict[str, int] = {}
    for line in section.splitlines():
        row = _ROW.match(line)
        if row is None:
            continue
        for name in _NAME.findall(row.group(2)):
            assert name not in table, f"{name} is listed twice in the layer table"
            table[name] = int(row.group(1))
    assert table, "docs/design.md has no layer table under '## Module layers'"
    return table


def modules() -> dict[str, Path]:
    """Every module of the package, named relative to ``manycore`` (``_dask.scheduler``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts) or "__init__"] = path
    return found


def layer_of(name: str, table: dict[str, int]) -> int | None:
    """The layer of ``name``: its own row, else the row of the package that holds it."""
    parts = name.split(".")
    while parts:
        layer = table.get(".".join(parts))
        if layer is not None:
            return layer
        parts.pop()
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports when it runs (at any depth)."""
    is_package = path.name == "__init__.py"
    here = [] if name == "__init__" else name.split(".")
    package = here if is_package else here[:-1]
    found: set[str] = set()

    def resolve(target: str) -> None:
        # The module itself if it exists, else the nearest package or module holding it.
        parts = target.split(".")
        while parts:
            candidate = ".".join(parts)
            if candidate in known:
                found.add(candidate)
                return
            parts.pop()
        found.add("__init__")

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == "manycore":
                        found.add("__init__")
                    elif alias.name.startswith("manycore."):
                        resolve(alias.name[len("manycore.") :])
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - (child.level - 1)]
                    module = base + (child.module.split(".") if child.module else [])
                elif child.module == "manycore" or (child.module or "").startswith("manycore."):
                    module = child.module.split(".")[1:]  # type: ignore[union-attr]
                else:
                    continue
                for alias in child.names:
                    # ``from . import _x`` names a module; ``from ._x import y`` a name in it.
                    whole = ".".join([*module, alias.name])
                    if whole in known:
                        found.add(whole)
                    elif module:
                        resolve(".".join(module))
                    else:
                        found.add("__init__")
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def test_every_module_is_in_the_layer_table() -> None:
    table = layer_table()
    missing = [name for name in modules() if layer_of(name, table) is None]
    assert not missing, (
        f"modules missing from the layer table in docs/design.md: {missing}; add each to the "
        "row of its layer"
    )
    stale = [name for name in table if name not in modules()]
    assert not stale, f"the layer table in docs/design.md names modules that do not exist: {stale}"


def upward_imports(graph: dict[str, set[str]], table: dict[str, int]) -> list[str]:
    """Each import of a module from a layer above its own, described."""
    upward = []
    for name, targets in sorted(graph.items()):
        mine = layer_of(name, table)
        for target in sorted(targets):
            theirs = layer_of(target, table)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{name} (layer {mine}) imports {target} (layer {theirs})")
    return upward


def cycles_in(graph: dict[str, set[str]]) -> list[str]:
    """The cycles a depth-first walk of ``graph`` meets, each as ``a -> b -> a``."""
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                walk(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return cycles


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = upward_imports(import_graph(), layer_table())
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_import_graph_has_no_cycle() -> None:
    cycles = cycles_in(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from . import _low\n", {"_low"}),
        ("from ._low import thing\n", {"_low"}),
        ("def f():\n    from ._high import thing\n", {"_high"}),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._high import T\n", set()),
        ("import manycore\n", {"__init__"}),
        ("from manycore._pkg import part\n", {"_pkg.part"}),
        ("from ._pkg.part import thing\n", {"_pkg.part"}),
    ],
)
def test_imports_are_read_as_the_interpreter_runs_them(
    tmp_path: Path, source: str, expected: set[str]
) -> None:
    """The reader of imports finds what small sources import (so the checks above cannot
    pass by reading nothing)."""
    path = tmp_path / "mod.py"
    path.write_text(source, encoding="utf-8")
    known = {"mod", "_low", "_high", "_pkg", "_pkg.part", "__init__"}
    assert imports_of("mod", path, known) == expected


def test_the_checks_catch_an_upward_import_and_a_cycle() -> None:
    table = {"_low": 0, "_high": 1, "_pkg": 1}
    assert layer_of("_pkg.part", table) == 1
    assert layer_of("_nowhere", table) is None
    graph = {"_low": {"_high"}, "_high": {"_pkg.part"}, "_pkg.part": {"_high"}}
    assert upward_imports(graph, table) == ["_low (layer 0) imports _high (layer 1)"]
    assert cycles_in(graph) == ["_high -> _pkg.part -> _high"]
    assert cycles_in({"_low": set(), "_high": {"_low"}}) == []
