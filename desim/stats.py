"""Statistics over replications and over a run's time series, for the sweep and the report alike.

Pure numpy/pandas/scipy (no simpy): it reads what runs wrote, never re-runs the model.

**Intervals.** Replications of one sweep point are independent runs (``SeedSequence.spawn``), so
the interval for a metric's mean is the Student-t interval with n-1 degrees of freedom; with one
run there is no interval (NaN). The t quantile comes from ``scipy.special.stdtrit``, without
``scipy.stats``' 0.7 s import.

**Warm-up deletion** works on each run's sampled time series (``timeseries.parquet``, the memory
split and RCU state every ``record.sample_interval``). The engine's own ``warmup`` already resets
every statistic at a fixed time; the options here recompute the *time-series means* after
deleting a further transient, chosen per experiment (``stats.warmup``):

- ``none`` (default): keep every sample;
- a time such as ``20ms``: delete samples taken before that simulated time (fixed warm-up);
- ``mser5``: MSER-5 (White 1997; White, Cobb & Spratt 2000), chosen per column: batch the series
  into means of 5 samples and truncate the d batches that minimise the marginal standard error
  ``sum_{j>d} (Z_j - mean_{j>d} Z)^2 / (k - d)^2``, searching d over the first half only (the
  usual guard against truncating on end noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import stdtrit

from desim.records import SERIES_METRICS
from desim.units import parse_time_ns

CONFIDENCE = 0.95


def t_half_width(std, n, confidence: float = CONFIDENCE):
    """Half-width of the Student-t interval of a mean, from the sample std and n (arrays too)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = stdtrit(np.where(n > 1, n - 1, np.nan), 0.5 + confidence / 2)
        return q * np.asarray(std, dtype=float) / np.sqrt(n)


def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float, float, int]:
    """Mean, sample std, half-width of the Student-t CI, and n, ignoring NaNs.

    With one value the half-width is NaN: a single replication says nothing about spread.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    sd = float(x.std(ddof=1))
    return mean, sd, float(t_half_width(sd, n, confidence)), n


def mean_ci(
    df: pd.DataFrame, by: list[str], value: str, confidence: float = CONFIDENCE
) -> pd.DataFrame:
    """Per group of ``by``: ``mean``, ``lo``, ``hi``, ``half``, ``n`` of column ``value``."""
    g = df.groupby(by, dropna=False, sort=False)[value]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["half"] = t_half_width(out["std"], out["n"], confidence)
    out["lo"] = out["mean"] - out["half"]
    out["hi"] = out["mean"] + out["half"]
    return out


@dataclass(frozen=True)
class StatsOptions:
    warmup: str | int = "none"  # "none", "mser5", or a fixed time in ns
    confidence: float = 0.95


def parse_stats_options(data: dict) -> StatsOptions:
    for k in data:
        if k not in ("warmup", "confidence"):
            raise ValueError(f"stats.{k}: unknown field (allowed: warmup, confidence)")
    raw = data.get("warmup", "none")
    if raw is None or raw in ("none", "mser5"):
        warm: str | int = raw or "none"
    else:
        try:
            warm = parse_time_ns(raw)
        except Exception:
            raise ValueError(
                f"stats.warmup: expected none, mser5 or a time such as 20ms (got {raw!r})"
            ) from None
    conf = data.get("confidence", 0.95)
    if not isinstance(conf, float) or not 0 < conf < 1:
        raise ValueError("stats.confidence: expected a number between 0 and 1, e.g. 0.95")
    return StatsOptions(warm, conf)


def mser_truncation(y, batch: int = 5) -> int:
    """MSER-``batch`` truncation point: how many leading observations to delete.

    Observations past the last full batch are ignored, as in the published procedure.
    """
    y = np.asarray(y, dtype=float)
    k = len(y) // batch
    if k < 2:
        return 0
    z = y[: k * batch].reshape(k, batch).mean(axis=1)
    # suffix sums give every candidate d in O(k)
    rev = z[::-1]
    s1 = np.cumsum(rev)[::-1]  # sum_{j>=d} z_j
    s2 = np.cumsum(rev * rev)[::-1]
    m = k - np.arange(k)  # batches kept
    sse = s2 - s1 * s1 / m
    stat = sse / (m * m)
    dmax = k // 2
    d = int(np.argmin(stat[: dmax + 1]))
    return d * batch


def steady_means(ts: pd.DataFrame, opts: StatsOptions) -> dict[str, float]:
    """Per-column means of a run's time series after warm-up deletion, and the cut used (ns)."""
    out: dict[str, float] = {}
    if ts.empty or "t_ns" not in ts:
        return out
    t = ts["t_ns"].to_numpy()
    for col in SERIES_METRICS:
        if col not in ts:
            continue
        y = ts[col].to_numpy(dtype=float)
        if opts.warmup == "mser5":
            cut = mser_truncation(y)
        elif opts.warmup == "none":
            cut = 0
        else:
            cut = int(np.searchsorted(t, opts.warmup, side="left"))
        kept = y[cut:]
        out[f"ts.{col}.mean"] = float(kept.mean()) if len(kept) else math.nan
        out[f"ts.{col}.warmup_ns"] = float(t[cut]) if cut < len(t) else math.nan
    return out


def point_table(
    runs: pd.DataFrame, keys: list[str], metrics: list[str], confidence: float = 0.95
) -> pd.DataFrame:
    """Tidy table: one row per (sweep point, metric) with mean and CI over ok replications."""
    ok = runs[runs["status"] == "ok"]
    rows = []
    for point, grp in runs.groupby("point", sort=True):
        params = {k: grp[k].iloc[0] for k in keys}
        good = ok[ok["point"] == point]
        for m in metrics:
            vals: pd.Series | list = good.get(m, [])
            mean, sd, half, n = t_interval(vals, confidence)
            rows.append(
                {
                    **params,
                    "point": point,
                    "metric": m,
                    "n": n,
                    "failed": int((grp["status"] == "failed").sum()),
                    "mean": mean,
                    "std": sd,
                    "ci_half": half,
                    "ci_low": mean - half,
                    "ci_high": mean + half,
                    "confidence": confidence,
                }
            )
    return pd.DataFrame(rows)
