"""One look for every figure: seaborn theme, a fixed colour per design, units on every axis.

A design keeps its colour in every figure of every report (the palette is keyed by the YAML
name, not by order of appearance), so a reader who learns "s390 is red" once can rely on it.
Families share a hue: powerpc variants are blues, s390 variants reds, the unsafe controls
warm greys/browns. A design not listed gets a stable colour from its name.
"""

from __future__ import annotations

import hashlib
import math

import matplotlib

matplotlib.use("Agg")  # reports are written to files; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

DESIGN_COLOURS = {
    "generic": "#3a3a3a",
    "sparc64": "#8c8c8c",
    "powerpc": "#1f5fa8",
    "powerpc-refcount": "#5aa3e0",
    "powerpc-always-rcu": "#0b2f5c",
    "s390": "#c8312b",
    "s390-hh": "#f08a7e",
    "s390-fullpage": "#7a1610",
    "percpu-pool": "#2e9c4a",
    "unsafe-immediate": "#e08a00",
    "unsafe-shared-rcuhead": "#8e5bb5",
    "unsafe-callback-mm": "#a0703c",
}
_SPARE = ["#17becf", "#bcbd22", "#e377c2", "#7f7f7f", "#9edae5", "#dbdb8d", "#c49c94"]

# The memory split of desim.model.memory's Account, in stacking order (bottom first).
KIND_COLOURS = {
    "live": "#59a14f",
    "pending": "#f28e2b",
    "stranded": "#e15759",
    "spare": "#76b7b2",
    "internal": "#b07aa1",
    "tlb_batch": "#9c755f",
}
KIND_NOTES = {
    "live": "tables in use",
    "pending": "freed, waiting for a grace period",
    "stranded": "free but not reusable",
    "spare": "free and reusable",
    "internal": "never usable (e.g. a 2 KiB table in a 4 KiB page)",
    "tlb_batch": "mmu_gather batch pages, held until the batch's grace period",
}

GLOSSARY = {
    "GP": "RCU grace period: until every CPU has passed a quiescent state",
    "p50 / p99": "median / 99th percentile",
    "CI": "95% confidence interval of the mean over replications (Student t)",
    "ECDF": "empirical cumulative distribution: fraction of operations at most x",
    "waste": "bytes held in page-table pages minus bytes of live tables",
    "ptl": "the split page-table lock inside a table's struct page",
    "fault": "a minor page fault (lockless walk, ptl, pte_same re-check)",
    "alloc": "pte_alloc_one: allocating one page table",
    "defer": "pte_free_defer as khugepaged sees it when retracting a table",
    "exit": "exit_mmap: tearing down a process's page tables",
    "free-to-reuse": "from a table's free until its memory can serve again",
    "contention": "fraction of lock acquisitions that had to wait",
}

PANEL_W = 3.6
PANEL_H = 2.9


def design_colour(name: str) -> str:
    c = DESIGN_COLOURS.get(name)
    if c is None:
        h = int(hashlib.sha1(name.encode()).hexdigest(), 16)
        c = _SPARE[h % len(_SPARE)]
    return c


def palette(designs) -> dict[str, str]:
    return {d: design_colour(d) for d in designs}


def apply_theme() -> None:
    sns.set_theme(
        context="notebook",
        style="whitegrid",
        font_scale=0.85,
        rc={
            "figure.dpi": 100,
            "savefig.dpi": 120,
            "axes.titlesize": 10,
            "axes.titleweight": "bold",
            "legend.fontsize": 8,
            "legend.title_fontsize": 8,
            "svg.fonttype": "none",
        },
    )


def subplots(
    nrows: int, ncols: int, sharex=False, sharey=False, w=PANEL_W, h=PANEL_H, legend_w: float = 1.8
):
    # Constrained layout keeps the figure title, panel titles, tick labels and the legend
    # (placed "outside right") from overlapping.
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(min(w * ncols + legend_w, 16), h * nrows + 0.5),
        squeeze=False,
        sharex=sharex,
        sharey=sharey,
        layout="constrained",
    )
    return fig, axes


# -- units ---------------------------------------------------------------------------------
def ns_label(ns: float, _pos=None) -> str:
    """Tick label for a time in ns: ``100 ns``, ``2 µs``, ``30 ms``."""
    if ns <= 0 or not math.isfinite(ns):
        return "0"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3), ("ns", 1)):
        if ns >= scale:
            v = ns / scale
            return f"{v:.0f} {unit}" if v >= 10 or v == int(v) else f"{v:.1f} {unit}"
    return f"{ns:.2g} ns"


def log_time_axis(ax, axis: str = "x", min_decades: float = 1.0) -> None:
    """A log time axis in ns data, labelled with units (call after plotting).

    The axis spans at least ``min_decades`` decades around the data: a single value (all of an
    operation's samples in one histogram bin) sits in a readable decade instead of an axis so
    narrow that its tick labels repeat ("30 ns 30 ns 30 ns"). Ticks thin out as the span
    grows, so labels never run together.
    """
    getattr(ax, f"set_{axis}scale")("log")
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    if lo > 0 and hi > 0 and math.log10(hi / lo) < min_decades:
        mid = math.sqrt(lo * hi)
        half = 10 ** (min_decades / 2)
        lo, hi = mid / half, mid * half
        (ax.set_xlim if axis == "x" else ax.set_ylim)(lo, hi)
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    subs = (1.0, 2.0, 5.0) if decades < 1.6 else (1.0, 3.0) if decades < 3.2 else (1.0,)
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(LogLocator(base=10, subs=subs, numticks=8))
    a.set_major_formatter(FuncFormatter(ns_label))
    a.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10)), numticks=12))
    a.set_minor_formatter(NullFormatter())


def bytes_unit(max_bytes: float) -> tuple[float, str]:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if max_bytes >= 2 * scale:
            return float(scale), unit
    return 1.0, "B"


def percent_axis(ax, axis: str = "y") -> None:
    a = ax.yaxis if axis == "y" else ax.xaxis
    a.set_major_formatter(FuncFormatter(lambda v, _p: f"{100 * v:.3g}%"))


def param_label(key: str) -> str:
    """Axis label for a swept dotted key, with its unit where the key implies one."""
    known = {
        "machine.cpus": "CPUs",
        "machine.page_size": "page size (bytes)",
        "machine.hz": "HZ (ticks/s)",
        "rcu.blimit": "RCU callbacks per softirq batch (blimit)",
    }
    return known.get(key, key)
