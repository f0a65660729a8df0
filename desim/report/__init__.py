"""``desim report RESULTS_DIR``: figures and tables from finished runs, as one offline HTML file.

Reads a single run directory or a sweep's (``desim.report.load``), resolves which figures to draw
from the experiment's ``report:`` section (``desim.report.spec``), draws each with one seaborn
style and one colour per design (``desim.report.style``, ``desim.report.figures``), and writes::

    <out>/report.html      self-contained: figures embedded, CSS inline, no network
    <out>/<figure>.png     each figure, also as
    <out>/<figure>.svg
    <out>/headline.csv     mean, CI and n of the headline metrics per design and sweep point

Pure pandas + matplotlib/seaborn + jinja2: it never imports simpy and never re-runs the model.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt

from desim.report import tables
from desim.report.figures import Context, Fig, Skip
from desim.report.html import render
from desim.report.load import Results, ResultsError, load
from desim.report.registry import FIGURES
from desim.report.spec import ReportSpec, ReportSpecError, parse_spec
from desim.report.style import GLOSSARY, apply_theme, design_colour
from desim.rundir import REPORT, RunDirError, Staging, check_target

__all__ = ["Report", "ReportSpecError", "ResultsError", "make_report"]


@dataclass
class Report:
    out: Path
    html: Path
    figures: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def _spec_for(res: Results, spec_file: str | Path | None) -> ReportSpec:
    if spec_file is not None:
        import yaml

        try:
            data = yaml.safe_load(Path(spec_file).read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ReportSpecError(
                f"{spec_file}: cannot read it ({' '.join(str(exc).split())})"
            ) from None
        if not isinstance(data, dict):
            raise ReportSpecError(f"{spec_file}: the top level must be a mapping")
        return parse_spec(data.get("report") if "report" in data else data, f"{spec_file}: report")
    if res.experiment is not None:
        return parse_spec(res.experiment.get("report"), "experiment.yaml: report")
    return ReportSpec()


def _save(fig, out: Path, name: str) -> str:
    fig.savefig(out / f"{name}.svg")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    png = buf.getvalue()
    (out / f"{name}.png").write_bytes(png)
    plt.close(fig)
    return base64.b64encode(png).decode("ascii")


def make_report(
    results_dir: str | Path, out: str | Path | None = None, spec_file: str | Path | None = None
) -> Report:
    """Write the report of ``results_dir`` to ``out`` (default ``<results_dir>/report``)."""
    t0 = time.perf_counter()
    res = load(results_dir)
    spec = _spec_for(res, spec_file)
    outdir = Path(out) if out is not None else Path(results_dir) / "report"
    try:
        check_target(outdir, "report")
        staging = Staging.begin(outdir)
    except RunDirError as exc:
        raise ResultsError(str(exc)) from None
    with staging:
        report = _write(res, spec, staging.tmp, t0)
        (staging.tmp / REPORT).write_text("desim report\n")
        staging.commit()
    report.out, report.html = outdir, outdir / "report.html"
    report.unreadable = list(res.unreadable)
    return report


def _write(res: Results, spec: ReportSpec, outdir: Path, t0: float) -> Report:
    apply_theme()
    ctx = Context.build(res, spec)
    for run_id, why in res.unreadable:
        ctx.notes.append(
            f"Run {run_id} could not be read ({why}) and is left out of every figure and table."
        )
    report = Report(out=outdir, html=outdir / "report.html")
    figs, skipped = [], []
    for name in spec.figures:
        r = FIGURES.get(name)(ctx)
        if isinstance(r, Skip):
            skipped.append(r)
            continue
        assert isinstance(r, Fig)
        b64 = _save(r.figure, outdir, name)
        figs.append(
            {
                "name": name,
                "title": r.title,
                "caption": r.caption,
                "png_b64": b64,
                "png": f"{name}.png",
                "svg": f"{name}.svg",
            }
        )
    head, rows, tidy = tables.headline(ctx)
    tidy.to_csv(outdir / "headline.csv", index=False)
    key_cols = len(head) - len(
        [m for m in (spec.metrics or []) or tables.DEFAULT_METRICS if m in ctx.runs]
    )
    n = len(res.runs)
    what = (
        f"{n} runs: {len(res.designs)} design(s)"
        + (f" × {ctx.x_label} ∈ {{{', '.join(f'{v:g}' for v in ctx.xvals)}}}" if ctx.x else "")
        + (f", swept: {', '.join(res.params)}" if res.params else "")
    )
    viol = [
        {**v, "t": f"{v['t_ns'] / 1e6:.3f} ms" if v.get("t_ns") is not None else "?"}
        for v in tables.violations(ctx)
    ]
    seconds = time.perf_counter() - t0
    html = render(
        title=spec.title or f"desim report: {res.root.resolve().name}",
        subtitle=what,
        notes=ctx.notes,
        designs=[(d, design_colour(d)) for d in res.designs],
        glossary=sorted(GLOSSARY.items(), key=lambda kv: kv[0].lower()),
        figures=figs,
        skipped=skipped,
        head=head,
        rows=rows,
        key_cols=key_cols,
        violations=viol,
        provenance=tables.provenance(ctx),
        experiment=res.experiment_text,
        config=tables.resolved_config(ctx),
        seconds=f"{seconds:.1f}",
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    report.html.write_text(html)
    report.figures = [f["name"] for f in figs]
    report.skipped = [(s.name, s.reason) for s in skipped]
    report.seconds = time.perf_counter() - t0
    return report
