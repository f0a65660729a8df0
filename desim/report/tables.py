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
from desim.report.style import param_label
from desim.stats import mean_ci

MAX_VIOLATIONS = 20


TIME_UNITS = (("s", 1e9), ("ms", 1e6), ("µs", 1e3), ("ns", 1.0))
SIZE_UNITS = (("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 1024.0), ("B", 1.0))

# Short column names for the default metrics; others read as their dotted key.
HEADERS = {
    "mem.overhead.mean_bytes": "waste, mean",
    "mem.overhead.peak_bytes": "waste, peak",
    "safety.violations": "safety violations",
    "fault.p50_ns": "fault p50",
    "fault.p99_ns": "fault p99",
    "alloc.p99_ns": "alloc p99",
    "defer.p99_ns": "defer p99",
    "exit.p99_ns": "exit p99",
    "free_to_reuse.mean_ns": "free-to-reuse mean",
    "rcu.gp.mean_ns": "GP mean",
    "rcu.callbacks_pending_max": "callback backlog, max",
    "mem.held.mean_bytes": "held, mean",
    "lock.ptl.contention_ratio": "ptl contended",
}


def column_unit(metric: str, values) -> tuple[str, float]:
    """One unit for a whole column: the largest the column's biggest value reaches (at 1000 of
    the next one down, so a column never reads "1.01e+03 KiB"); ``("", 1)`` for counts."""
    if metric.endswith("_ns"):
        units = TIME_UNITS
    elif metric.endswith("_bytes"):
        units = SIZE_UNITS
    elif metric.endswith("ratio") or metric.endswith("fraction"):
        return "%", 0.01
    else:
        return "", 1.0
    big = max((abs(v) for v in values if v == v), default=0.0)
    for i, (unit, scale) in enumerate(units):
        nxt = units[i + 1][1] if i + 1 < len(units) else 0.0
        if big >= (min(scale, 999.5 * nxt) if nxt else 0.0) and big > 0:
            return unit, scale
    return units[-1][0], 1.0


def fmt_number(v: float, scale: float = 1.0) -> str:
    """``v`` in the column's unit with 3 significant digits (integers in full); ``–`` if none."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    x = v / scale
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def fmt_value(metric: str, v: float) -> str:
    """One value with its own unit (tables that mix metrics in a column use this)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    unit, scale = column_unit(metric, [v])
    return fmt_number(v, scale) + (f" {unit}" if unit and unit != "%" else unit)


def metric_header(metric: str) -> str:
    return HEADERS.get(metric, metric.removesuffix("_ns").removesuffix("_bytes"))


def fmt_param(key: str, v) -> str:
    if key.endswith("page_size") and isinstance(v, int | float) and v == v:
        unit, scale = column_unit("x_bytes", [v])
        return f"{fmt_number(v, scale)} {unit}"
    return str(v)


def headline(ctx: Context) -> tuple[list[str], list[list[str]], pd.DataFrame]:
    """(header, rows of formatted cells, the numbers as a tidy frame for CSV).

    Each metric column has one unit, named in its header ("fault p99 (µs)"), so values in a
    column compare at a glance; ``headline.csv`` keeps the base units (ns, bytes).
    """
    runs = ctx.runs
    metrics = [m for m in (ctx.spec.metrics or DEFAULT_METRICS) if m in runs]
    keys = ["series"] + ([ctx.x] if ctx.x else [])
    # Any other swept parameter that moves with the design is shown too (e.g. page size).
    shown_params = [p for p in ctx.res.params if p not in (DESIGN, ctx.x) and p not in ctx.extra]
    tidy = []
    base = (
        runs.groupby(keys, sort=False)
        .agg(runs=("run_id", "count"), **{p: (p, "first") for p in shown_params})
        .reset_index()
    )
    for m in metrics:
        a = mean_ci(runs.assign(**{m: pd.to_numeric(runs[m], errors="coerce")}), keys, m)
        a["metric"] = m
        tidy.append(a)
    tidy_df = pd.concat(tidy, ignore_index=True) if tidy else pd.DataFrame()
    units = {
        m: column_unit(m, tidy_df.loc[tidy_df["metric"] == m, "mean"].tolist()) for m in metrics
    }
    header = [
        "design",
        *([ctx.x_label] if ctx.x else []),
        *[param_label(p).removesuffix(" (bytes)") for p in shown_params],
        "runs",
        *[metric_header(m) + (f" ({units[m][0]})" if units[m][0] else "") for m in metrics],
    ]
    order = {s: i for i, s in enumerate(ctx.series)}
    base = base.sort_values(keys, key=lambda c: c.map(order) if c.name == "series" else c)
    rows = []
    for _, b in base.iterrows():
        cells = [
            b["series"],
            *([f"{b[ctx.x]:g}"] if ctx.x else []),
            *[fmt_param(p, b[p]) for p in shown_params],
            str(b["runs"]),
        ]
        for m in metrics:
            sel = tidy_df[(tidy_df["metric"] == m) & (tidy_df["series"] == b["series"])]
            if ctx.x:
                sel = sel[sel[ctx.x] == b[ctx.x]]
            r = sel.iloc[0]
            scale = units[m][1]
            cell = fmt_number(r["mean"], scale)
            if not math.isnan(r["half"]) and not math.isnan(r["mean"]):
                cell += f" ± {fmt_number(r['half'], scale)}"
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
    spawn = [s for m in mans if (s := m.get("seed_spawn_key")) is not None]
    seed_text = ", ".join(seeds) or "?"
    if spawn:
        reps = sorted({tuple(s) for s in spawn})
        seed_text += (
            f" (root SeedSequence; replications use spawned children "
            f"{', '.join(str(list(r)) for r in reps)})"
        )
    walls = [m.get("wall_s") or 0 for m in mans]
    rows = [
        ("results", str(res.root.resolve())),
        ("kind", "sweep" if res.is_sweep else "single run"),
        (
            "runs",
            f"{len(res.runs)} complete"
            + (f", {len(res.failed)} failed ({', '.join(res.failed[:5])})" if res.failed else "")
            + (
                f", {len(res.unreadable)} unreadable and left out ("
                + "; ".join(f"{r}: {why}" for r, why in res.unreadable[:5])
                + ")"
                if res.unreadable
                else ""
            ),
        ),
        ("designs", ", ".join(ctx.res.designs)),
        ("swept parameters", ", ".join(res.params) or "none"),
        ("desim version", ", ".join(uniq("desim_version")) or "?"),
        ("python", ", ".join(uniq("python")) or "?"),
        ("seeds", seed_text),
        ("command", " | ".join(cmds[:3]) + (f" (+{len(cmds) - 3} more)" if len(cmds) > 3 else "")),
        (
            "run dates (UTC)",
            f"{dates[0]} … {dates[-1]}" if len(dates) > 1 else (dates[0] if dates else "?"),
        ),
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
            out.append(
                {
                    "run": run_id,
                    "design": ctx.res.runs.set_index("run_id").loc[run_id, DESIGN],
                    **{k: v.get(k) for k in ("t_ns", "cpu", "kind", "message")},
                    "history": v.get("history") or [],
                }
            )
            if len(out) >= MAX_VIOLATIONS:
                return out
    return out
