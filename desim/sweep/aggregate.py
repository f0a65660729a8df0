"""The sweep's tables, rebuilt from the run directories (so resumed runs count like any other).

``runs.parquet``: one row per planned run — ``run_id``, ``point``, ``replication``, the swept
parameters under their dotted names, ``status`` (``ok``, ``stopped_on_violation``, ``failed`` (a damaged
directory counts as failed, with the reason in ``error``), ``stale`` (made from other inputs),
``missing``), ``seed`` / ``seed_entropy`` / ``seed_spawn_key``, ``wall_s``, ``error``, then
every summary metric (``summary.json``) and the warm-up-deleted time-series means
(``ts.<column>.mean`` and the cut ``ts.<column>.warmup_ns``, see ``desim.stats``).

Swept columns hold the value each point *ran with*, as the validated config has it: base units
(ns, bytes), so ``64KiB`` is 65536 and a point that left the key to the base config shows the
base's value, never a missing one; one type per column; the unit of a time or size column is in
the parquet schema (field metadata ``unit``: ``ns``, ``bytes`` or ``1/ns``;
``pyarrow.parquet.read_schema(path).field(name).metadata``). ``seed`` and ``seed_entropy`` are
integers and ``seed_spawn_key`` a list of integers (``SeedSequence(seed_entropy,
spawn_key=seed_spawn_key)`` is the run's seed sequence).

``points.parquet``: tidy, one row per (sweep point, metric): the swept parameters, ``point``,
``metric``, ``n`` (``ok`` replications used), ``failed``, ``mean``, ``std``, ``ci_half``,
``ci_low``, ``ci_high`` (Student t at ``confidence``, default 95%).
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from desim.records import temp_name
from desim.rundir import DONE, FAILED, SUMMARY, check_complete, manifest_of, read_json
from desim.stats import parse_stats_options, point_table, steady_means
from desim.sweep.experiment import Experiment, RunSpec

FIXED = (
    "run_id",
    "point",
    "replication",
    "status",
    "seed",
    "seed_entropy",
    "seed_spawn_key",
    "wall_s",
    "error",
)


def param_column(key: str) -> str:
    return f"param.{key}" if key in FIXED else key


def _cell(v):
    return json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v


UNIT_OF_PARSER = {"parse_time_ns": "ns", "parse_size_bytes": "bytes", "parse_rate_per_ns": "1/ns"}


def _unit_of(annotation, metadata=()) -> str | None:
    """The unit a pydantic field's BeforeValidator parses into, looking inside Optional/Annotated."""
    import typing

    for m in (*metadata, *getattr(annotation, "__metadata__", ())):
        func = getattr(m, "func", None)
        name = getattr(getattr(func, "__wrapped__", func), "__name__", "")
        if name in UNIT_OF_PARSER:
            return UNIT_OF_PARSER[name]
        if hasattr(m, "metadata"):  # a FieldInfo nested in Annotated
            u = _unit_of(None, m.metadata)
            if u:
                return u
    for arg in typing.get_args(annotation):
        u = _unit_of(arg)
        if u:
            return u
    return None


def _resolved(cfg, key: str) -> tuple[object, str | None]:
    """(value as the validated config holds it, its unit) of dotted ``key``; (None, None) if absent."""
    from pydantic import BaseModel

    obj, unit = cfg, None
    for part in key.split("."):
        if isinstance(obj, BaseModel):
            fields = type(obj).model_fields
            name = next((n for n, f in fields.items() if part in (n, f.alias)), None)
            if name is None:
                return None, None
            unit = _unit_of(fields[name].annotation, fields[name].metadata)
            obj = getattr(obj, name)
        elif isinstance(obj, dict) and part in obj:
            obj, unit = obj[part], None
        else:
            return None, None
    return _plain(obj), unit


def _plain(obj):
    """A validated value as plain data: a whole section (``workload``) is a dict of models."""
    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", by_alias=True)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def point_params(exp: Experiment, specs: list[RunSpec]) -> tuple[dict[int, dict], dict[str, str]]:
    """Per point, the swept keys' values as validated (base units); and each key's unit."""
    from desim.config import ConfigError, validate
    from desim.distributions import relative_to

    values: dict[int, dict] = {}
    units: dict[str, str] = {}
    for spec in specs:
        if spec.point in values:
            continue
        try:
            with relative_to(Path(spec.base_dir)):
                cfg = validate(copy.deepcopy(spec.config))
        except (ConfigError, OSError, ValueError):
            # A refused point ran nothing: its row says why (status, error), with no values.
            values[spec.point] = dict.fromkeys(exp.swept_keys)
            continue
        vals = {}
        for k in exp.swept_keys:
            vals[k], unit = _resolved(cfg, k)
            if unit:
                units[param_column(k)] = unit
        values[spec.point] = vals
    return values, units


def run_row(
    exp: Experiment, spec: RunSpec, runs_dir: Path, opts, params: dict | None = None
) -> dict:
    d = runs_dir / spec.run_id
    row = {"run_id": spec.run_id, "point": spec.point, "replication": spec.replication}
    params = spec.params if params is None else params
    row.update({param_column(k): _cell(params.get(k)) for k in exp.swept_keys})
    row.update(
        {
            "status": "missing",
            "seed": exp.seed,
            "seed_entropy": spec.entropy,
            "seed_spawn_key": list(spec.spawn_key),
            "wall_s": math.nan,
            "error": None,
        }
    )
    if (d / FAILED).exists():
        man = manifest_of(d)
        row["status"] = "failed"
        row["wall_s"] = man.get("wall_s", math.nan)
        row["error"] = man.get("error") or "failed (manifest unreadable)"
    elif (d / DONE).exists():
        why = check_complete(d)
        if why is not None:  # a damaged directory is not a result: said, and left out
            row["status"] = "failed"
            row["error"] = f"run directory damaged: {why}"
            return row
        man = manifest_of(d)
        if man.get("digest") != spec.digest:  # left from other inputs by an interrupted sweep
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
        kinds = {
            type(v) for v in df[c] if v is not None and not (isinstance(v, float) and math.isnan(v))
        }
        if len(kinds) > 1 and not kinds <= {int, float}:
            df[c] = df[c].map(lambda v: None if v is None else str(v))
    return df


def _write_parquet(df: pd.DataFrame, path: Path, units: dict[str, str] | None = None) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    if units:
        fields = [
            f.with_metadata({"unit": units[f.name]}) if f.name in units else f for f in table.schema
        ]
        table = table.cast(pa.schema(fields, metadata=table.schema.metadata))
    tmp = path.with_name(temp_name(path.name, os.getpid()))
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def aggregate(
    exp: Experiment, specs: list[RunSpec], out: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    opts = parse_stats_options(exp.stats)
    runs_dir = out / "runs"
    values, units = point_params(exp, specs)
    rows = [run_row(exp, s, runs_dir, opts, values[s.point]) for s in specs]
    runs = pd.DataFrame(rows)
    keys = [param_column(k) for k in exp.swept_keys]
    runs = _uniform(runs, keys)
    runs["error"] = runs["error"].astype("string")  # typed text even when every run is fine
    for c in ("seed", "seed_entropy"):
        # SeedSequence takes any non-negative integer; parquet's widest is 64 bits unsigned.
        if runs[c].max() >= 2**63:
            runs[c] = runs[c].astype("UInt64" if runs[c].max() < 2**64 else "string")
    metrics = [
        c
        for c in runs.columns
        if c not in FIXED and c not in keys and pd.api.types.is_numeric_dtype(runs[c])
    ]
    points = point_table(runs[runs["status"] != "missing"], keys, metrics, opts.confidence)
    _write_parquet(runs, out / "runs.parquet", units)
    _write_parquet(points, out / "points.parquet", units)
    return runs, points
