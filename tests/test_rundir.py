"""Run, sweep and report directories: nothing a user owns is deleted, nothing half-written is
trusted (desim.rundir and its users: desim run, the sweep, desim report)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from desim import rundir
from desim.cli import main
from desim.rundir import RunDirError, Staging, check_complete, check_target, classify

GOOD = """
duration: 12ms
warmup: 2ms
machine: {cpus: 2}
workload:
  processes: {initial: 4}
  faults: {}
"""


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    p = tmp_path / "configs" / "c.yaml"
    p.write_text(GOOD)
    return p


def run(*args):
    r = CliRunner().invoke(main, ["run", *map(str, args), "--quiet"])
    return r.exit_code, r.output


def one_error_line(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("desim: error: "), out
    assert "Traceback" not in out
    return lines[0]


def hidden(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


# --- desim run never deletes what it did not write ------------------------------------------------


def test_run_refuses_a_directory_it_did_not_write_and_leaves_it_alone(cfg, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    code, out = run(cfg, "--out", mine)
    assert code == 2
    assert "was not written by desim" in one_error_line(out)
    assert (mine / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert hidden(tmp_path) == []


@pytest.mark.parametrize(
    "where, why",
    [
        (".", "is the working directory"),
        ("..", "is an ancestor of the working directory"),
        ("configs", "holds the config"),
        ("/", "is the file system root"),
    ],
)
def test_run_never_replaces_the_working_directory_its_ancestors_or_the_configs(
    cfg, tmp_path, where, why
):
    before = sorted(p.name for p in tmp_path.iterdir())
    for extra in ([], ["--force"]):
        code, out = run(cfg, "--out", where, *extra)
        assert code == 2 and why in one_error_line(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert cfg.read_text() == GOOD


def test_run_refuses_a_sweep_directory_and_a_symlink(cfg, tmp_path):
    sweep = tmp_path / "results" / "s"
    (sweep / "runs").mkdir(parents=True)
    (sweep / "SWEEP").write_text('{"experiment": "s"}')
    for extra in ([], ["--force"]):
        code, out = run(cfg, "--out", sweep, *extra)
        assert code == 2 and "holds a desim sweep" in one_error_line(out)
    assert (sweep / "SWEEP").exists()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    code, out = run(cfg, "--out", tmp_path / "link")
    assert code == 2 and "symbolic link" in one_error_line(out)


def test_rerun_replaces_its_own_run_and_its_report_but_asks_for_another_config(cfg, tmp_path):
    out = tmp_path / "results" / "c"
    assert run(cfg, "--out", out)[0] == 0
    first = (out / "manifest.json").read_text()
    (out / "report").mkdir()
    (out / "report" / "REPORT").write_text("desim report\n")
    (out / "report" / "report.html").write_text("<html/>")
    code, text = run(cfg, "--out", out)
    assert code == 0 and "replacing the previous run and its report (report/)" in text
    assert (out / "manifest.json").read_text() != first and not (out / "report").exists()

    other = cfg.parent / "other.yaml"
    other.write_text(GOOD)
    code, text = run(other, "--out", out)
    assert code == 2 and "holds a run of" in one_error_line(text) and "--force" in text
    assert run(other, "--out", out, "--force")[0] == 0
    assert json.loads((out / "manifest.json").read_text())["source"] == str(other.resolve())

    (out / "mine.txt").write_text("x")
    code, text = run(other, "--out", out)
    assert code == 2 and "mine.txt" in one_error_line(text)
    assert (out / "mine.txt").exists()
    assert hidden(out.parent) == []


def test_output_is_probed_before_the_simulation(cfg, tmp_path, monkeypatch):
    import desim.engine

    def boom(*a, **k):
        raise AssertionError("simulated although the output cannot be written")

    monkeypatch.setattr(desim.engine, "simulate", boom)
    (tmp_path / "afile").write_text("")
    code, out = run(cfg, "--out", tmp_path / "afile" / "sub")
    assert code == 2 and "cannot create it" in one_error_line(out)

    real_open = Path.open

    def full(self, mode="r", *a, **k):
        if self.name == ".probe":
            raise OSError(28, "No space left on device")
        return real_open(self, mode, *a, **k)

    monkeypatch.setattr(Path, "open", full)
    code, out = run(cfg, "--out", tmp_path / "results" / "full")
    assert code == 2 and "No space left on device" in one_error_line(out)
    assert not (tmp_path / "results" / "full").exists()
    assert hidden(tmp_path / "results") == []


def test_a_failed_run_leaves_a_failed_directory_and_no_temporary(cfg, tmp_path, monkeypatch):
    import desim.engine

    def crash(*a, **k):
        raise ZeroDivisionError("model bug")

    monkeypatch.setattr(desim.engine, "simulate", crash)
    out = tmp_path / "results" / "c"
    code, text = run(cfg, "--out", out)
    assert code == 1
    line = one_error_line(text)
    assert "ZeroDivisionError: model bug" in line and "traceback.txt" in line
    assert classify(out) == "failed"
    assert sorted(p.name for p in out.iterdir()) == [
        "FAILED",
        "config.yaml",
        "manifest.json",
        "traceback.txt",
    ]
    assert "ZeroDivisionError" in (out / "traceback.txt").read_text()
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert hidden(out.parent) == []
    # a failed run is desim's own: the next run replaces it
    monkeypatch.undo()
    assert run(cfg, "--out", out)[0] == 0 and classify(out) == "run"


def test_ctrl_c_writes_nothing(cfg, tmp_path, monkeypatch):
    import desim.engine

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(desim.engine, "simulate", interrupted)
    code, text = run(cfg, "--out", tmp_path / "results" / "c")
    assert code == 130 and "interrupted" in one_error_line(text)
    assert not (tmp_path / "results" / "c").exists() and hidden(tmp_path / "results") == []


# --- staging and swapping ---------------------------------------------------------------------------


@pytest.mark.parametrize("exchange", [True, False])
def test_commit_swaps_in_the_new_directory_whole(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(rundir, "_exchange", lambda a, b: False)
    t = tmp_path / "r"
    t.mkdir()
    (t / "old").write_text("old")
    with Staging.begin(t) as st:
        (st.tmp / "new").write_text("new")
        assert sorted(p.name for p in t.iterdir()) == ["old"]  # untouched until commit
        st.commit()
    assert sorted(p.name for p in t.iterdir()) == ["new"]
    assert hidden(tmp_path) == []


def test_leaving_without_commit_keeps_the_old_directory(tmp_path):
    t = tmp_path / "r"
    t.mkdir()
    (t / "DONE").write_text("ok")
    with pytest.raises(RuntimeError), Staging.begin(t) as st:
        (st.tmp / "half").write_text("x")
        raise RuntimeError
    assert sorted(p.name for p in t.iterdir()) == ["DONE"]
    assert hidden(tmp_path) == []


def test_clean_stale_spares_a_live_writer(tmp_path):
    live = tmp_path / f".r.tmp-{os.getpid()}"
    dead = tmp_path / ".r.tmp-999999999"
    other = tmp_path / ".q.old-999999999"
    for d in (live, dead, other):
        d.mkdir()
    assert rundir.clean_stale(tmp_path, "r") == 1
    assert live.exists() and not dead.exists() and other.exists()
    assert rundir.clean_stale(tmp_path, all_pids=True) == 2


def test_check_target_kinds(tmp_path):
    assert check_target(tmp_path / "new", "run").exists is False
    (tmp_path / "empty").mkdir()
    assert check_target(tmp_path / "empty", "sweep").exists is False
    (tmp_path / "f").write_text("")
    with pytest.raises(RunDirError, match="is a file"):
        check_target(tmp_path / "f", "run")
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "notes").write_text("")
    with pytest.raises(RunDirError, match="desim report only replaces"):
        check_target(rep, "report")
    (rep / "REPORT").write_text("")
    assert check_target(rep, "report").exists


# --- resume trusts only complete runs -----------------------------------------------------------------


def _sweep(exp: Path, out: Path, force: bool = False):
    from desim.sweep.command import sweep

    sink = open(os.devnull, "w")  # noqa: SIM115
    buf = Console(file=sink)
    import io

    err = io.StringIO()
    code = sweep(
        str(exp), 1, str(out), None, False, False, buf, Console(file=err, width=200), force=force
    )
    return code, err.getvalue()


@pytest.fixture
def exp(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(GOOD)
    p = tmp_path / "e.yaml"
    p.write_text(yaml.safe_dump({"name": "e", "base": "base.yaml", "replications": 2}))
    return p


@pytest.mark.parametrize("damage", ["summary", "parquet", "violations", "done-only"])
def test_a_damaged_finished_run_is_redone_and_said_so(exp, tmp_path, damage):
    out = tmp_path / "res"
    assert _sweep(exp, out)[0] == 0
    d = out / "runs" / "p000-r01"
    good = (d / "summary.json").read_text()
    if damage == "summary":
        (d / "summary.json").write_text('{"fault.count": 1')
    elif damage == "parquet":
        p = d / "latency.parquet"
        p.write_bytes(p.read_bytes()[:40])
    elif damage == "violations":
        (d / "violations.json").unlink()
    else:
        for f in d.iterdir():
            if f.name != "DONE":
                f.unlink()
    assert check_complete(d) is not None
    code, said = _sweep(exp, out)
    assert code == 0
    assert "p000-r01: redone (incomplete:" in said and "1 to run" in said
    assert check_complete(d) is None and (d / "summary.json").read_text() == good


def test_aggregate_reports_a_damaged_run_instead_of_crashing(exp, tmp_path):
    import pandas as pd

    from desim.sweep.aggregate import aggregate
    from desim.sweep.experiment import load_experiment

    out = tmp_path / "res"
    assert _sweep(exp, out)[0] == 0
    (out / "runs" / "p000-r00" / "summary.json").write_text("{")
    (out / "runs" / "p000-r01" / "manifest.json").write_text("")
    e = load_experiment(exp)
    runs, _ = aggregate(e, e.runs(), out)
    assert list(runs["status"]) == ["failed", "failed"]
    assert runs["error"].str.contains("damaged").all()
    assert pd.read_parquet(out / "runs.parquet")["status"].tolist() == ["failed", "failed"]


def test_a_sweep_never_overwrites_another_experiments_sweep_unasked(exp, tmp_path):
    out = tmp_path / "res"
    assert _sweep(exp, out)[0] == 0
    other = tmp_path / "f.yaml"
    other.write_text(yaml.safe_dump({"name": "f", "base": "base.yaml"}))
    from desim.sweep.runner import SweepError

    with pytest.raises(SweepError, match="holds the sweep of experiment 'e', not 'f'"):
        _sweep(other, out)
    assert len(list((out / "runs").iterdir())) == 2
    assert _sweep(other, out, force=True)[0] == 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["p000-r00"]
    assert json.loads((out / "SWEEP").read_text())["experiment"] == "f"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "x").write_text("")
    with pytest.raises(SweepError, match="was not written by desim"):
        _sweep(exp, mine, force=True)
    assert (mine / "x").exists()


# --- the report reads only what it can trust ----------------------------------------------------------


def test_report_lists_an_unreadable_run_and_leaves_it_out(exp, tmp_path):
    from desim.report import make_report
    from desim.report.load import load

    out = tmp_path / "res"
    assert _sweep(exp, out)[0] == 0
    (out / "runs" / "p000-r01" / "violations.json").write_text("[{")
    res = load(out)
    assert list(res.runs["run_id"]) == ["p000-r00"]
    assert res.unreadable == [("p000-r01", "violations.json missing or unreadable")]
    r = make_report(out)
    html = r.html.read_text()
    assert "p000-r01 could not be read" in html and "1 unreadable and left out" in html
    assert r.unreadable and classify(out / "report") == "report"
    # a second report replaces the first; a directory of the user's is never written into
    assert make_report(out).html.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "x").write_text("")
    from desim.report import ResultsError

    with pytest.raises(ResultsError, match="desim report only replaces a report it wrote"):
        make_report(out, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["x"]


def test_report_of_only_damaged_runs_is_a_one_line_error(exp, tmp_path):
    out = tmp_path / "res"
    assert _sweep(exp, out)[0] == 0
    for d in (out / "runs").iterdir():
        (d / "summary.json").write_text("")
    r = CliRunner().invoke(main, ["report", str(out)])
    assert r.exit_code == 2
    line = one_error_line(r.output)
    assert "no complete run directory" in line and "2 unreadable" in line
