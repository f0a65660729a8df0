"""Lock figure: contention and wait per lock class, against x (or per design without one).

From ``summary.json``'s ``lock.<class>.*``: ``contention_ratio`` (acquisitions that waited),
``wait_mean_ns`` (mean wait over *all* acquisitions, so it is the cost every caller pays on
average) and ``wait_p99_contended_ns`` (p99 among the waits that happened).
"""

from __future__ import annotations

import pandas as pd
from matplotlib.ticker import FuncFormatter

from desim.report.figures import Context, Fig, Skip
from desim.report.figures.latency import CUT_NOTE
from desim.report.figures.plot import bars_by_series, legend, vs_x
from desim.report.registry import figure
from desim.report.style import log_time_axis, ns_label, percent_axis, subplots

MAX_CLASSES = 5
ROWS = [
    ("contention_ratio", "acquisitions that waited", "percent"),
    ("wait_mean_ns", "mean wait per acquisition", "time"),
    ("wait_p99_contended_ns", "p99 wait when contended", "time"),
]


@figure("locks", group="locks", rank=30)
def locks(ctx: Context) -> Fig | Skip:
    title = "Lock contention and wait per lock class"
    runs = ctx.runs
    acq = {
        c[5:-13]: runs[c].fillna(0).sum()
        for c in runs.columns
        if c.startswith("lock.") and c.endswith(".acquisitions")
    }
    classes = [c for c, n in sorted(acq.items(), key=lambda kv: -kv[1]) if n > 0]
    if not classes:
        return Skip("locks", title, "no lock was taken in these runs")
    note = ""
    if len(classes) > MAX_CLASSES:
        note = (
            f" Showing the {MAX_CLASSES} most-acquired of {len(classes)} classes "
            f"(left out: {', '.join(classes[MAX_CLASSES:])})."
        )
        classes = classes[:MAX_CLASSES]
    if ctx.x is not None:
        title = f"Lock contention and wait vs {ctx.x_label}"
    runs = runs.copy()
    for cls in classes:
        # A p99 of the waits that happened does not exist where none happened: missing, not 0.
        cont = f"lock.{cls}.contended"
        col = f"lock.{cls}.wait_p99_contended_ns"
        if cont in runs and col in runs:
            runs[col] = runs[col].where(runs[cont] > 0)
    # One scale per row across lock classes, so panels side by side compare: a time row is
    # logarithmic only when every panel of it can be (vs x, every value positive).
    log_row = {}
    for metric, _what, kind in ROWS:
        cols = [f"lock.{cls}.{metric}" for cls in classes if f"lock.{cls}.{metric}" in runs]
        vals = (
            pd.concat(
                [
                    runs[c].fillna(0) if metric != "wait_p99_contended_ns" else runs[c].dropna()
                    for c in cols
                ]
            )
            if cols
            else pd.Series([])
        )
        log_row[metric] = (
            kind == "time" and ctx.x is not None and len(vals) > 0 and bool((vals > 0).all())
        )
    fig, axes = subplots(len(ROWS), len(classes), w=3.2, h=2.5)
    cut = False
    for c, cls in enumerate(classes):
        # Only designs that have this lock class are drawn: generic has no context.lock, and
        # drawing it at 0 would read as "uncontended". A design that has the class but did
        # not take it in some run counts 0 there; a p99 of waits with no wait stays empty.
        has = runs.groupby("series")[f"lock.{cls}.acquisitions"].transform(
            lambda v: v.notna().any()
        )
        sub = runs[has.astype(bool)]
        for r, (metric, what, kind) in enumerate(ROWS):
            ax = axes[r][c]
            col = f"lock.{cls}.{metric}"
            data = None
            if col in sub:
                data = (
                    sub
                    if metric == "wait_p99_contended_ns"
                    else sub.assign(**{col: sub[col].fillna(0)})
                )
            if data is None or not (data[col] > 0).any():
                ax.text(
                    0.5,
                    0.5,
                    "never contended",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="0.4",
                )
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                if ctx.x is not None:
                    cut |= vs_x(ax, ctx, data, col, log=log_row[metric])
                else:
                    bars_by_series(ax, ctx, data, col)
                if kind == "percent":
                    percent_axis(ax)
                    ax.set_ylim(bottom=0)
                elif log_row[metric]:
                    log_time_axis(ax, "y")
                else:
                    ax.yaxis.set_major_formatter(FuncFormatter(ns_label))
                    ax.set_ylim(bottom=0)
            if c == 0:
                ax.set_ylabel(what)
            if r == 0:
                ax.set_title(f"lock: {cls}")
            if r < len(ROWS) - 1:
                ax.set_xlabel("")
                if ctx.x is None:  # design names once, under the bottom row
                    ax.set_xticklabels([])
    legend(fig, ctx)
    fig.suptitle(title)
    scales = ", ".join(f"{what}: {'log' if log_row[m] else 'linear'}" for m, what, _k in ROWS)
    cap = (
        "Per lock class: the share of acquisitions that had to spin, the mean wait over all "
        "acquisitions, and the p99 of the waits that happened (missing, not 0, where a run "
        "had no contended acquisition). Means over replications with 95% CIs. One y scale "
        f"per row ({scales})." + (CUT_NOTE if cut else "") + note
    )
    return Fig("locks", title, cap, fig)
