"""The import rules of docs/ARCHITECTURE.md, checked on the source: what each part may never
import (every import, including the ones inside functions), the one-way layer order, no import
inside a function below the commands, and no import cycle between modules."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest

PKG = Path(__file__).resolve().parents[1] / "desim"

# package or module -> prefixes it must never import
RULES = {
    "desim.records": ["desim.", "simpy", "numpy", "pandas", "pydantic"],
    "desim.rundir": ["desim.model", "desim.engine", "desim.config", "simpy", "pandas", "numpy"],
    "desim.stats": ["simpy", "desim.model", "desim.engine", "desim.report", "desim.sweep"],
    "desim.report": [
        "simpy",
        "desim.model",
        "desim.engine",
        "desim.results",
        "desim.sweep",
        "desim.allocators",
        "desim.workloads",
    ],
    "desim.model": [
        "pandas",
        "seaborn",
        "matplotlib",
        "desim.report",
        "desim.sweep",
        "desim.cli",
        "desim.engine",
        "desim.results",
        "desim.probe",
        "desim.trace",
    ],
    "desim.trace": [
        "pandas",
        "seaborn",
        "desim.config",
        "desim.engine",
        "desim.results",
        "desim.sweep",
        "desim.report",
        "desim.cli",
    ],
    "desim.allocators": [
        "pandas",
        "seaborn",
        "desim.engine",
        "desim.results",
        "desim.sweep",
        "desim.report",
        "desim.cli",
    ],
    "desim.workloads": [
        "pandas",
        "seaborn",
        "desim.engine",
        "desim.results",
        "desim.sweep",
        "desim.report",
        "desim.cli",
    ],
    "desim.hosttrace": [
        "simpy",
        "pandas",
        "desim.model",
        "desim.allocators",
        "desim.workloads",
        "desim.engine",
        "desim.sweep",
        "desim.report",
        "desim.cli",
    ],
    "desim.sweep": ["desim.report", "desim.cli"],
    "desim.explore": [
        "pandas",
        "seaborn",
        "desim.report",
        "desim.sweep",
        "desim.cli",
        "desim.engine",
        "desim.results",
    ],
    "desim.engine": ["pandas", "seaborn", "desim.report", "desim.sweep", "desim.cli"],
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append(node.module)
    return out


def test_every_rule_names_a_real_part_of_desim():
    names = {module_name(p) for p in PKG.rglob("*.py")}
    for part in RULES:
        assert any(n == part or n.startswith(part + ".") for n in names), part


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=module_name)
def test_imports_follow_the_architecture(path):
    mod = module_name(path)
    banned = [
        b for part, bans in RULES.items() if mod == part or mod.startswith(part + ".") for b in bans
    ]
    bad = [
        i
        for i in imports_of(path)
        if any(
            i == b.rstrip(".") or i.startswith(b if b.endswith(".") else b + ".") or i == b
            for b in banned
        )
        and not (mod.startswith("desim.records") and i == "desim.records")
    ]
    assert not bad, f"{mod} imports {bad}"


# -- one-way layers ---------------------------------------------------------------------------
# Each part of desim may import (at run time) only parts in a layer below its own, or itself:
# units/rng/registry <- model <- {allocators, workloads} <- config <- engine <- {results, sweep,
# cli}. Imports under ``if TYPE_CHECKING:`` never run and are exempt (annotations may name a
# type from above).
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "desim",
        "desim.records",
        "desim.units",
        "desim.rng",
        "desim.registry",
        "desim.inputs",
        "desim.progress",
    ),
    ("desim.fields", "desim.distributions", "desim.stats", "desim.rundir", "desim.hosttrace"),
    ("desim.model",),
    ("desim.allocators", "desim.workloads", "desim.trace"),
    ("desim.config",),
    ("desim.engine",),
    ("desim.results",),
    ("desim.sweep", "desim.report", "desim.probe", "desim.explore"),
    ("desim.bench",),
    ("desim.cli",),
)
# Below this layer an import inside a function is refused outright: there it could only be
# dodging a cycle. Above it (the commands and their helpers) imports are deferred to keep
# ``desim --help`` and a pool worker's start-up fast, and still follow the layer order.
LAZY_FROM = next(i for i, layer in enumerate(LAYERS) if "desim.results" in layer)

MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def part_of(mod: str) -> tuple[str, int]:
    """The part of desim ``mod`` belongs to (longest prefix in LAYERS) and its layer."""
    best = ("", -1)
    for i, layer in enumerate(LAYERS):
        for part in layer:
            if (mod == part or mod.startswith(part + ".") and part != "desim") and len(part) > len(
                best[0]
            ):
                best = (part, i)
    return best


class Imp(NamedTuple):
    target: str  # the desim module imported
    line: int
    in_function: bool
    type_checking: bool


def desim_imports(mod: str, path: Path) -> list[Imp]:
    """Every import of a desim module in ``path``, where it sits and what it names (``from
    desim.x import y`` names ``desim.x.y`` when that is a module)."""
    tree = ast.parse(path.read_text())
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: list[Imp] = []

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = node.module or ""
        if node.level:
            up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(up + ([base] if base else []))
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for t in targets(child):
                    if t == "desim" or t.startswith("desim."):
                        out.append(Imp(t, child.lineno, in_function, type_checking))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, True, type_checking)
            elif isinstance(child, ast.If) and ast.unparse(child.test) in (
                "TYPE_CHECKING",
                "typing.TYPE_CHECKING",
            ):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), in_function, True)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), in_function, type_checking)
            else:
                visit(child, in_function, type_checking)

    visit(tree, False, False)
    return out


def test_every_module_has_a_layer():
    assert [m for m in MODULES if part_of(m)[1] < 0] == []


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_imports_run_down_the_layers(mod):
    part, layer = part_of(mod)
    bad = []
    for imp in desim_imports(mod, MODULES[mod]):
        if imp.type_checking:
            continue
        tpart, tlayer = part_of(imp.target)
        if tpart != part and tlayer >= layer:
            bad.append(f"line {imp.line}: {imp.target} ({tpart}, layer {tlayer} >= {layer})")
    assert not bad, f"{mod} ({part}) imports up or across: {bad}"


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if part_of(m)[1] < LAZY_FROM))
def test_no_import_inside_a_function_below_the_commands(mod):
    bad = [
        f"line {i.line}: {i.target}"
        for i in desim_imports(mod, MODULES[mod])
        if i.in_function and not i.type_checking
    ]
    assert not bad, f"{mod} imports inside a function (a cycle dodged?): {bad}"


def test_module_imports_have_no_cycle():
    """Within a part too, the modules' run-time imports form no cycle (type-only ones aside)."""
    graph = {
        m: {i.target for i in desim_imports(m, p) if not i.type_checking and i.target != m}
        for m, p in MODULES.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n) :] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_checks_see_what_they_must(tmp_path):
    """The scanner itself: a function-level import, a type-only one, a relative one."""
    src = (
        "from typing import TYPE_CHECKING\n"
        "from desim import units\n"
        "if TYPE_CHECKING:\n"
        "    from desim.config import Config\n"
        "def f():\n"
        "    from desim.engine import simulate\n"
        "from . import rng\n"
    )
    p = tmp_path / "probe.py"
    p.write_text(src)
    got = desim_imports("desim.model.probe", p)
    assert got == [
        Imp("desim.units", 2, False, False),
        Imp("desim.config", 4, False, True),
        Imp("desim.engine", 6, True, False),
        Imp("desim.model", 7, False, False),
    ]
    assert part_of("desim.model.cpu") == ("desim.model", 2)
    assert part_of("desim") == ("desim", 0)
    assert part_of("desim.cli")[1] == len(LAYERS) - 1


# -- SimPy contained --------------------------------------------------------------------------
def _simpy_private_names() -> set[str]:
    """Every private attribute SimPy's environment and events keep (``self._x = ...``)."""
    import simpy.core
    import simpy.events

    names = set()
    for mod in (simpy.core, simpy.events):
        for node in ast.walk(ast.parse(Path(mod.__file__).read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                names.add(node.attr)
    return names


SIMPY_PRIVATE = _simpy_private_names()


def test_the_simpy_private_names_are_found():
    assert {"_now", "_queue", "_eid", "_ok", "_value"} <= SIMPY_PRIVATE


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if m != "desim.model.simcore"))
def test_only_simcore_touches_simpy_internals(mod):
    """``desim.model.simcore`` is the one module that reads or sets SimPy's private fields;
    the rest uses its helpers or the public API (``env.now``, ``env.peek()``, ``callbacks``).
    desim's own attributes must not take those names either, so the rule stays checkable."""
    tree = ast.parse(MODULES[mod].read_text())
    bad = sorted(
        f"line {n.lineno}: .{n.attr}"
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and n.attr in SIMPY_PRIVATE
    ) + sorted(
        f"line {n.lineno}: {n.func.id}(..., {n.args[1].value!r})"
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id in ("getattr", "setattr", "hasattr")
        and len(n.args) >= 2
        and isinstance(n.args[1], ast.Constant)
        and n.args[1].value in SIMPY_PRIVATE
    )
    assert not bad, f"{mod} uses SimPy's internals: {bad}"
