"""The report's tables: headline metrics (mean ± 95% CI per design and sweep point), provenance,
the resolved config, and the first safety violations.
"""

from __future__ import annotations

import math

import pandas as pd
import yaml

from desim.report.figures import Context
from desim.report.load import DESIGN
from desim.report.spec import DEFAULT_METRICS
from desim.report.stats import mean_ci

MAX_VIOLATIONS = 20


def _scaled(v: float, units: tuple[tuple[str, float], ...]) -> str:
    # Pick the largest unit the value reaches (at 1000 of the next one down, so that 3
    # significant digits never overflow into "1.01e+03 KiB"; 1000 KiB reads 0.977 MiB).
    for i, (unit, scale) in enumerate(units):
        nxt = units[i + 1][1] if i + 1 < len(units) else 0
        if abs(v) >= min(scale, 999.5 * nxt) if nxt else abs(v) > 0:
            return f"{v / scale:.3g} {unit}"
    return "0"


def fmt_value(metric: str, v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if metric.endswith("_ns"):
        return _scaled(v, (("s", 1e9), ("ms", 1e6), ("µs", 1e3), ("ns", 1.0)))
    if metric.endswith("_bytes"):
        return _scaled(v, (("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 1024.0), ("B", 1.0)))
    if metric.endswith("ratio") or metric.endswith("fraction"):
        return f"{100 * v:.3g}%"
    return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def metric_header(metric: str) -> str:
    return metric.removesuffix("_ns").removesuffix("_bytes")


def headline(ctx: Context) -> tuple[list[str], list[list[str]], pd.DataFrame]:
    """(header, rows of formatted cells, the numbers as a tidy frame for CSV)."""
    runs = ctx.runs
    metrics = [m for m in (ctx.spec.metrics or DEFAULT_METRICS) if m in runs]
    keys = ["series"] + ([ctx.x] if ctx.x else [])
    # Any other swept parameter that moves with the design is shown too (e.g. page size).
    shown_params = [p for p in ctx.res.params if p not in (DESIGN, ctx.x) and p not in ctx.extra]
    header = ["design", *([ctx.x_label] if ctx.x else []), *shown_params, "runs",
              *[metric_header(m) for m in metrics]]
    tidy = []
    base = runs.groupby(keys, sort=False).agg(
        runs=("run_id", "count"), **{p: (p, "first") for p in shown_params}).reset_index()
    for m in metrics:
        a = mean_ci(runs.assign(**{m: pd.to_numeric(runs[m], errors="coerce")}), keys, m)
        a["metric"] = m
        tidy.append(a)
    tidy_df = pd.concat(tidy, ignore_index=True) if tidy else pd.DataFrame()
    order = {s: i for i, s in enumerate(ctx.series)}
    base = base.sort_values(keys, key=lambda c: c.map(order) if c.name == "series" else c)
    rows = []
    for _, b in base.iterrows():
        cells = [b["series"], *([f"{b[ctx.x]:g}"] if ctx.x else []),
                 *[str(b[p]) for p in shown_params], str(b["runs"])]
        for m in metrics:
            sel = tidy_df[(tidy_df["metric"] == m) & (tidy_df["series"] == b["series"])]
            if ctx.x:
                sel = sel[sel[ctx.x] == b[ctx.x]]
            r = sel.iloc[0]
            cell = fmt_value(m, r["mean"])
            if not math.isnan(r["half"]):
                cell += f" ± {fmt_value(m, r['half'])}"
            cells.append(cell)
        rows.append(cells)
    return header, rows, tidy_df


def provenance(ctx: Context) -> list[tuple[str, str]]:
    res = ctx.res
    mans = list(res.manifests.values())

    def uniq(key):
        vals = [m.get(key) for m in mans if m.get(key) is not None]
        return list(dict.fromkeys(str(v) for v in vals))

    cmds = list(dict.fromkeys(" ".join(m.get("command") or []) for m in mans))
    dates = sorted(d for d in uniq("date"))
    seeds = uniq("seed")
    spawn = [m.get("seed_spawn_key") for m in mans if m.get("seed_spawn_key") is not None]
    seed_text = ", ".join(seeds) or "?"
    if spawn:
        reps = sorted({tuple(s) for s in spawn})
        seed_text += (f" (root SeedSequence; replications use spawned children "
                      f"{', '.join(str(list(r)) for r in reps)})")
    walls = [m.get("wall_s") or 0 for m in mans]
    rows = [
        ("results", str(res.root.resolve())),
        ("kind", "sweep" if res.is_sweep else "single run"),
        ("runs", f"{len(res.runs)} complete"
         + (f", {len(res.failed)} failed ({', '.join(res.failed[:5])})" if res.failed else "")
         + (f", {len(res.unreadable)} unreadable and left out ("
            + "; ".join(f"{r}: {why}" for r, why in res.unreadable[:5]) + ")"
            if res.unreadable else "")),
        ("designs", ", ".join(ctx.res.designs)),
        ("swept parameters", ", ".join(res.params) or "none"),
        ("desim version", ", ".join(uniq("desim_version")) or "?"),
        ("python", ", ".join(uniq("python")) or "?"),
        ("seeds", seed_text),
        ("command", " | ".join(cmds[:3]) + (f" (+{len(cmds) - 3} more)" if len(cmds) > 3 else "")),
        ("run dates (UTC)", f"{dates[0]} … {dates[-1]}" if len(dates) > 1 else
         (dates[0] if dates else "?")),
        ("simulation wall time", f"{sum(walls):.1f} s in all"),
    ]
    return rows


def resolved_config(ctx: Context) -> str:
    """The first run's resolved config; in a sweep, the swept keys are marked as varying."""
    res = ctx.res
    first = next(iter(res.configs.values()))
    text = yaml.safe_dump(first, sort_keys=False)
    if res.params:
        lines = ["# swept (value shown is the first run's): " + ", ".join(res.params)]
        text = "\n".join(lines) + "\n" + text
    return text


def violations(ctx: Context) -> list[dict]:
    out = []
    for run_id, vs in ctx.res.violations.items():
        for v in vs:
            out.append({"run": run_id, "design": ctx.res.runs.set_index("run_id").loc[
                run_id, DESIGN], **{k: v.get(k) for k in ("t_ns", "cpu", "kind", "message")},
                "history": v.get("history") or []})
            if len(out) >= MAX_VIOLATIONS:
                return out
    return out
