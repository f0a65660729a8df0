"""Latency figures: ECDFs of fault / alloc / defer / exit per design, and p50 / p99 against x.

ECDFs are rebuilt from ``latency.parquet``'s log-binned histograms (100 bins per decade), so
they are exact to a bin's 2.3% width; p50 / p99 come from ``summary.json``.
"""

from __future__ import annotations

from matplotlib.lines import Line2D

from desim.report.figures import Context, Fig, Skip
from desim.report.figures.plot import band_line, hist_ecdf, legend, vs_x
from desim.report.registry import figure
from desim.report.style import log_time_axis, subplots

CUT_NOTE = (
    " A ▼ marks a confidence interval reaching 0 or below, which a log axis cannot "
    "show: its bar stops one decade under the mean."
)

OP_TITLES = {
    "fault": "page fault",
    "alloc": "table alloc (pte_alloc_one)",
    "free": "table free (to mmu_gather)",
    "defer": "pte_free_defer (khugepaged)",
    "exit": "process exit (exit_mmap)",
    "munmap": "munmap",
    "fork": "fork",
    "retract": "retract one table",
    "free_to_reuse": "free → reusable",
}


def ecdf_panels(
    ctx: Context, ops: list[str], name: str, title: str, caption: str, xlabel: str = "latency"
) -> Fig | Skip:
    h = ctx.table("latency")
    if h.empty:
        return Skip(name, title, "no latency.parquet")
    h = h[h["op"].isin(ops) & (h["count"] > 0)]
    present = [o for o in ops if o in set(h["op"])]
    if not present:
        return Skip(name, title, f"no {', '.join(ops)} samples in these runs")
    panels, note = ctx.panel_values()
    by = ["series", "op"] + ([ctx.x] if ctx.x else [])
    agg = hist_ecdf(h, by)
    # One row per x value and a column per operation; a single operation lays x out in a row.
    flat = len(present) == 1
    fig, axes = (
        subplots(1, len(panels), sharey=True)
        if flat
        else subplots(len(panels), len(present), sharey=True)
    )
    last_row = 0 if flat else len(panels) - 1
    for r, xv in enumerate(panels):
        for c, op in enumerate(present):
            ax = axes[0][r] if flat else axes[r][c]
            a = ctx.subset(agg[agg["op"] == op], xv)
            for s in ctx.series:
                g = a[a["series"] == s].sort_values("ns")
                if not g.empty:
                    band_line(ax, g["ns"], g, ctx.colour(s), ctx.series_dash[s], step=True)
            for q in (0.5, 0.99):
                ax.axhline(q, color="0.6", lw=0.6, ls=":", zorder=0)
            log_time_axis(ax, "x")
            ax.set_ylim(0, 1.01)
            t = "" if flat else OP_TITLES.get(op, op)
            ax.set_title("\n".join(v for v in (t, ctx.panel_title(xv)) if v), fontsize=9)
            ax.set_xlabel(f"{xlabel} (log scale)" if flat or r == last_row else "")
            if not len(a):
                ax.text(0.5, 0.5, "no samples", ha="center", transform=ax.transAxes)
        if not flat:
            axes[r][0].set_ylabel("fraction of operations ≤ x")
    axes[0][0].set_ylabel("fraction of operations ≤ x")
    legend(fig, ctx)
    fig.suptitle(title)
    cap = caption + (
        " Dotted lines mark the median (0.5) and p99 (0.99); bands are 95% CIs over replications."
    )
    if (h["lo_ns"] < 1).any():
        cap += " Operations that took no simulated time (below 1 ns) are drawn at the far left."
    return Fig(name, title, cap + (f" ({note})" if note else ""), fig)


@figure("latency_ecdf", group="latency", rank=20)
def latency_ecdf(ctx: Context) -> Fig | Skip:
    return ecdf_panels(
        ctx,
        list(ctx.spec.latency_ops),
        "latency_ecdf",
        "Latency distributions (ECDF)",
        "Empirical CDF of each operation's latency as its caller sees it, per design (log x axis).",
    )


@figure("latency_vs_x", group="latency", rank=21)
def latency_vs_x(ctx: Context) -> Fig | Skip:
    title = "Latency p50 / p99 vs swept parameter"
    if ctx.x is None:
        return Skip(
            "latency_vs_x",
            title,
            "no numeric parameter is swept (e.g. a single CPU "
            "count), so there is nothing to plot against",
        )
    ops = [
        o
        for o in ctx.spec.latency_ops
        if f"{o}.p99_ns" in ctx.runs and ctx.runs[f"{o}.p99_ns"].notna().any()
    ]
    if not ops:
        return Skip("latency_vs_x", title, "no latency percentiles in summary.json")
    title = f"Latency p50 / p99 vs {ctx.x_label}"
    fig, axes = subplots(1, len(ops))
    # A log axis cannot show 0: operations that took no simulated time are left out (and said so).
    cols = [f"{o}.{q}_ns" for o in ops for q in ("p50", "p99")]
    runs = ctx.runs.assign(**{c: ctx.runs[c].where(ctx.runs[c] > 0) for c in cols})
    zeros = sorted({c.split(".")[0] for c in cols if (ctx.runs[c] == 0).any()})
    cut = False
    for ax, op in zip(axes[0], ops, strict=True):
        cut |= vs_x(ax, ctx, runs, f"{op}.p50_ns", dash_override="-", marker="o", log=True)
        cut |= vs_x(ax, ctx, runs, f"{op}.p99_ns", dash_override="--", marker="s", log=True)
        log_time_axis(ax, "y")
        ax.set_title(OP_TITLES.get(op, op), fontsize=9)
    axes[0][0].set_ylabel("latency (log scale)")
    extra = [
        Line2D([], [], color="0.3", ls="-", marker="o", label="p50 (median)"),
        Line2D([], [], color="0.3", ls="--", marker="s", label="p99"),
    ]
    legend(fig, ctx, extra=extra)
    fig.suptitle(title)
    cap = (
        f"Median (solid) and 99th percentile (dashed) latency against {ctx.x_label}; "
        "points are means over replications, error bars 95% CIs."
    )
    if cut:
        cap += CUT_NOTE
    if zeros:
        cap += (
            f" Percentiles of 0 ns ({', '.join(zeros)}: no simulated time spent, e.g. a "
            "design whose deferral only queues work) cannot sit on the log axis and are "
            "not drawn."
        )
    return Fig("latency_vs_x", title, cap, fig)
