"""Means and Student-t confidence intervals over replications, as the report's tables and bands use.

Replications of one sweep point are independent runs (``SeedSequence.spawn``), so the interval
for a metric's mean is the t interval with n-1 degrees of freedom; with one run there is no
interval (NaN), and figures then draw the point alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import stdtrit  # Student's t quantile, without scipy.stats' 0.7 s import

CONFIDENCE = 0.95


def t_half_width(std: pd.Series | np.ndarray, n: pd.Series | np.ndarray,
                 confidence: float = CONFIDENCE):
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = stdtrit(np.where(n > 1, n - 1, np.nan), 0.5 + confidence / 2)
        return q * np.asarray(std, dtype=float) / np.sqrt(n)


def mean_ci(df: pd.DataFrame, by: list[str], value: str,
            confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per group of ``by``: ``mean``, ``lo``, ``hi``, ``half``, ``n`` of column ``value``."""
    g = df.groupby(by, dropna=False, sort=False)[value]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["half"] = t_half_width(out["std"], out["n"], confidence)
    out["lo"] = out["mean"] - out["half"]
    out["hi"] = out["mean"] + out["half"]
    return out
