"""Finding and reading results: a single run directory or a sweep's, never re-running anything.

A *run directory* holds ``DONE`` and the files ``desim.results`` writes; one that is damaged
(``desim.rundir.check_complete``) is listed in ``Results.unreadable`` and left out, never read
as zeros or as "off". A *sweep directory*
(``desim sweep``) holds ``runs/<run_id>/`` run directories, ``runs.parquet``, ``points.parquet``
and a copy of its ``experiment.yaml``. Anything else is searched for run directories (any depth),
so a hand-made collection of ``desim run --out`` directories is a sweep too.

The run table is rebuilt here from each run's ``summary.json``, ``config.yaml`` and
``manifest.json`` rather than read from ``runs.parquet``: the per-run files are needed anyway for
time series and histograms, and this works the same whether or not a sweep wrote its tables.
The swept parameters are the keys a sweep's manifests list under ``params``, else the config
keys whose values differ between runs. The design is always ``allocator.name``.

Pure pandas: nothing here imports simpy or the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from desim.rundir import (
    CONFIG,
    DONE,
    FAILED,
    MANIFEST,
    SUMMARY,
    VIOLATIONS,
    check_complete,
    read_json,
)

DESIGN = "allocator.name"
IGNORED_KEYS = ("seed",)  # replications differ in seed; that is not a sweep parameter


class ResultsError(ValueError):
    """The directory holds no readable results."""


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested config mapping → ``{"machine.cpus": 8, ...}`` (lists and scalars are leaves)."""
    out: dict = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _hashable(v):
    return json.dumps(v, sort_keys=True, default=str) if isinstance(v, dict | list) else v


def find_run_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` marked finished (``DONE``), complete or not."""
    if (root / DONE).is_file():
        return [root]
    runs = root / "runs"
    base = runs if runs.is_dir() else root
    return sorted(
        p.parent
        for p in base.rglob(DONE)
        if not any(part.startswith(".") for part in p.relative_to(base).parts)
    )


@dataclass
class Results:
    """Everything a report reads, loaded once; per-run tables are read on first use."""

    root: Path
    is_sweep: bool
    runs: pd.DataFrame  # one row per complete run (see ``load``)
    params: list[str]  # swept keys, design included when it varies
    configs: dict[str, dict]  # run_id -> resolved config (nested)
    manifests: dict[str, dict]
    dirs: dict[str, Path]
    violations: dict[str, list]
    experiment: dict | None = None  # the sweep's experiment.yaml, if any
    experiment_text: str | None = None
    failed: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (run, why), left out
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def designs(self) -> list[str]:
        return list(dict.fromkeys(self.runs[DESIGN]))

    def table(self, name: str) -> pd.DataFrame:
        """``name``.parquet of every run, concatenated, with ``run_id`` and the run's params."""
        if name not in self._cache:
            frames = []
            for run_id, d in self.dirs.items():
                p = d / f"{name}.parquet"
                if p.exists():
                    df = pd.read_parquet(p)
                    df.insert(0, "run_id", run_id)
                    frames.append(df)
            if frames:
                df = pd.concat(frames, ignore_index=True)
                keys = ["run_id", *dict.fromkeys([DESIGN, *self.params])]
                df = df.merge(self.runs[keys], on="run_id", how="left")
            else:
                df = pd.DataFrame()
            self._cache[name] = df
        return self._cache[name]


def _read_config(p: Path) -> dict | None:
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def load(root: str | Path) -> Results:
    root = Path(root)
    if not root.is_dir():
        raise ResultsError(f"{root}: no such directory")
    dirs = find_run_dirs(root)
    is_sweep = not (root / DONE).is_file()
    failed = []
    if is_sweep:
        base = root / "runs" if (root / "runs").is_dir() else root
        failed = sorted(p.parent.name for p in base.rglob(FAILED))
    rows, configs, manifests, ids, violations = [], {}, {}, {}, {}
    unreadable: list[tuple[str, str]] = []
    swept: dict[str, None] = {}
    for d in dirs:
        run_id = d.name if d != root else root.name
        if run_id in ids:  # a hand-made collection may repeat leaf names
            run_id = str(d.relative_to(root))
        # A run the report cannot read entirely is named and left out, never read as zeros.
        why = check_complete(d)
        cfg = _read_config(d / CONFIG) if why is None else None
        if why is None and cfg is None:
            why = f"{CONFIG} unreadable"
        if why is not None:
            unreadable.append((run_id, why))
            continue
        assert cfg is not None  # read, since why is None
        man = read_json(d / MANIFEST)
        summ = read_json(d / SUMMARY)
        configs[run_id], manifests[run_id], ids[run_id] = cfg, man, d
        violations[run_id] = read_json(d / VIOLATIONS)
        for k in man.get("params") or {}:
            swept[k] = None
        flat = {k: _hashable(v) for k, v in flatten(cfg).items()}
        for k, v in (man.get("params") or {}).items():
            if isinstance(v, dict) or k not in flat:
                # a whole section swept (madv_collapse: {...}, placement: migrating): one
                # column, as the point wrote it
                flat[k] = _compact(v)
        rep = man.get("replication")
        row = {
            "run_id": run_id,
            "replication": rep,
            "seed": man.get("seed", cfg.get("seed")),
            "status": man.get("status", "ok"),
            **flat,
            **{k: (float("nan") if v is None else v) for k, v in summ.items()},
        }
        rows.append(row)
    if not rows:
        bits = [
            f"{len(failed)} failed runs" if failed else "",
            f"{len(unreadable)} unreadable ({unreadable[0][0]}: {unreadable[0][1]})"
            if unreadable
            else "",
        ]
        extra = "; ".join(b for b in bits if b)
        raise ResultsError(
            f"{root}: no complete run directory (none holds {DONE} and every "
            f"file a run writes)" + (f"; {extra}" if extra else "")
        )
    df = pd.DataFrame(rows)
    if DESIGN not in df:
        df[DESIGN] = "generic"
    if not swept and len(df) > 1:
        cfg_keys = [k for k in flatten(next(iter(configs.values()))) if k not in IGNORED_KEYS]
        swept = {k: None for k in cfg_keys if k in df and df[k].nunique(dropna=False) > 1}
    params = [k for k in swept if k in df]
    _label_variants(df, params)
    exp_text = None
    exp = None
    ep = root / "experiment.yaml"
    if is_sweep and ep.is_file():
        try:
            exp_text = ep.read_text()
            exp = yaml.safe_load(exp_text) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ResultsError(f"{ep}: cannot read it ({' '.join(str(exc).split())})") from None
        if not isinstance(exp, dict):
            raise ResultsError(f"{ep}: not an experiment (the top level is not a mapping)")
    keep = ["run_id", "replication", "seed", "status", DESIGN, *[p for p in params if p != DESIGN]]
    metric_cols = [c for c in df.columns if c not in keep and c not in flatten_keys(configs)]
    runs = df[keep + metric_cols].copy()
    return Results(
        root=root,
        is_sweep=is_sweep,
        runs=runs,
        params=params,
        configs=configs,
        manifests=manifests,
        dirs=ids,
        violations=violations,
        experiment=exp,
        experiment_text=exp_text,
        failed=failed,
        unreadable=unreadable,
    )


def _compact(v: object) -> str:
    """A swept section's value as a short label: ``{rate: 1000/s}`` -> ``rate=1000/s``."""
    if isinstance(v, dict):
        return ", ".join(
            f"{k}=({_compact(x)})" if isinstance(x, dict) else f"{k}={x}" for k, x in v.items()
        )
    return str(v)


def _label_variants(df: pd.DataFrame, params: list[str]) -> None:
    """Tell apart variants of one design swept over its own parameters.

    ``s390-hh`` with three ``mm_lifetime`` choices is three designs to a reader: their label
    gains the swept ``allocator.params.*`` values (``s390-hh mm_lifetime=rcu_barrier``), so
    figures and tables do not average them together.
    """
    if not any(k == "allocator.params" or k.startswith("allocator.params.") for k in params):
        return
    keys = [c for c in df.columns if c.startswith("allocator.params.")]

    def label(row) -> str:
        parts = [
            f"{k.rsplit('.', 1)[1]}={row[k]}"
            for k in keys
            if isinstance(row[k], str | int | float | bool)
            and row[k] == row[k]
            and df.loc[df[DESIGN] == row[DESIGN], k].nunique(dropna=True) > 1
        ]
        return " ".join([row[DESIGN], *parts])

    df[DESIGN] = df.apply(label, axis=1)


def flatten_keys(configs: dict[str, dict]) -> set[str]:
    keys: set[str] = set()
    for c in configs.values():
        keys.update(flatten(c))
    return keys
