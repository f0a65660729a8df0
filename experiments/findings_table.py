"""Tables of experiments/FINDINGS.md: means and paired comparisons with 95% CIs, per scenario.

    python experiments/findings_table.py RESULTS_DIR METRIC [METRIC...] [--factor COL]
        [--base VALUE] [--kind ratio|inverse|diff] [--per-gib] [--share] [--csv OUT]

RESULTS_DIR is a ``desim sweep`` output (its ``runs.parquet``). Every swept column other than
``--factor`` names a *scenario* (the headline and its one-at-a-time sensitivity variations);
within a scenario, each level of ``--factor`` (a design, an mm_lifetime rule) gets the mean of
each METRIC with its Student-t 95% CI (``desim.stats.t_interval``), and, with ``--base``, the
effect against the base level paired by replication (replication r of every point shares its
seed, so the two are compared on common random numbers): ``ratio`` = level / base (a time, a
size), ``inverse`` = base / level (a rate: the slowdown), ``diff`` = level - base. ``rel`` is
the CI half-width over the mean (or over the effect's distance from "no effect": |ratio - 1|
or |diff|), the precision FINDINGS asks to keep at or under 0.10.

Derived metrics (computed per run before averaging):
- ``--per-gib``: ``waste_per_gib`` = page-table overhead (``mem.overhead.mean_bytes``) per GiB
  of mapped memory, taking every live table as fully mapped (desim maps tables whole): a table
  of T bytes maps T/8 entries of one base page each (powerpc hash64k: 2 KiB of PTEs in its 4 KiB
  fragment, so 256 entries).
- ``--share``: ``waste_share`` = overhead / (live + overhead), the share of page-table memory
  (``PageTables`` plus the batch pages) that maps nothing.
- ``--lock CLASS --warmup TIME``: ``acq_per_us`` = acquisitions per microsecond of the measured
  window (``sim.duration_ns`` - warm-up), against the lock's capacity when every acquisition is
  a hand-over (1 / (``costs.lock_handoff`` + ``costs.lock_uncontended``): 8 per us by default;
  the s390 list locks' sections cost nothing beyond the lock's own acquire in desim, so this
  capacity is an upper bound); ``spin_share`` = acquisitions x mean wait per CPU-ns of the window: the
  share of all CPU time spent spinning on it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from desim.stats import t_interval
from desim.units import parse_time_ns

GIB = 1 << 30
FIXED = ("run_id", "point", "replication")


def _swept(d: pd.DataFrame) -> list[str]:
    cols = list(d.columns)
    return cols[cols.index("replication") + 1 : cols.index("status")]


def _mapped_per_live_byte(row) -> float:
    """Bytes of address space one byte of live PTE table maps (whole tables, base pages)."""
    name = str(row.get("allocator.name", ""))
    params = row.get("allocator.params")
    params = json.loads(params) if isinstance(params, str) and params.startswith("{") else {}
    page = row.get("machine.page_size")
    if page is None or page != page:
        # not swept: the designs' own base page (powerpc book3s64 runs 64 KiB pages; the pool
        # runs in these experiments on the same powerpc machine)
        page = 65536 if name.startswith(("powerpc", "percpu-pool")) else 4096
    page = float(page)
    if name.startswith("powerpc") and params.get("geometry", "hash64k") == "hash64k":
        return 256 * page / 4096  # 4 KiB fragment: 256 PTEs of 8 B + the hash slot array
    if name == "percpu-pool" and page == 65536 and params.get("fragment_size") == 4096:
        return 256 * page / 4096  # the pool standing in for hash64k's fragments
    return page / 8  # one 8-byte entry per base page


def derive(
    d: pd.DataFrame,
    per_gib: bool,
    share: bool,
    lock: str | None = None,
    warmup: int = 0,
    cpus: int | None = None,
) -> pd.DataFrame:
    d = d.copy()
    if lock:
        acq = d[f"lock.{lock}.acquisitions"]
        window = d["sim.duration_ns"] - warmup
        d["acq_per_us"] = acq * 1000 / window
        ncpu = d.get("machine.cpus", cpus)
        d["spin_share"] = acq * d[f"lock.{lock}.wait_mean_ns"] / (window * ncpu)
    over, live = d["mem.overhead.mean_bytes"], d["mem.live.mean_bytes"]
    if per_gib:
        mapped = live * d.apply(_mapped_per_live_byte, axis=1)
        d["waste_per_gib"] = over * GIB / mapped
    if share:
        d["waste_share"] = over / (live + over)
    return d


def _covered(col: str, v, cols: list[str]) -> bool:
    """A whole section is named by a finer column when one is swept (workload.x beside
    workload), unless it holds a closed loop, which names the load (build, spawn)."""
    loops = ("build", "spawn")
    return any(c.startswith(col + ".") for c in cols) and not any(f'"{k}"' in str(v) for k in loops)


def _short(v) -> str:
    """A swept value for a label: an element's whole parameter set by its key parameters."""
    if isinstance(v, str) and v.startswith("{"):
        d = json.loads(v)
        if d.get("dist") == "exponential":
            return f"exp(mean={d['mean']:.0f}ns)"
        for k in ("build", "spawn"):
            if k in d:
                return k
        keep = {
            k: d[k] for k in ("rate", "initial", "geometry", "keep_empty", "list_lock") if k in d
        }
        return json.dumps(keep or d, separators=(",", ":"))[:60]
    return str(v)


def table(d: pd.DataFrame, metrics: list[str], factor: str | None, base, kind: str) -> pd.DataFrame:
    d = d[d["status"] == "ok"]
    swept = _swept(d)
    factors = factor.split(",") if factor else []
    scen = [c for c in swept if c not in factors]
    rows = []
    first = None
    for skey, g in d.groupby(scen, sort=False, dropna=False) if scen else [((), d)]:
        skey = skey if isinstance(skey, tuple) else (skey,)
        # a scenario is named by what differs from the first (the headline), as the
        # experiment files list them: headline first, then one-at-a-time variations
        first = skey if first is None else first
        diff = [
            (c, v)
            for c, v, f in zip(scen, skey, first, strict=True)
            if str(v) != str(f) and str(v) != "nan" and not _covered(c, v, scen)
        ]
        label = " ".join(f"{c}={_short(v)}" for c, v in diff) or "headline"
        levels = g.groupby(factors, sort=False, dropna=False) if factors else [((None,), g)]
        b = None
        if factor and base is not None:
            # the base level: its first factor column holds ``base`` (a design's name)
            first_rows = g[g[factors[0]].astype(str) == str(base)]
            first_rows = (
                first_rows[
                    first_rows[factors]
                    .astype(str)
                    .eq(first_rows[factors].astype(str).iloc[0])
                    .all(axis=1)
                ]
                if len(first_rows)
                else first_rows
            )
            b = first_rows.set_index("replication")
        for lkey, h in levels:
            lkey = lkey if isinstance(lkey, tuple) else (lkey,)
            lval = " ".join(_short(v) for v in lkey if str(v) not in ("nan", "{}"))
            h = h.set_index("replication")
            for m in metrics:
                mean, _, half, n = t_interval(h[m])
                row = {"scenario": label, "level": lval, "metric": m, "n": n}
                row["mean"] = mean
                row["ci95"] = half
                row["rel"] = half / abs(mean) if mean else math.nan
                is_base = b is not None and len(b) and set(h["run_id"]) == set(b["run_id"])
                if b is not None and len(b) and not is_base:
                    common = h.index.intersection(b.index)
                    x, y = h.loc[common, m].astype(float), b.loc[common, m].astype(float)
                    eff = {"ratio": x / y, "inverse": y / x, "diff": x - y}[kind]
                    emean, _, ehalf, _ = t_interval(eff.replace([np.inf, -np.inf], np.nan))
                    null = 0.0 if kind == "diff" else 1.0
                    row[f"{kind}_vs_{base}"] = emean
                    row["effect_ci95"] = ehalf
                    gap = abs(emean - null)
                    row["effect_rel"] = ehalf / gap if gap else math.nan
                rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results")
    ap.add_argument("metrics", nargs="+")
    ap.add_argument("--factor", help="column(s), comma-separated, whose levels are compared")
    ap.add_argument("--base")
    ap.add_argument("--kind", choices=("ratio", "inverse", "diff"), default="ratio")
    ap.add_argument("--per-gib", action="store_true")
    ap.add_argument("--share", action="store_true")
    ap.add_argument("--lock", help="lock class for acq_per_us and spin_share")
    ap.add_argument("--warmup", default="0", help="the runs' warm-up (a time: 5ms)")
    ap.add_argument("--cpus", type=int, help="the CPU count, where machine.cpus is not swept")
    ap.add_argument("--csv")
    a = ap.parse_args(argv)
    d = pd.read_parquet(Path(a.results) / "runs.parquet")
    d = derive(d, a.per_gib, a.share, a.lock, parse_time_ns(a.warmup), a.cpus)
    t = table(d, a.metrics, a.factor, a.base, a.kind)
    if a.csv:
        t.to_csv(a.csv, index=False)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_colwidth", 90)
    print(wide(t).to_string(index=False))


def _pm(mean, half) -> str:
    if mean != mean:
        return "-"
    return f"{mean:.4g}" if half != half else f"{mean:.4g} ± {half:.2g}"


def wide(t: pd.DataFrame) -> pd.DataFrame:
    """One row per scenario and level; per metric ``mean ± CI`` and the paired effect."""
    rows = []
    eff = [c for c in t.columns if "_vs_" in c]
    for (scen, level), g in t.groupby(["scenario", "level"], sort=False, dropna=False):
        row = {"scenario": scen, "level": level, "n": int(g["n"].max())}
        for _, r in g.iterrows():
            row[r["metric"]] = _pm(r["mean"], r["ci95"])
            for c in eff:
                if r.get(c) == r.get(c):
                    row[f"{r['metric']} {c}"] = _pm(r[c], r["effect_ci95"])
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


if __name__ == "__main__":
    main()
