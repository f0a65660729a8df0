"""Preset experiments: the top-level ``configs/*.yaml`` files, each described by its first comment.

``desim list`` shows them. Presets are looked up in the ``configs/`` folder of the source tree
desim runs from, and in ``./configs`` when that is a different folder (a user's own presets).
A preset's first line reads ``# name: what it represents``; the description is what follows
the name.
"""

from __future__ import annotations

from pathlib import Path

import desim


def preset_dirs() -> list[Path]:
    dirs = []
    for d in (Path(desim.__file__).resolve().parents[1] / "configs", Path.cwd() / "configs"):
        if d.is_dir() and d.resolve() not in [x.resolve() for x in dirs]:
            dirs.append(d)
    return dirs


def describe(path: Path) -> str:
    """The preset's first comment line, without the ``#`` and a leading ``name:``."""
    try:
        with path.open() as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                if not line.startswith("#"):
                    return ""
                text = line.lstrip("#").strip()
                head, sep, rest = text.partition(": ")
                return rest.strip() if sep and head == path.stem else text
    except OSError:
        return ""
    return ""


def presets() -> list[tuple[str, Path, str]]:
    """(name, path, description) of every preset, sorted by name; the first folder wins."""
    out: dict[str, tuple[str, Path, str]] = {}
    for d in preset_dirs():
        for p in sorted(d.glob("*.yaml")):
            out.setdefault(p.stem, (p.stem, p, describe(p)))
    return [out[k] for k in sorted(out)]
