"""Drawing helpers shared by the figure builders: ECDFs with bands, series over time, vs-x lines.

Bands and error bars are the 95% t interval of the mean over replications (``desim.stats``);
with a single run per point they are simply absent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from desim.report.figures import Context
from desim.stats import mean_ci

MAX_TIME_POINTS = 400
ECDF_GRID = 200


def hist_ecdf(h: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """ECDF per run from log-binned histograms, then mean ± CI across runs of each ``by`` group.

    ``h`` has run_id, ``by`` columns, lo_ns, hi_ns, count. The ECDF is a step function: 0 up to
    the group's first bin, then at each bin's upper edge the fraction of samples at most that
    edge (exact there; a bin is 2.3% wide). Draw it with ``step=True``: a single bin is one
    vertical step, not a slope that makes one value look like a spread. A last point a little
    right of the top edge keeps the line at 1 visible. Samples below 1 ns (the histogram's
    first bin, operations that took no simulated time) are drawn at 0.5-1 ns. Returns by + ns,
    mean, lo, hi.
    """
    out = []
    for key, g in h.groupby(by, sort=False):
        edges = np.unique(g["hi_ns"].to_numpy(dtype=float))
        first = max(float(g["lo_ns"].min()), 0.5)
        grid = np.concatenate([[min(first, edges[0] * 0.98)], edges, [edges[-1] * 1.05]])
        rows = []
        for run_id, r in g.groupby("run_id"):
            # pandas-stubs type a column of an as_index=False groupby as a Series: a DataFrame
            r = r.groupby("hi_ns", as_index=False)["count"].sum().sort_values("hi_ns")  # type: ignore[call-overload]
            his = r["hi_ns"].to_numpy()
            cum = np.cumsum(r["count"].to_numpy(dtype=float))
            idx = np.searchsorted(his, grid * (1 + 1e-12), side="right") - 1
            f = np.where(idx >= 0, cum[np.clip(idx, 0, None)], 0.0) / cum[-1]
            rows.append(pd.DataFrame({"run_id": run_id, "ns": grid, "F": f}))
        agg = mean_ci(pd.concat(rows), ["ns"], "F")
        keys: tuple[Any, ...] = key if isinstance(key, tuple) else (key,)
        for k, v in zip(by, keys, strict=True):
            agg[k] = v
        out.append(agg)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def sample_ecdf(df: pd.DataFrame, value: str, by: list[str], log: bool = True) -> pd.DataFrame:
    """ECDF of raw samples per run on a common grid, then mean ± CI across runs per group."""
    out = []
    v = df[value].to_numpy(dtype=float)
    v = v[np.isfinite(v) & (v > 0)] if log else v[np.isfinite(v)]
    if not len(v):
        return pd.DataFrame()
    lo, hi = v.min(), v.max()
    # The ECDF steps exactly at the distinct values (few: GP lengths cluster at jiffies), or
    # on a fine grid when there are many; one point just left of the smallest, where the ECDF
    # is still 0, and one right of the largest, so the steps up and the line at 1 show.
    distinct = np.unique(v)
    grid = (
        distinct
        if len(distinct) <= 4 * ECDF_GRID
        else np.geomspace(lo, hi, ECDF_GRID)
        if log and hi > lo
        else np.linspace(lo, hi, ECDF_GRID)
    )
    pad = 0.03 * (hi - lo or abs(hi) or 1)
    grid = np.concatenate(
        [[lo * 0.97 if log else lo - pad], grid, [hi * 1.03 if log else hi + pad]]
    )
    for key, g in df.groupby(by, sort=False):
        rows = []
        for run_id, r in g.groupby("run_id"):
            s = np.sort(r[value].to_numpy(dtype=float))
            if len(s):
                rows.append(
                    pd.DataFrame(
                        {
                            "run_id": run_id,
                            "ns": grid,
                            "F": np.searchsorted(s, grid, side="right") / len(s),
                        }
                    )
                )
        if not rows:
            continue
        agg = mean_ci(pd.concat(rows), ["ns"], "F")
        keys: tuple[Any, ...] = key if isinstance(key, tuple) else (key,)
        for k, val in zip(by, keys, strict=True):
            agg[k] = val
        out.append(agg)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def over_time(ts: pd.DataFrame, value: str, by: list[str]) -> pd.DataFrame:
    """Mean ± CI across runs of ``value`` at each sample time (coarsened to ≤ 400 points)."""
    ts = ts[["run_id", "t_ns", value, *by]].copy()
    span = ts["t_ns"].max() - ts["t_ns"].min()
    n_t = ts["t_ns"].nunique()
    if n_t > MAX_TIME_POINTS and span > 0:
        step = span / MAX_TIME_POINTS
        t0 = ts["t_ns"].min()
        ts["t_ns"] = t0 + ((ts["t_ns"] - t0) // step) * step
        # pandas-stubs type a column of an as_index=False groupby as a Series: a DataFrame
        ts = ts.groupby(["run_id", *by, "t_ns"], as_index=False)[value].mean()  # type: ignore[assignment]
    return mean_ci(ts, [*by, "t_ns"], value)


def legend(fig, ctx: Context, extra=None, title: str = "design") -> None:
    """One legend for the whole figure, right of the panels: series in their design colours."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=ctx.colour(s), ls=ctx.series_dash[s], lw=2, label=s)
        for s in ctx.series
    ]
    fig.legend(
        handles=handles + list(extra or []), title=title, loc="outside right center", frameon=False
    )


def band_line(
    ax, x, agg: pd.DataFrame, colour: str, dash: str = "-", label=None, step: bool = False
) -> None:
    kw = {"drawstyle": "steps-post"} if step else {}
    ax.plot(x, agg["mean"], color=colour, ls=dash, lw=1.6, label=label, **kw)
    if (agg["hi"] - agg["lo"]).abs().fillna(0).sum() > 0:
        ax.fill_between(
            x,
            agg["lo"].clip(lower=0),
            agg["hi"],
            color=colour,
            alpha=0.15,
            lw=0,
            step="post" if step else None,
        )


def vs_x(
    ax,
    ctx: Context,
    data: pd.DataFrame,
    value: str,
    scale: float = 1.0,
    dash_override: str | None = None,
    marker: str = "o",
    label_suffix: str = "",
    log: bool = False,
) -> bool:
    """Mean ± CI of run metric ``value`` against ctx.x, one line per series.

    With ``log`` (the caller makes the axis logarithmic), an interval reaching 0 or below, which
    a log axis cannot show, is cut one decade under its mean and marked there with a ▼, rather
    than silently losing its lower half. Returns whether any interval was cut.
    """
    assert ctx.x is not None  # drawn only for results with an x axis
    cut_any = False
    agg = mean_ci(data, ["series", ctx.x], value)
    # Dodge series sideways a little so identical values (and their error bars) stay visible.
    gaps = np.diff(ctx.xvals)
    step = 0.025 * (gaps.min() if len(gaps) else 1.0)
    for i, s in enumerate(ctx.series):
        a = agg[agg["series"] == s].sort_values(ctx.x)
        a = a.assign(**{ctx.x: a[ctx.x] + (i - (len(ctx.series) - 1) / 2) * step})
        a = a[a["mean"].notna()]
        if a.empty:
            continue
        yerr = None
        if a["half"].notna().any():
            half = a["half"].fillna(0).to_numpy() / scale
            mean = a["mean"].to_numpy() / scale
            lower = half
            if log:
                cut = mean - half <= 0
                lower = np.where(cut, mean - mean / 10, half)
                if cut.any():
                    cut_any = True
                    ax.plot(
                        a[ctx.x][cut],
                        mean[cut] / 10,
                        ls="none",
                        marker="v",
                        ms=5,
                        color=ctx.colour(s),
                    )
            yerr = np.vstack([lower, half])
        ax.errorbar(
            a[ctx.x],
            a["mean"] / scale,
            yerr=yerr,
            color=ctx.colour(s),
            ls=dash_override or ctx.series_dash[s],
            marker=marker,
            ms=4,
            lw=1.5,
            capsize=3,
            label=s + label_suffix,
        )
    if len(ctx.xvals) <= 8:
        ax.set_xticks(ctx.xvals)
        ax.set_xticklabels([f"{v:g}" for v in ctx.xvals])
    ax.set_xlabel(ctx.x_label)
    return cut_any


def bars_by_series(ax, ctx: Context, data: pd.DataFrame, value: str, scale: float = 1.0) -> None:
    """Mean ± CI of run metric ``value`` as one bar per series (results with no x axis)."""
    agg = mean_ci(data, ["series"], value).set_index("series")
    names = [s for s in ctx.series if s in agg.index]
    means = [agg["mean"][s] / scale for s in names]
    halves = [agg["half"][s] / scale for s in names]
    yerr = None if all(np.isnan(h) for h in halves) else np.nan_to_num(halves)
    pos = np.arange(len(names))
    ax.bar(pos, means, yerr=yerr, color=[ctx.colour(s) for s in names], capsize=3, width=0.7)
    pad = 0.5 if len(names) < 3 else 0.0  # a lone bar should not fill the panel
    ax.set_xlim(-0.5 - pad, len(names) - 0.5 + pad)
    ax.set_xticks(pos)
    ctx.label_ticks(ax, names)
    ax.set_xlabel("")
