"""Writing a run's results into its directory, and reading its summary back.

Layout of a run directory (file names are ``desim.rundir``'s)::

    config.yaml        the resolved config (loads back to the same run)
    manifest.json      seed, desim version, command, source config, wall time, events, status
    summary.json       flat {metric: number}; names are documented in README
    timeseries.parquet memory split and RCU state sampled every record.sample_interval
    latency.parquet    log-binned latency histograms: op, bin, lo_ns, hi_ns, count
    locks.parquet      one row per lock class
    gp.parquet         one row per grace period: start_ns, end_ns
    samples.parquet    every latency sample (only with record.latency_samples)
    violations.json    safety violations with their object histories
    DONE               written last: its presence means the directory is complete

Where and how a directory is created, replaced or judged complete is ``desim.rundir``'s job:
this module only fills a staging directory with a ``RunResult``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from desim import __version__
from desim import records as R
from desim.engine import RunResult
from desim.rundir import write_json


def _clean(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def manifest(result: RunResult, command: list[str] | None = None, **extra) -> dict:
    return {
        "desim_version": __version__,
        "seed": result.config.seed,
        "command": command if command is not None else sys.argv,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": result.wall_s,
        "events": result.events,
        "events_per_wall_s": result.events / result.wall_s if result.wall_s else None,
        "status": "stopped_on_violation" if result.stopped_early else "ok",
        "stopped_early": result.stopped_early,
        "python": sys.version.split()[0],
        **extra,
    }


def fill_run(
    result: RunResult, tmp: Path, command: list[str] | None = None, **manifest_extra
) -> None:
    """Write every file of a finished run into ``tmp`` (a staging directory), ``DONE`` last."""
    (tmp / R.CONFIG).write_text(yaml.safe_dump(result.config.to_yaml_dict(), sort_keys=False))
    write_json(tmp / R.MANIFEST, manifest(result, command, **manifest_extra))
    write_json(tmp / R.SUMMARY, {k: _clean(v) for k, v in result.summary.items()})

    def table(name: str, data, columns=None) -> None:
        pd.DataFrame(data, columns=columns).to_parquet(tmp / f"{name}.parquet", index=False)

    table(R.TIMESERIES, result.series)
    table(R.LATENCY, result.latency_hist, R.LatencyBin._fields)
    table(R.LOCKS, result.locks)
    table(R.GP, result.gp_spans, R.GpSpan._fields)
    if result.samples is not None:
        table(
            R.SAMPLES,
            [R.Sample(op, v) for op, vals in result.samples.items() for v in vals],
            R.Sample._fields,
        )
    write_json(tmp / R.VIOLATIONS, result.violations)
    (tmp / R.DONE).write_text("ok\n")
