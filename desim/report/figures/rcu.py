"""RCU figures: grace-period lengths, the callback backlog over time, free-to-reuse delay.

GP lengths are the raw spans of ``gp.parquet``; the backlog is ``cb_backlog`` of the time
series (callbacks queued and not yet invoked); free-to-reuse is the ``free_to_reuse``
histogram: from a table's free until its memory can serve another allocation, the delay RCU
deferral adds to memory reuse.
"""

from __future__ import annotations

from desim.report.figures import Context, Fig, Skip
from desim.report.figures.latency import ecdf_panels
from desim.report.figures.plot import band_line, legend, over_time, sample_ecdf
from desim.report.registry import figure
from desim.report.style import log_time_axis, subplots


@figure("gp_length", group="rcu", rank=40)
def gp_length(ctx: Context) -> Fig | Skip:
    title = "Grace-period length"
    gp = ctx.table("gp")
    if gp.empty:
        return Skip("gp_length", title, "no grace period completed (gp.parquet is empty)")
    gp = gp.assign(length=gp["end_ns"] - gp["start_ns"])
    panels, note = ctx.panel_values()
    by = ["series"] + ([ctx.x] if ctx.x else [])
    agg = sample_ecdf(gp, "length", by)
    fig, axes = subplots(1, len(panels), sharey=True)
    for ax, xv in zip(axes[0], panels, strict=True):
        a = ctx.subset(agg, xv)
        for s in ctx.series:
            g = a[a["series"] == s].sort_values("ns")
            if not g.empty:
                band_line(ax, g["ns"], g, ctx.colour(s), ctx.series_dash[s], step=True)
        log_time_axis(ax, "x")
        ax.set_ylim(0, 1.01)
        ax.set_title(ctx.panel_title(xv))
        ax.set_xlabel("grace-period length (log scale)")
    axes[0][0].set_ylabel("fraction of GPs ≤ x")
    legend(fig, ctx)
    fig.suptitle(title)
    n = len(gp)
    cap = (
        f"Empirical CDF of grace-period (GP) lengths, {n:,} GPs in all; a GP ends once every "
        "CPU has passed a quiescent state, noticed at scheduler ticks and force-quiescent-"
        "state scans, so lengths cluster at multiples of a jiffy. Bands are 95% CIs over "
        "replications."
    )
    return Fig("gp_length", title, cap + (f" ({note})" if note else ""), fig)


@figure("cb_backlog", group="rcu", rank=41)
def cb_backlog(ctx: Context) -> Fig | Skip:
    title = "RCU callback backlog over time"
    ts = ctx.table("timeseries")
    if ts.empty or "cb_backlog" not in ts:
        return Skip("cb_backlog", title, "no timeseries.parquet")
    panels, note = ctx.panel_values()
    by = ["series"] + ([ctx.x] if ctx.x else [])
    agg = over_time(ts, "cb_backlog", by)
    # The backlog swings every jiffy; overlaid designs with their bands turn to noise, so each
    # design gets its own row (same y scale) and x values go across.
    rows = ctx.series if len(ctx.series) <= 6 else [None]
    fig, axes = subplots(
        len(rows), len(panels), sharey=True, sharex=True, h=1.7 if len(rows) > 1 else 2.9
    )
    for r, only in enumerate(rows):
        for c, xv in enumerate(panels):
            ax = axes[r][c]
            a = ctx.subset(agg, xv)
            for s in ctx.series if only is None else [only]:
                g = a[a["series"] == s].sort_values("t_ns")
                if not g.empty:
                    band_line(ax, g["t_ns"] / 1e6, g, ctx.colour(s), ctx.series_dash[s])
            if r == 0:
                ax.set_title(ctx.panel_title(xv))
            if only is not None:
                ax.text(
                    0.01,
                    0.95,
                    only,
                    transform=ax.transAxes,
                    va="top",
                    fontsize=8,
                    color=ctx.colour(only),
                    fontweight="bold",
                )
            ax.set_xlabel("simulated time (ms)" if r == len(rows) - 1 else "")
            ax.set_ylim(bottom=0)
    fig.supylabel("callbacks queued, not yet invoked", fontsize=9)
    legend(fig, ctx)
    fig.suptitle(title)
    cap = (
        "RCU callbacks waiting (for their grace period, or for the softirq to invoke them), "
        "sampled every record.sample_interval; mean over replications with 95% CI band."
    )
    return Fig("cb_backlog", title, cap + (f" ({note})" if note else ""), fig)


@figure("free_to_reuse", group="rcu", rank=42)
def free_to_reuse(ctx: Context) -> Fig | Skip:
    return ecdf_panels(
        ctx,
        ["free_to_reuse"],
        "free_to_reuse",
        "Free-to-reuse delay",
        "Empirical CDF of the time from a page table's free until its memory can serve "
        "another allocation (log x axis): what RCU deferral adds to memory reuse.",
        xlabel="free-to-reuse delay",
    )
