"""Figures, registered by name like designs and workload elements (``desim.registry``).

A figure is a function ``(Context) -> Fig | Skip`` in a module of ``desim.report.figures``,
registered with ``@figure(name, group, rank)``: ``group`` is what an experiment's ``report:
figures:`` may name for all of a group's figures, ``rank`` orders figures in the report (lower
first; a group sits where its first figure does). Adding a figure touches its own module only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from desim.registry import Registry

FIGURES: Registry[Any] = Registry("figure", "desim.report.figures")


def figure(name: str, group: str, rank: int) -> Callable:
    def deco(fn):
        fn.group, fn.rank = group, rank
        return FIGURES.register(name)(fn)

    return deco


def ordered() -> list[tuple[str, Any]]:
    """Every figure as (name, builder), in report order."""
    return sorted(FIGURES.items(), key=lambda kv: (kv[1].rank, kv[0]))


def groups() -> dict[str, list[str]]:
    """Group name -> its figures, groups in the order of their first figure."""
    out: dict[str, list[str]] = {}
    for name, fn in ordered():
        out.setdefault(fn.group, []).append(name)
    return out
