"""The import rules of docs/ARCHITECTURE.md, checked on the source (every import, including the
ones inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

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
