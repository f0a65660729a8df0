"""desim report: HTML that parses and embeds every declared figure, valid image files, exact
tables, skipped figures explained, one-line errors, and no simpy import."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from desim.cli import main
from desim.report import make_report
from desim.report.spec import GROUPS
from desim.report.style import DESIGN_COLOURS, design_colour

PNG = b"\x89PNG\r\n\x1a\n"
BASE = """
seed: 3
duration: 25ms
warmup: 5ms
machine: {cpus: 2, hz: 1000}
workload:
  processes: {initial: 6, fork_rate: 300/s, lifetime: 8ms}
  faults: {}
  munmap: {}
  khugepaged: {scan_sleep: 2ms}
"""
EXPERIMENT = """
name: tiny
base: base.yaml
replications: 2
sweep:
  grid: {machine.cpus: [2, 4], allocator.name: [generic, s390]}
report:
  figures: [memory, latency, locks, rcu, safety]
  x: machine.cpus
  title: tiny sweep
"""


class Parsed(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs: list[str] = []
        self.ids: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "table":
            self.tables += 1


def parse(html: str) -> Parsed:
    p = Parsed()
    p.feed(html)
    p.close()
    return p


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("exp")
    (d / "base.yaml").write_text(BASE)
    (d / "tiny.yaml").write_text(EXPERIMENT)
    out = d / "out"
    r = CliRunner().invoke(main, ["sweep", str(d / "tiny.yaml"), "--jobs", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def sweep_report(sweep_dir, tmp_path_factory):
    return make_report(sweep_dir, tmp_path_factory.mktemp("rep"))


def check_image_files(out: Path, name: str) -> None:
    png = (out / f"{name}.png").read_bytes()
    assert png.startswith(PNG) and len(png) > 1000
    root = ET.parse(out / f"{name}.svg").getroot()
    assert root.tag.endswith("svg") and len(root) > 0


def test_sweep_report_embeds_every_declared_figure(sweep_report):
    html = sweep_report.html.read_text()
    p = parse(html)
    declared = [f for g in ("memory", "latency", "locks", "rcu", "safety") for f in GROUPS[g]]
    # every declared figure is either drawn (an embedded image) or explained (a note)
    assert sorted(sweep_report.figures + [s for s, _ in sweep_report.skipped]) == sorted(declared)
    assert [s for s, _ in sweep_report.skipped] == ["safety"]  # no violations in a safe design
    embedded = [s for s in p.imgs if s.startswith("data:image/png;base64,")]
    assert len(embedded) == len(sweep_report.figures) == len(p.imgs)
    for src in embedded:
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    for name in sweep_report.figures:
        assert name in p.ids
        check_image_files(sweep_report.out, name)
    assert "safety" in p.ids and "no violation in 8 run(s)" in html
    assert "<title>tiny sweep</title>" in html
    assert "http://" not in html.replace("http://www.w3.org", "")  # nothing fetched online


def test_headline_table_is_mean_and_t_interval(sweep_report, sweep_dir):
    tidy = pd.read_csv(sweep_report.out / "headline.csv")
    runs = pd.read_parquet(sweep_dir / "runs.parquet")
    for metric in ("fault.p99_ns", "mem.overhead.mean_bytes", "rcu.gp.mean_ns"):
        for (design, cpus), g in runs.groupby(["allocator.name", "machine.cpus"]):
            row = tidy[
                (tidy.metric == metric) & (tidy.series == design) & (tidy["machine.cpus"] == cpus)
            ]
            assert len(row) == 1
            v = g[metric].to_numpy(dtype=float)
            assert row["n"].iloc[0] == 2
            assert row["mean"].iloc[0] == pytest.approx(v.mean())
            half = stats.t.ppf(0.975, 1) * v.std(ddof=1) / np.sqrt(2)
            assert row["half"].iloc[0] == pytest.approx(half, abs=1e-9)


def test_subset_of_figures_and_cli(sweep_dir, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("report: {figures: [memory_split, locks], x: machine.cpus}\n")
    out = tmp_path / "rep"
    r = CliRunner().invoke(
        main, ["report", str(sweep_dir), "--out", str(out), "--experiment", str(spec)]
    )
    assert r.exit_code == 0, r.output
    p = parse((out / "report.html").read_text())
    assert len(p.imgs) == 2 and {"memory_split", "locks"} <= set(p.ids)
    assert sorted(f.name for f in out.glob("*.png")) == ["locks.png", "memory_split.png"]


def test_single_run_skips_vs_x_figures_with_a_note(sweep_dir, tmp_path):
    run = next((sweep_dir / "runs").iterdir())
    single = tmp_path / "single"
    shutil.copytree(run, single)
    rep = make_report(single, tmp_path / "rep")
    skipped = dict(rep.skipped)
    assert {"waste_vs_x", "latency_vs_x"} <= set(skipped)
    assert "memory_split" in rep.figures and "latency_ecdf" in rep.figures
    html = rep.html.read_text()
    assert "no numeric parameter is swept" in html
    assert len(parse(html).imgs) == len(rep.figures)


def test_collection_without_runs_parquet_and_safety_figure(sweep_dir, tmp_path):
    """Plain run directories (no sweep tables): discovered, and a violation gets its figure."""
    coll = tmp_path / "coll"
    for i, run in enumerate(sorted((sweep_dir / "runs").iterdir())[:4]):
        shutil.copytree(run, coll / f"r{i}")
    s = json.loads((coll / "r0" / "summary.json").read_text())
    s["safety.violations"], s["safety.use_after_free"] = 3, 3
    (coll / "r0" / "summary.json").write_text(json.dumps(s))
    (coll / "r0" / "violations.json").write_text(
        json.dumps(
            [
                {
                    "t_ns": 1_500_000,
                    "cpu": 1,
                    "kind": "use_after_free",
                    "message": "cpu1 pte read of T",
                    "history": ["t=1ns cpu0 T allocated"],
                }
            ]
        )
    )
    rep = make_report(coll, tmp_path / "rep", spec_file=None)
    assert "safety" in rep.figures
    check_image_files(rep.out, "safety")
    html = rep.html.read_text()
    assert "cpu1 pte read of T" in html and "4 runs" in html


def test_bad_report_section_is_one_line(sweep_dir, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("report: {figures: [memroy]}\n")
    r = CliRunner().invoke(
        main, ["report", str(sweep_dir), "--out", str(tmp_path / "o"), "--experiment", str(spec)]
    )
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "report.figures: unknown figure 'memroy'" in lines[0]
    spec.write_text("report: {colour: red}\n")
    r = CliRunner().invoke(main, ["report", str(sweep_dir), "--experiment", str(spec)])
    assert r.exit_code == 2 and "report.colour: unknown key" in r.output


def test_empty_directory_is_one_line(tmp_path):
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 2 and r.output.startswith("desim: error:") and "DONE" in r.output


def test_design_colours_fixed_and_distinct():
    assert len(set(DESIGN_COLOURS.values())) == len(DESIGN_COLOURS)
    assert design_colour("s390") == DESIGN_COLOURS["s390"]
    assert design_colour("someone-new") == design_colour("someone-new")


def test_report_never_imports_simpy(sweep_dir, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("report: {figures: [memory_split]}\n")
    code = (
        "import sys; from desim.report import make_report; "
        f"make_report({str(sweep_dir)!r}, {str(tmp_path / 'o')!r}, {str(spec)!r}); "
        "bad = [m for m in sys.modules if m.split('.')[0] == 'simpy' or "
        "m.startswith('desim.model') or m == 'desim.engine']; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_swept_section_is_its_own_series_named_by_what_differs(tmp_path):
    """Points that differ only in a whole swept section (``workload.munmap: {...}``) are two
    series, not one average of both; a series is named by what differs from its design's most
    common setting, so the headline point is the design's name alone."""
    from desim.report.figures import Context
    from desim.report.load import load
    from desim.report.spec import ReportSpec

    root = Path(__file__).resolve().parents[1]
    exp = tmp_path / "e.yaml"
    exp.write_text(
        f"name: e\nbase: {root / 'configs' / 'default.yaml'}\n"
        "set: {duration: 5ms, warmup: 0ms}\nreplications: 1\n"
        "sweep:\n  list:\n    - {allocator.name: generic}\n"
        "    - {allocator.name: generic}\n"
        "    - {allocator.name: generic, workload.munmap: {rate: 10/s}}\n"
        "    - {allocator.name: generic, rcu.nocb_cpus: all}\n"
    )
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["sweep", str(exp), "--out", str(out), "--jobs", "1"])
    assert r.exit_code == 0, r.output
    ctx = Context.build(load(out), ReportSpec())
    assert sorted(ctx.series) == sorted(
        [
            "generic",
            "generic · workload.munmap=rate=10/s",
            "generic · rcu.nocb_cpus=all",
        ]
    )
