"""Safety figure: violations the checker found, per design and kind (only when there are any).

Counts are ``summary.json``'s ``safety.<kind>`` summed over a point's replications; the report's
table under the figures lists the first violation messages with their object histories.
"""

from __future__ import annotations

import numpy as np

from desim.report.figures import Context, Fig, Skip
from desim.report.figures.plot import legend
from desim.report.registry import figure
from desim.report.style import subplots

KIND_LABELS = {
    "use_after_free": "use after free",
    "lock_in_freed_page": "lock in freed page",
    "rcu_head_reuse": "rcu_head reused",
    "callback_freed_mm": "callback on freed mm",
    "double_free": "double free",
    "invariant": "invariant broken",
}


def kinds_in(runs) -> list[str]:
    return [
        c[7:]
        for c in runs.columns
        if c.startswith("safety.")
        and c != "safety.violations"
        and np.issubdtype(runs[c].dtype, np.number)
    ]


@figure("safety", group="safety", rank=50)
def safety(ctx: Context) -> Fig | Skip:
    title = "Safety violations"
    runs = ctx.runs
    if "safety.violations" not in runs:
        return Skip("safety", title, "the safety checker was off in these runs")
    total = int(runs["safety.violations"].fillna(0).sum())
    if total == 0:
        return Skip("safety", title, f"no violation in {len(runs)} run(s): nothing to plot")
    kinds = [k for k in kinds_in(runs) if runs[f"safety.{k}"].fillna(0).sum() > 0]
    panels, note = ctx.panel_values()
    fig, axes = subplots(1, len(panels), sharey=True, w=max(2.2 + 0.9 * len(kinds), 3.6))
    names = [s for s in ctx.series]
    width = 0.8 / max(len(names), 1)
    for ax, xv in zip(axes[0], panels, strict=True):
        sub = ctx.subset(runs, xv)
        pos = np.arange(len(kinds))
        for i, s in enumerate(names):
            g = sub[sub["series"] == s]
            counts = [g[f"safety.{k}"].fillna(0).sum() for k in kinds]
            bars = ax.bar(
                pos + (i - (len(names) - 1) / 2) * width, counts, width=width, color=ctx.colour(s)
            )
            ax.bar_label(
                bars, labels=[f"{c:,.0f}" if c else "" for c in counts], fontsize=7, padding=1
            )
        ax.set_xticks(pos)
        ax.set_xticklabels([KIND_LABELS.get(k, k) for k in kinds], rotation=25, ha="right")
        ax.set_title(ctx.panel_title(xv))
        # Counts span orders of magnitude (one use-after-free vs thousands of rcu_head reuses):
        # a log axis keeps the small ones visible.
        pos_counts = [v for c in (f"safety.{k}" for k in kinds) for v in sub[c].fillna(0) if v > 0]
        if pos_counts and max(pos_counts) / min(pos_counts) > 30:
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.7)
    axes[0][0].set_ylabel("violations (sum over replications)")
    legend(fig, ctx)
    fig.suptitle(title)
    cap = (
        f"{total:,} violations found by the safety checker in {len(runs)} runs, by kind and "
        "design (summed over replications). Designs with no bar had none."
    )
    return Fig("safety", title, cap + (f" ({note})" if note else ""), fig)
