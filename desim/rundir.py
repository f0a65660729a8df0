"""Run, sweep and report directories: the one place that writes, replaces, checks and reads them.

``desim run``, the sweep's workers and ``desim report`` all go through this module, so a
directory's life follows one set of rules:

* **What a directory is** (``classify``): a *run* holds ``DONE`` (finished) or ``FAILED`` with
  its ``manifest.json``; a *sweep* holds ``SWEEP`` (or, written by older desim, an
  ``experiment.yaml`` beside ``runs/``); a *report* holds ``REPORT``, a *probe* ``PROBE``, an
  *explore* result ``EXPLORE``. Anything else is the
  user's, and desim never deletes or writes into it.
* **What may be replaced** (``check_target``): a missing or empty directory, or desim's own
  directory of the same kind and source; another source needs ``--force``; never ``.``, an
  ancestor of the working directory, the directory holding the config, a symbolic link, or a
  directory desim did not write.
* **How** (``Staging``): the new directory is written in a hidden sibling
  (``.<name>.tmp-<pid>``), created and probed for writing *before* the simulation runs, then
  swapped in at once (Linux ``renameat2(RENAME_EXCHANGE)``, else two renames through a hidden
  ``.<name>.old-<pid>``); the old one is deleted only after. An interrupted write leaves only
  hidden directories, which ``clean_stale`` removes once their writer is dead.
* **What counts as finished** (``check_complete``): ``DONE`` and every file a run writes,
  present and readable. Resume and the report both use it; neither trusts a marker alone.

Standard library only (pyarrow is imported inside ``check_complete``): the report reads results
through this module without importing the model. File names and markers are ``desim.records``'.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from desim.records import (
    CONFIG,
    DONE,
    EXPLORE,
    FAILED,
    MANIFEST,
    OPTIONAL_PARQUETS,
    PARQUETS,
    PROBE,
    REPORT,
    SUMMARY,
    SWEEP,
    TRACEBACK,
    VIOLATIONS,
    temp_name,
)

JSONS = (MANIFEST, SUMMARY, VIOLATIONS)
# Every file a finished run holds; anything else in a run directory was put there by someone else.
RUN_FILES = frozenset(
    {
        CONFIG,
        *JSONS,
        DONE,
        *(f"{p}.parquet" for p in PARQUETS),
        *(f"{p}.parquet" for p in OPTIONAL_PARQUETS),
    }
)
FAILED_FILES = frozenset({CONFIG, MANIFEST, TRACEBACK, FAILED})


class RunDirError(Exception):
    """A directory cannot be used as asked; the message is one line naming it."""


# -- what a directory is --------------------------------------------------------------------------


def _is_temp(name: str) -> bool:
    return name.startswith(".") and (".tmp-" in name or ".old-" in name)


def classify(path: str | Path) -> str:
    """``missing``, ``empty``, ``run``, ``failed``, ``sweep``, ``report``, ``probe``,
    ``explore``, ``file`` or ``other``."""
    p = Path(path)
    if p.is_symlink():
        return "other"
    if not p.exists():
        return "missing"
    if not p.is_dir():
        return "file"
    try:
        names = {e.name for e in os.scandir(p)}
    except OSError:
        return "other"
    if not names:
        return "empty"
    if DONE in names and MANIFEST in names:
        return "run"
    if FAILED in names and MANIFEST in names:
        return "failed"
    if SWEEP in names or ("experiment.yaml" in names and "runs" in names):
        return "sweep"
    if REPORT in names or {"report.html", "headline.csv"} <= names:  # older desim: no marker
        return "report"
    if PROBE in names:
        return "probe"
    if EXPLORE in names:
        return "explore"
    return "other"


def read_json(path: Path):
    """A JSON file's content, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def sweep_name(path: Path) -> str | None:
    """The experiment a sweep directory belongs to (``None`` if it does not say)."""
    meta = read_json(path / SWEEP)
    if isinstance(meta, dict) and isinstance(meta.get("experiment"), str):
        return meta["experiment"]
    runs = path / "runs"
    if runs.is_dir():  # written before SWEEP existed: the runs' manifests name it
        for d in sorted(runs.iterdir()):
            man = read_json(d / MANIFEST)
            if isinstance(man, dict) and man.get("experiment"):
                return str(man["experiment"])
    return None


def run_source(path: Path) -> str | None:
    """The config a run directory was made from, as recorded in its manifest."""
    man = read_json(path / MANIFEST)
    return man.get("source") if isinstance(man, dict) else None


# -- what may be replaced ---------------------------------------------------------------------------


def _protected(target: Path, config: Path | None) -> str | None:
    """Why ``target`` may never be replaced, or None."""
    t = target.resolve()
    cwd = Path.cwd().resolve()
    if t == Path(t.anchor):
        return "is the file system root"
    if t == cwd:
        return "is the working directory"
    if t in cwd.parents:
        return "is an ancestor of the working directory"
    if config is not None:
        c = config.resolve()
        if t == c.parent or t in c.parents:
            return f"holds the config {config}"
    return None


@dataclass(frozen=True)
class Target:
    """A checked output directory: ``exists`` says whether something will be replaced."""

    path: Path
    kind: str
    exists: bool
    foreign: tuple[str, ...] = ()  # entries a run directory holds that desim did not write
    derived: tuple[str, ...] = ()  # reports desim wrote of the old run: replaced with it


def _extra_entries(run_dir: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Entries of a run directory besides the run's files: (foreign, desim reports of it)."""
    foreign, derived = [], []
    for e in sorted(os.scandir(run_dir), key=lambda e: e.name):
        if e.name in RUN_FILES or e.name in FAILED_FILES:
            continue
        (derived if classify(e.path) == "report" else foreign).append(e.name)
    return tuple(foreign), tuple(derived)


def check_target(
    path: str | Path,
    want: str,
    *,
    source: str | None = None,
    config: str | Path | None = None,
    force: bool = False,
    option: str = "--out",
) -> Target:
    """Check that ``path`` may receive a new ``want`` (``run``, ``sweep``, ``report``, ``probe``,
    ``explore``).

    ``source`` is what the new content comes from (a config path for a run, the experiment name
    for a sweep); replacing desim's own directory of another source needs ``force``.
    Raises ``RunDirError`` with one line otherwise.
    """
    p = Path(path)
    label = f"{option} {path}"
    if p.is_symlink():
        raise RunDirError(f"{label}: is a symbolic link; give the directory it points to")
    why = _protected(p, Path(config) if config is not None else None)
    if why:
        raise RunDirError(f"{label}: {why}; desim will not write its results there")
    kind = classify(p)
    if kind == "file":
        raise RunDirError(f"{label}: is a file, not a directory")
    if kind in ("missing", "empty"):
        return Target(p, kind, False)
    hint = "; choose another " + option
    if want == "run":
        if kind not in ("run", "failed"):
            raise RunDirError(
                f"{label}: {_describe(kind)}; desim run only replaces a run "
                f"directory it wrote{hint}"
            )
        foreign, derived = _extra_entries(p)
        old = run_source(p)
        if not force:
            if foreign:
                raise RunDirError(
                    f"{label}: the run there also holds {', '.join(foreign)}, "
                    f"which desim run did not write{hint} or --force to replace "
                    "it all"
                )
            if old is not None and source is not None and old != source:
                raise RunDirError(
                    f"{label}: holds a run of {old}, not of {source}{hint} or --force to replace it"
                )
        return Target(p, kind, True, foreign, derived)
    if want == "sweep":
        if kind != "sweep":
            raise RunDirError(
                f"{label}: {_describe(kind)}; desim sweep only resumes or replaces "
                f"a sweep directory it wrote{hint}"
            )
        old = sweep_name(p)
        if old is not None and source is not None and old != source and not force:
            raise RunDirError(
                f"{label}: holds the sweep of experiment {old!r}, not {source!r}"
                f"{hint} or --force to replace it"
            )
        return Target(p, kind, True)
    if want in ("report", "probe", "explore"):
        if kind != want:
            what = "an explore result" if want == "explore" else f"a {want}"
            raise RunDirError(
                f"{label}: {_describe(kind)}; desim {want} only replaces {what} it wrote{hint}"
            )
        return Target(p, kind, True)
    raise ValueError(want)


def _describe(kind: str) -> str:
    return {
        "run": "holds a desim run",
        "failed": "holds a failed desim run",
        "sweep": "holds a desim sweep",
        "report": "holds a desim report",
        "probe": "holds a desim probe",
        "explore": "holds a desim explore result",
        "other": "is not empty and was not written by desim",
    }[kind]


# -- writing: stage beside, swap in at once ------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.renameat2  # noqa: B018 - probe for the symbol
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    r = _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if r == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(directory: str | Path, name: str | None = None, *, all_pids: bool = False) -> int:
    """Remove hidden temporary directories (of ``name`` only, if given) whose writer is dead.

    ``all_pids`` removes them whoever wrote them: for a sweep holding its directory's lock, no
    other writer can be alive.
    """
    d = Path(directory)
    n = 0
    if not d.is_dir():
        return 0
    for p in d.iterdir():
        if not _is_temp(p.name):
            continue
        stem, _, pid = p.name[1:].rpartition("-")
        stem = stem[:-4]  # ".tmp" / ".old"
        if name is not None and stem != name:
            continue
        if not all_pids and pid.isdigit() and _pid_alive(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        n += 1
    return n


@dataclass
class Staging:
    """A new directory being written beside its target; ``commit`` swaps it in.

    Use as a context manager: leaving the block without ``commit`` (an exception, Ctrl-C)
    removes the staging directory, and the target is untouched.
    """

    target: Path
    tmp: Path
    committed: bool = False
    replaced: bool = False

    @classmethod
    def begin(cls, target: str | Path) -> Staging:
        """Create the hidden sibling and probe that it can be written; one-line errors."""
        t = Path(target)
        parent = t.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            clean_stale(parent, t.name)
            tmp = parent / temp_name(t.name, os.getpid())
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        except OSError as exc:
            raise RunDirError(f"{target}: cannot create it ({exc.strerror or exc})") from None
        st = cls(t, tmp)
        try:
            probe = tmp / ".probe"
            with probe.open("wb") as fh:
                fh.write(b"\0" * 65536)  # a full disk says so now, not after the run
                fh.flush()
                os.fsync(fh.fileno())
            probe.unlink()
        except OSError as exc:
            st.abort()
            raise RunDirError(f"{target}: cannot write there ({exc.strerror or exc})") from None
        return st

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc) -> None:
        if not self.committed:
            self.abort()

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def commit(self) -> Path:
        """Swap the staged directory in; the previous one, if any, is removed after."""
        t, tmp = self.target, self.tmp
        try:
            if t.exists() or t.is_symlink():
                if _exchange(tmp, t):
                    old = tmp  # after the exchange, tmp holds the old directory
                else:
                    old = t.parent / temp_name(t.name, os.getpid(), "old")
                    os.replace(t, old)
                    os.replace(tmp, t)
                self.replaced = True
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, t)
        except OSError as exc:
            self.abort()
            raise RunDirError(
                f"{t}: cannot put the results in place ({exc.strerror or exc})"
            ) from None
        self.committed = True
        return t


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def write_failed(tmp: Path, config_yaml: str, manifest: dict, error: str) -> None:
    """Fill a staging directory as a failed run: config, manifest, traceback, ``FAILED``."""
    (tmp / CONFIG).write_text(config_yaml)
    write_json(tmp / MANIFEST, {**manifest, "status": "failed", "error": last_line(error)})
    (tmp / TRACEBACK).write_text(error)
    (tmp / FAILED).write_text("failed\n")


def last_line(error: str) -> str:
    lines = [ln for ln in (error or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# -- reading: complete or not, and why ------------------------------------------------------------------


def check_complete(run_dir: str | Path) -> str | None:
    """Why ``run_dir`` is not a complete, readable finished run, or ``None`` if it is."""
    d = Path(run_dir)
    if not (d / DONE).is_file():
        return f"no {DONE} marker"
    if not (d / CONFIG).is_file():
        return f"{CONFIG} missing"
    for name in JSONS:
        data = read_json(d / name)
        if data is None:
            return f"{name} missing or unreadable"
        if name != VIOLATIONS and not isinstance(data, dict):
            return f"{name} is not a mapping"
        if name == VIOLATIONS and not isinstance(data, list):
            return f"{name} is not a list"
    import pyarrow.parquet as pq

    for stem in PARQUETS + OPTIONAL_PARQUETS:
        p = d / f"{stem}.parquet"
        if stem in OPTIONAL_PARQUETS and not p.exists():
            continue
        try:
            pq.read_table(p)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            return f"{p.name} unreadable ({type(exc).__name__})"
    return None


def manifest_of(run_dir: str | Path) -> dict:
    man = read_json(Path(run_dir) / MANIFEST)
    return man if isinstance(man, dict) else {}
