"""The sweep's tables, rebuilt from the run directories (so resumed runs count like any other).

``runs.parquet``: one row per planned run — ``run_id``, ``point``, ``replication``, the swept
parameters under their dotted names, ``status`` (``ok``, ``stopped_on_violation``, ``failed`` (a damaged
directory counts as failed, with the reason in ``error``), ``stale`` (made from other inputs),
``missing``), ``seed`` / ``seed_entropy`` / ``seed_spawn_key``, ``wall_s``, ``error``, then
every summary metric (``summary.json``) and the warm-up-deleted time-series means
(``ts.<column>.mean`` and the cut ``ts.<column>.warmup_ns``, see ``desim.sweep.stats``).

``points.parquet``: tidy, one row per (sweep point, metric): the swept parameters, ``point``,
``metric``, ``n`` (``ok`` replications used), ``failed``, ``mean``, ``std``, ``ci_half``,
``ci_low``, ``ci_high`` (Student t at ``confidence``, default 95%).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from desim.rundir import DONE, FAILED, SUMMARY, check_complete, manifest_of, read_json
from desim.sweep.experiment import Experiment, RunSpec
from desim.sweep.stats import parse_stats_options, point_table, steady_means

FIXED = ("run_id", "point", "replication", "status", "seed", "seed_entropy", "seed_spawn_key",
         "wall_s", "error")


def param_column(key: str) -> str:
    return f"param.{key}" if key in FIXED else key


def _cell(v):
    return json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v


def run_row(exp: Experiment, spec: RunSpec, runs_dir: Path, opts) -> dict:
    d = runs_dir / spec.run_id
    row = {"run_id": spec.run_id, "point": spec.point, "replication": spec.replication}
    row.update({param_column(k): _cell(spec.params.get(k)) for k in exp.swept_keys})
    row.update({"status": "missing", "seed": exp.seed, "seed_entropy": str(spec.entropy),
                "seed_spawn_key": json.dumps(list(spec.spawn_key)), "wall_s": math.nan,
                "error": None})
    if (d / FAILED).exists():
        man = manifest_of(d)
        row["status"] = "failed"
        row["wall_s"] = man.get("wall_s", math.nan)
        row["error"] = man.get("error") or "failed (manifest unreadable)"
    elif (d / DONE).exists():
        why = check_complete(d)
        if why is not None:       # a damaged directory is not a result: said, and left out
            row["status"] = "failed"
            row["error"] = f"run directory damaged: {why}"
            return row
        man = manifest_of(d)
        if man.get("digest") != spec.digest:   # left from other inputs by an interrupted sweep
            row["status"] = "stale"
            row["error"] = "made from other inputs; re-run the sweep to redo it"
            return row
        row["status"] = man.get("status", "ok")
        row["wall_s"] = man.get("wall_s", math.nan)
        summ = read_json(d / SUMMARY)
        row.update({k: (math.nan if v is None else v) for k, v in summ.items()})
        row.update(steady_means(pd.read_parquet(d / "timeseries.parquet"), opts))
    return row


def _uniform(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """A parameter column mixing types (4 and "8") is stored as text, which parquet accepts."""
    for c in cols:
        kinds = {type(v) for v in df[c] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            df[c] = df[c].map(lambda v: None if v is None else str(v))
    return df


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def aggregate(exp: Experiment, specs: list[RunSpec], out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    opts = parse_stats_options(exp.stats)
    runs_dir = out / "runs"
    rows = [run_row(exp, s, runs_dir, opts) for s in specs]
    runs = pd.DataFrame(rows)
    keys = [param_column(k) for k in exp.swept_keys]
    runs = _uniform(runs, keys)
    metrics = [c for c in runs.columns if c not in FIXED and c not in keys
               and pd.api.types.is_numeric_dtype(runs[c])]
    points = point_table(runs[runs["status"] != "missing"], keys, metrics, opts.confidence)
    _write_parquet(runs, out / "runs.parquet")
    _write_parquet(points, out / "points.parquet")
    return runs, points
