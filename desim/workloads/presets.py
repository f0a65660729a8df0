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
    dirs: list[Path] = []
    for d in (Path(desim.__file__).resolve().parents[1] / "configs", Path.cwd() / "configs"):
        if d.is_dir() and d.resolve() not in [x.resolve() for x in dirs]:
            dirs.append(d)
    return dirs


def describe(path: Path) -> str:
    """The preset's first sentence, from its opening comment, without a leading ``name:``.

    The sentence may run over several comment lines; it ends at a full stop followed by a
    space or the line's end, at an empty comment line, or where the comment ends.
    """
    words: list[str] = []
    try:
        with path.open() as fh:
            for line in fh:
                line = line.strip()
                if not line.startswith("#"):
                    if words or line:
                        break
                    continue
                text = line.lstrip("#").strip()
                if not text:
                    if words:
                        break
                    continue
                if not words:
                    head, sep, rest = text.partition(": ")
                    text = rest.strip() if sep and head == path.stem else text
                words += text.split()
                if any(w.endswith(".") for w in words):
                    break
    except (OSError, UnicodeDecodeError):
        return ""
    for i, w in enumerate(words):
        if w.endswith(".") and not w.endswith(".."):
            return " ".join(words[: i + 1])
    return " ".join(words)


def presets() -> list[tuple[str, Path, str]]:
    """(name, path, description) of every preset, sorted by name; the first folder wins."""
    out: dict[str, tuple[str, Path, str]] = {}
    for d in preset_dirs():
        for p in sorted(d.glob("*.yaml")):
            out.setdefault(p.stem, (p.stem, p, describe(p)))
    return [out[k] for k in sorted(out)]
