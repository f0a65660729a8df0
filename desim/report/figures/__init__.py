"""Figure builders and what they share: the run table resolved into series, x axis and panels.

Each builder takes a ``Context`` and returns a ``Fig`` (a matplotlib figure with its title and
caption) or a ``Skip`` (why the figure does not apply to these results, shown in the report).

Vocabulary: a *series* is one line or bar: a design, plus any swept parameter that varies
independently of the design and is not on the x axis (``generic · rcu.blimit=100``). Parameters
that move with the design (quick.yaml gives powerpc 64 KiB pages) do not split series. Lines of
one design share its colour; extra parameters get dash styles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from desim.report.load import DESIGN, Results
from desim.report.spec import ReportSpec
from desim.report.style import design_colour, param_label

MAX_PANELS = 4
DASHES = ["-", "--", ":", "-."]


@dataclass
class Fig:
    name: str
    title: str
    caption: str
    figure: object


@dataclass
class Skip:
    name: str
    title: str
    reason: str


@dataclass
class Context:
    res: Results
    spec: ReportSpec
    x: str | None = None
    xvals: list = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    series: list[str] = field(default_factory=list)
    series_design: dict[str, str] = field(default_factory=dict)
    series_dash: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, res: Results, spec: ReportSpec) -> Context:
        ctx = cls(res=res, spec=spec)
        runs = res.runs.copy()
        others = [p for p in res.params if p != DESIGN]
        ctx.x = ctx._choose_x(runs, others)
        if ctx.x is not None:
            runs = runs[pd.to_numeric(runs[ctx.x], errors="coerce").notna()].copy()
            runs[ctx.x] = pd.to_numeric(runs[ctx.x])
            ctx.xvals = sorted(runs[ctx.x].unique().tolist())
        # Parameters that vary within one design (and are not x) split series.
        ctx.extra = [
            p
            for p in others
            if p != ctx.x and (runs.groupby(DESIGN)[p].nunique(dropna=False) > 1).any()
        ]
        for p in others:
            if p != ctx.x and p not in ctx.extra and runs[p].nunique(dropna=False) > 1:
                per = runs.groupby(DESIGN, sort=False)[p].first()
                ctx.notes.append(
                    f"{p} is set per design: " + ", ".join(f"{d} {v}" for d, v in per.items()) + "."
                )
        # A series is named by what differs from its design's most common setting (the
        # headline point of a sensitivity sweep), not by every swept value: labels stay short
        # enough to read under a bar, and still tell every series apart.
        runs["series"] = runs[DESIGN].astype(str)
        for p in ctx.extra:
            text = runs[p].map(str)  # plain strings: a missing value is one too
            modal = text.groupby(runs[DESIGN]).transform(
                lambda v: v.value_counts(sort=True, dropna=False).index[0]
            )
            runs["series"] += np.where(text != modal, " · " + p + "=" + text, "")
        ctx.runs = runs
        ctx.series = list(dict.fromkeys(runs.sort_values([DESIGN, *ctx.extra])["series"]))
        ctx.series_design = dict(zip(runs["series"], runs[DESIGN], strict=True))
        seen: dict[str, int] = {}
        for s in ctx.series:
            d = ctx.series_design[s]
            ctx.series_dash[s] = DASHES[seen.get(d, 0) % len(DASHES)]
            seen[d] = seen.get(d, 0) + 1
        return ctx

    def label_ticks(self, ax, names: list[str]) -> None:
        """Series names under bars, one line per part (design, then each differing setting
        by the last part of its key: ``placement=migrating``), coloured as the series."""
        shown = [
            "\n".join(
                [
                    parts[0],
                    *(
                        q.split("=", 1)[0].rsplit(".", 1)[-1] + "=" + q.split("=", 1)[1]
                        for q in parts[1:]
                    ),
                ]
            )
            for parts in (n.split(" · ") for n in names)
        ]
        tilt = len(names) > 3 or max((len(x) for t in shown for x in t.split("\n")), default=0) > 10
        if tilt and any("\n" in t for t in shown):
            # several lines each: upright columns, which never run into their neighbours
            ax.set_xticklabels(shown, rotation=90, ha="center", va="top", fontsize="small")
        else:
            ax.set_xticklabels(shown, rotation=30 if tilt else 0, ha="right" if tilt else "center")
        for lab, s in zip(ax.get_xticklabels(), names, strict=True):
            lab.set_color(self.colour(s))

    def _choose_x(self, runs: pd.DataFrame, candidates: list[str]) -> str | None:
        def numeric_varying(k):
            v = pd.to_numeric(runs[k], errors="coerce")
            return v.notna().all() and v.nunique() > 1

        want = self.spec.x
        if want is not None:
            if want not in runs:
                self.notes.append(
                    f"report.x = {want!r} is not a parameter of these runs; "
                    "figures against it are skipped."
                )
                return None
            if not numeric_varying(want):
                self.notes.append(
                    f"report.x = {want!r} does not take two or more numeric "
                    "values here; figures against it are skipped."
                )
                return None
            return want
        # Default: CPUs if swept, else the first numeric key that varies within a design.
        order = sorted(candidates, key=lambda k: k != "machine.cpus")
        for k in order:
            if numeric_varying(k) and (runs.groupby(DESIGN)[k].nunique() > 1).any():
                return k
        return None

    # -- helpers for builders ----------------------------------------------------------------
    @property
    def x_label(self) -> str:
        return param_label(self.x) if self.x else ""

    @property
    def replicated(self) -> bool:
        keys = ["series"] + ([self.x] if self.x else [])
        return bool((self.runs.groupby(keys).size() > 1).any())

    def colour(self, series: str) -> str:
        return design_colour(self.series_design.get(series, series))

    def table(self, name: str) -> pd.DataFrame:
        df = self.res.table(name)
        if df.empty:
            return df
        cols = ["run_id", "series"] + ([self.x] if self.x else [])
        return df.drop(columns=[c for c in cols[1:] if c in df]).merge(
            self.runs[cols], on="run_id", how="inner"
        )

    def panel_values(self) -> tuple[list, str | None]:
        """The x values that get one panel each in per-point figures (at most MAX_PANELS)."""
        if self.x is None:
            return [None], None
        vals = self.xvals
        if len(vals) <= MAX_PANELS:
            return vals, None
        idx = np.unique(np.linspace(0, len(vals) - 1, MAX_PANELS).round().astype(int))
        shown = [vals[i] for i in idx]
        return shown, (
            f"showing {self.x_label} = {', '.join(map(_fmt, shown))} of {len(vals)} values"
        )

    def panel_title(self, xv) -> str:
        return "" if xv is None else f"{self.x_label} = {_fmt(xv)}"

    def subset(self, df: pd.DataFrame, xv) -> pd.DataFrame:
        return df if xv is None else df[df[self.x] == xv]


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, int | float | np.integer | np.floating) else str(v)
