"""Memory figures: where page-table bytes go (live / pending / stranded / spare / internal),
waste (held − live) over time, and waste against the swept parameter.

Figures come from ``summary.json`` (time-weighted means, and "peaks" that are the largest of the
samples taken every ``record.sample_interval``, not exact maxima) and ``timeseries.parquet``;
the split is the allocator's ``account`` as sampled every ``record.sample_interval``.
"""

from __future__ import annotations

import numpy as np
from matplotlib.patches import Patch

from desim.report.figures import Context, Fig, Skip
from desim.report.figures.plot import band_line, legend, over_time, vs_x
from desim.report.registry import figure
from desim.report.style import (
    KIND_COLOURS,
    KIND_NOTES,
    bytes_unit,
    subplots,
)
from desim.stats import mean_ci

KINDS = list(KIND_COLOURS)


@figure("memory_split", group="memory", rank=10)
def memory_split(ctx: Context) -> Fig | Skip:
    title = "Page-table memory by kind"
    cols = [f"mem.{k}.mean_bytes" for k in KINDS]
    runs = ctx.runs
    if not all(c in runs for c in cols):
        return Skip("memory_split", title, "summary.json has no mem.<kind>.mean_bytes")
    panels, note = ctx.panel_values()
    held = runs[cols].sum(axis=1).max()
    scale, unit = bytes_unit(held)
    fig, axes = subplots(
        1, len(panels), sharey=True, w=max(1.3 + 0.75 * len(ctx.series), 3.2), legend_w=3.9
    )
    for ax, xv in zip(axes[0], panels, strict=True):
        sub = ctx.subset(runs, xv).assign(total=lambda d: d[cols].sum(axis=1))
        names = [s for s in ctx.series if s in set(sub["series"])]
        pos = np.arange(len(names))
        bottom = np.zeros(len(names))
        for k, c in zip(KINDS, cols, strict=True):
            m = sub.groupby("series")[c].mean().reindex(names).to_numpy() / scale
            ax.bar(pos, m, bottom=bottom, color=KIND_COLOURS[k], width=0.7, label=k)
            bottom += m
        tot = mean_ci(sub, ["series"], "total").set_index("series").reindex(names)
        if tot["half"].notna().any():
            ax.errorbar(
                pos,
                tot["mean"] / scale,
                yerr=tot["half"].fillna(0) / scale,
                fmt="none",
                ecolor="black",
                capsize=3,
                lw=1,
            )
        ax.set_xticks(pos)
        ctx.label_ticks(ax, names)
        ax.set_title(ctx.panel_title(xv))
    axes[0][0].set_ylabel(f"mean bytes held ({unit})")
    fig.legend(
        handles=[
            Patch(color=KIND_COLOURS[k], label=f"{k}: {KIND_NOTES[k]}") for k in reversed(KINDS)
        ],
        loc="outside right center",
        frameon=False,
        title="memory kind",
    )
    fig.suptitle(title)
    cap = (
        "Time-weighted mean bytes held in page-table pages, split by what they hold; "
        "stacked bars are the mean over replications, the error bar the 95% CI of their total."
    )
    return Fig("memory_split", title, cap + (f" ({note})" if note else ""), fig)


@figure("waste_time", group="memory", rank=11)
def waste_time(ctx: Context) -> Fig | Skip:
    title = "Waste over time"
    ts = ctx.table("timeseries")
    if ts.empty or "held" not in ts:
        return Skip("waste_time", title, "no timeseries.parquet")
    ts = ts.assign(waste=ts["held"] + ts.get("tlb_batch", 0) - ts["live"])
    panels, note = ctx.panel_values()
    by = ["series"] + ([ctx.x] if ctx.x else [])
    agg = over_time(ts, "waste", by)
    scale, unit = bytes_unit(agg["hi"].fillna(agg["mean"]).max())
    fig, axes = subplots(1, len(panels), sharey=True)
    for ax, xv in zip(axes[0], panels, strict=True):
        a = ctx.subset(agg, xv)
        for s in ctx.series:
            g = a[a["series"] == s].sort_values("t_ns")
            if g.empty:
                continue
            g = g.assign(mean=g["mean"] / scale, lo=g["lo"] / scale, hi=g["hi"] / scale)
            band_line(ax, g["t_ns"] / 1e6, g, ctx.colour(s), ctx.series_dash[s])
        ax.set_title(ctx.panel_title(xv))
        ax.set_xlabel("simulated time (ms)")
        ax.set_ylim(bottom=0)
    axes[0][0].set_ylabel(f"waste: held − live ({unit})")
    legend(fig, ctx)
    fig.suptitle(title)
    cap = (
        "Bytes held in page-table pages beyond the live tables (pending + stranded + spare + "
        "internal), plus mmu_gather batch pages, after warm-up; line = mean over replications, band = 95% CI."
    )
    return Fig("waste_time", title, cap + (f" ({note})" if note else ""), fig)


@figure("waste_vs_x", group="memory", rank=12)
def waste_vs_x(ctx: Context) -> Fig | Skip:
    title = "Waste vs swept parameter"
    if ctx.x is None:
        return Skip(
            "waste_vs_x",
            title,
            "no numeric parameter is swept (a single point or designs only), so there is no x axis",
        )
    runs = ctx.runs
    need = ["mem.overhead.mean_bytes", "mem.overhead.peak_bytes"]
    if not all(c in runs for c in need):
        return Skip("waste_vs_x", title, "summary.json has no mem.overhead.*")
    title = f"Waste vs {ctx.x_label}"
    scale, unit = bytes_unit(runs["mem.overhead.peak_bytes"].max())
    fig, axes = subplots(1, 2)
    for ax, col, what in zip(axes[0], need, ("time-weighted mean", "peak"), strict=True):
        vs_x(ax, ctx, runs, col, scale=scale)
        ax.set_ylabel(f"waste, {what} ({unit})")
        ax.set_title(f"{what} waste")
        ax.set_ylim(bottom=0)
    legend(fig, ctx)
    fig.suptitle(title)
    cap = (
        f"Waste (page-table bytes beyond the live tables, mmu_gather batch pages included) "
        f"against {ctx.x_label}; points are means over replications, error bars 95% CIs. "
        "The right panel is each run's exact peak since the warm-up."
    )
    return Fig("waste_vs_x", title, cap, fig)
