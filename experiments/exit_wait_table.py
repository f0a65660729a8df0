"""Slowdown of each mm_lifetime rule against ``none``, paired by replication, with 95% CIs.

    python experiments/exit_wait_table.py RESULTS_DIR METRIC

RESULTS_DIR is a ``desim sweep`` output (its ``runs.parquet``); METRIC is a time to finish
(``build.makespan_ns``: slowdown = rule / none) or a rate (``spawn.per_s``: none / rule).
Replication r of every point shares its seed, so each rule is compared with ``none`` run on
the same random numbers; the CI is Student's t over the per-replication ratios.
"""

import sys
from pathlib import Path

import pandas as pd
from scipy import stats


def main(out: str, metric: str) -> None:
    d = pd.read_parquet(Path(out) / "runs.parquet")
    d = d[d["status"] == "ok"]
    keys = [c for c in ("machine.cpus", "machine.hz") if c in d.columns]
    base = d[d["mm_lifetime"] == "none"].set_index([*keys, "replication"])[metric]
    rate = metric.endswith("per_s")
    rows = []
    for (rule, *kv), g in d.groupby(["mm_lifetime", *keys], sort=False):
        g = g.set_index([*keys, "replication"])
        b = base.loc[g.index]
        r = (b / g[metric]) if rate else (g[metric] / b)
        n = len(r)
        half = stats.t.ppf(0.975, n - 1) * r.std(ddof=1) / n**0.5 if n > 1 else float("nan")
        rows.append(
            {
                **dict(zip(keys, kv, strict=True)),
                "mm_lifetime": rule,
                "n": n,
                "slowdown": r.mean(),
                "ci95": half,
                metric: g[metric].mean(),
                "sleep_in_atomic": g["safety.sleep_in_atomic"].mean(),
                "other_violations": (g["safety.violations"] - g["safety.sleep_in_atomic"]).mean(),
            }
        )
    t = pd.DataFrame(rows).sort_values([*keys, "mm_lifetime"])
    pd.set_option("display.width", 200)
    print(t.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
