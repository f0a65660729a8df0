"""desim sweep: expansion, paired seeds, statistics, failures, and serial = pool = Dask."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from desim.cli import main
from desim.config import ConfigError
from desim.stats import (
    StatsOptions,
    mser_truncation,
    parse_stats_options,
    steady_means,
    t_interval,
)
from desim.sweep.experiment import load_experiment

ROOT = Path(__file__).resolve().parents[1]
WALL = {"sim.wall_s", "sim.events_per_s"}


def write_exp(tmp_path: Path, body: dict, name: str = "exp") -> Path:
    body = {
        "base": str(ROOT / "configs" / "default.yaml"),
        "set": {"duration": "12ms", "warmup": "2ms", "machine.cpus": 2},
        **body,
    }
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(body))
    return p


def run_sweep(
    exp: Path, out: Path, jobs: int = 1, dask: str | None = None, fail_fast: bool = False
) -> int:
    from desim.sweep.command import sweep

    quiet = Console(file=open("/dev/null", "w"))  # noqa: SIM115
    return sweep(str(exp), jobs, str(out), dask, False, fail_fast, quiet, quiet)


def summaries(out: Path) -> dict[str, dict]:
    res = {}
    for d in sorted((out / "runs").iterdir()):
        s = json.loads((d / "summary.json").read_text())
        res[d.name] = {k: v for k, v in s.items() if k not in WALL}
    return res


# --- expansion and seeds -----------------------------------------------------------------


def test_grid_zip_list_combine_as_cartesian_product(tmp_path):
    p = write_exp(
        tmp_path,
        {
            "sweep": {
                "grid": {"machine.cpus": [2, 4], "rcu.blimit": [10, 20]},
                "zip": {"rcu.qhimark": [100, 200], "machine.hz": [250, 1000]},
                "list": [{"workload.munmap.tables": 1}, {"workload.munmap.tables": 3}],
            },
            "replications": 2,
        },
    )
    exp = load_experiment(p)
    assert len(exp.points) == 4 * 2 * 2
    assert exp.points[0] == {
        "machine.cpus": 2,
        "rcu.blimit": 10,
        "rcu.qhimark": 100,
        "machine.hz": 250,
        "workload.munmap.tables": 1,
    }
    assert exp.points[-1] == {
        "machine.cpus": 4,
        "rcu.blimit": 20,
        "rcu.qhimark": 200,
        "machine.hz": 1000,
        "workload.munmap.tables": 3,
    }
    # zip keeps its lists in lock-step: qhimark 100 always comes with hz 250
    assert {(pt["rcu.qhimark"], pt["machine.hz"]) for pt in exp.points} == {(100, 250), (200, 1000)}
    assert len({tuple(sorted(pt.items())) for pt in exp.points}) == 16
    runs = exp.runs()
    assert len(runs) == 32 and len({r.run_id for r in runs}) == 32
    assert runs[5].config["machine"]["cpus"] == runs[5].params["machine.cpus"]
    assert (
        runs[5].config["workload"]["munmap"]["tables"] == runs[5].params["workload.munmap.tables"]
    )
    assert all(r.invalid is None for r in runs)


def test_list_alone_gives_exactly_its_points_and_no_sweep_gives_the_base(tmp_path):
    exp = load_experiment(
        write_exp(
            tmp_path,
            {
                "sweep": {
                    "list": [
                        {"allocator.name": "generic"},
                        {"allocator.name": "s390", "machine.cpus": 4},
                    ]
                }
            },
        )
    )
    assert exp.points == [
        {"allocator.name": "generic"},
        {"allocator.name": "s390", "machine.cpus": 4},
    ]
    assert exp.swept_keys == ["allocator.name", "machine.cpus"]
    base_only = load_experiment(write_exp(tmp_path, {"replications": 3}, "b"))
    assert base_only.points == [{}] and len(base_only.runs()) == 3


def test_paired_seeds_same_replication_same_child_at_every_point(tmp_path):
    exp = load_experiment(
        write_exp(
            tmp_path,
            {
                "seed": 42,
                "replications": 3,
                "sweep": {"grid": {"allocator.name": ["generic", "s390"], "machine.cpus": [2, 4]}},
            },
        )
    )
    children = np.random.SeedSequence(42).spawn(3)
    for r in exp.runs():
        assert r.entropy == children[r.replication].entropy
        assert r.spawn_key == tuple(children[r.replication].spawn_key)
        assert r.config["seed"] == 42
    keys = {(r.point, r.spawn_key) for r in exp.runs()}
    assert len({k for _, k in keys}) == 3  # three distinct seeds, shared across the 4 points


@pytest.mark.parametrize(
    "body, fragment",
    [
        (
            {"sweep": {"zip": {"machine.cpus": [1, 2], "rcu.blimit": [1]}}},
            "sweep.zip: lists must have equal lengths",
        ),
        (
            {"sweep": {"grid": {"machine.cpus": 4}}},
            "sweep.grid.machine.cpus: expected a non-empty list",
        ),
        ({"sweep": {"cartesian": {}}}, "sweep.cartesian: unknown block"),
        (
            {"sweep": {"grid": {"machine.cpus": [2]}, "list": [{"machine.cpus": 4}]}},
            "machine.cpus is set by two blocks",
        ),
        ({"replications": 0}, "replications: expected an integer >= 1"),
        ({"repetitions": 2}, "repetitions: unknown field"),
        ({"stats": {"warmup": "soon"}}, "stats.warmup: expected none, mser5 or a time"),
        ({"report": ["x"]}, "report: expected a mapping"),
    ],
)
def test_malformed_experiments_are_refused_with_the_field(tmp_path, body, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        load_experiment(write_exp(tmp_path, body))


def test_report_section_is_kept_and_invalid_points_are_flagged(tmp_path):
    exp = load_experiment(
        write_exp(
            tmp_path,
            {
                "report": {"plots": [{"x": "machine.cpus"}]},
                "sweep": {
                    "list": [
                        {"machine.cpus": 2},
                        {"machine.cpus": 0},
                        {"allocator.name": "powerpc"},
                    ]
                },
            },
        )
    )
    assert exp.report == {"plots": [{"x": "machine.cpus"}]}
    inv = [r.invalid for r in exp.runs()]
    assert inv[0] is None
    assert "machine.cpus" in inv[1]
    assert "page_size" in inv[2]  # powerpc refuses 4 KiB pages when the machine is built


def test_quick_experiment_is_valid_and_runs_shortened(tmp_path):
    exp = load_experiment(ROOT / "experiments" / "quick.yaml")
    specs = exp.runs()
    assert len(specs) >= 8 and all(s.invalid is None for s in specs)
    from desim.sweep.worker import compute_run

    for s in specs[:: exp.replications]:  # one replication of every point, 5 ms each
        cfg = {**s.config, "duration": "5ms", "warmup": 0}
        out = compute_run(type(s)(**{**s.__dict__, "config": cfg}))
        assert out.error is None, out.error
        assert out.result.summary["sim.duration_ns"] == 5_000_000


# --- statistics ----------------------------------------------------------------------------


def test_t_interval_closed_form():
    mean, sd, half, n = t_interval([1, 2, 3, 4, 5, math.nan])
    assert (mean, n) == (3.0, 5)
    assert sd == pytest.approx(math.sqrt(2.5))
    assert half == pytest.approx(1.9632431614775572, rel=1e-12)  # t(0.975, 4) * sd / sqrt(5)
    assert t_interval([7.0])[:3][0] == 7.0 and math.isnan(t_interval([7.0])[2])
    assert t_interval([])[3] == 0


def test_t_interval_covers_the_true_mean_95_percent_of_the_time():
    rng = np.random.default_rng(5)
    trials, hit = 4000, 0
    for _ in range(trials):
        mean, _, half, _ = t_interval(rng.normal(10.0, 3.0, size=4))
        hit += abs(mean - 10.0) <= half
    assert abs(hit / trials - 0.95) < 0.012


def test_mser_exact_small_cases():
    # batch 1: d=0 -> 46/25, d=1 -> 1/16, d=2 -> (2/3)/9: delete one observation
    assert mser_truncation([9, 1, 2, 1, 2], batch=1) == 1
    # a transient of 100 samples, then a flat line: MSER-5 cuts exactly the transient
    y = np.r_[np.full(100, 5.0), np.zeros(400)]
    assert mser_truncation(y) == 100
    # a decaying transient on noise: the cut lands where the decay has died out
    rng = np.random.default_rng(1)
    t = np.arange(2000)
    y = 50 * np.exp(-t / 40) + rng.normal(0, 1, t.size)
    cut = mser_truncation(y)
    assert 80 <= cut <= 400
    assert mser_truncation([1, 2, 3]) == 0  # fewer than two batches: nothing to cut


def test_steady_means_fixed_and_mser():
    ts = pd.DataFrame(
        {
            "t_ns": np.arange(10) * 1_000_000,
            "pending": [100.0] * 3 + [1.0] * 7,
            "live": np.arange(10.0),
        }
    )
    fixed = steady_means(ts, StatsOptions(warmup=3_000_000))
    assert fixed["ts.pending.mean"] == 1.0 and fixed["ts.live.mean"] == 6.0
    assert fixed["ts.pending.warmup_ns"] == 3_000_000
    none = steady_means(ts, parse_stats_options({}))
    assert none["ts.pending.mean"] == pytest.approx(30.7)
    assert parse_stats_options({"warmup": "20ms"}).warmup == 20_000_000


# --- running -------------------------------------------------------------------------------

SMALL = {"seed": 3, "replications": 2, "sweep": {"grid": {"allocator.name": ["generic", "s390"]}}}


def test_serial_pool_and_dask_give_identical_summaries(tmp_path):
    distributed = pytest.importorskip("distributed")
    exp = write_exp(tmp_path, SMALL)
    assert run_sweep(exp, tmp_path / "serial", jobs=1) == 0
    assert run_sweep(exp, tmp_path / "pool", jobs=2) == 0
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        assert run_sweep(exp, tmp_path / "dask", dask=cluster.scheduler_address) == 0
    ref = summaries(tmp_path / "serial")
    assert len(ref) == 4
    assert summaries(tmp_path / "pool") == ref
    assert summaries(tmp_path / "dask") == ref
    # paired: replication r of both designs saw the same seed, replications differ
    assert ref["p000-r00"]["fault.count"] != ref["p000-r01"]["fault.count"]
    tables = [
        pd.read_parquet(tmp_path / d / "runs.parquet").drop(columns="wall_s")
        for d in ("serial", "pool", "dask")
    ]
    pd.testing.assert_frame_equal(tables[0], tables[1])
    pd.testing.assert_frame_equal(tables[0], tables[2])
    runs = tables[0]
    assert list(runs["allocator.name"]) == ["generic", "generic", "s390", "s390"]
    assert set(runs["status"]) == {"ok"}
    points = pd.read_parquet(tmp_path / "serial" / "points.parquet")
    row = points[(points.metric == "fault.count") & (points["allocator.name"] == "s390")].iloc[0]
    vals = runs[runs["allocator.name"] == "s390"]["fault.count"]
    assert row["n"] == 2 and row["mean"] == pytest.approx(vals.mean())
    assert row["ci_half"] == pytest.approx(12.706204736 * vals.std() / math.sqrt(2), rel=1e-6)


def test_rerun_reproduces_one_run_from_its_directory(tmp_path):
    exp = write_exp(tmp_path, {**SMALL, "replications": 2})
    assert run_sweep(exp, tmp_path / "o") == 0
    from desim.sweep.worker import rerun

    d = tmp_path / "o" / "runs" / "p001-r01"
    again = rerun(d).summary
    stored = json.loads((d / "summary.json").read_text())
    again = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in again.items()}
    assert {k: v for k, v in again.items() if k not in WALL} == {
        k: v for k, v in stored.items() if k not in WALL
    }


def test_resume_redoes_missing_stale_and_changed_runs_only(tmp_path):
    exp = write_exp(tmp_path, SMALL)
    out = tmp_path / "o"
    assert run_sweep(exp, out) == 0
    runs = out / "runs"
    stamp = {d.name: (d / "DONE").stat().st_mtime_ns for d in runs.iterdir()}
    import shutil

    shutil.rmtree(runs / "p000-r01")
    (runs / ".p001-r00.tmp-99999").mkdir()  # a killed writer's leftovers
    man = json.loads((runs / "p001-r01" / "manifest.json").read_text())
    man["digest"] = "0" * 16  # as if its inputs had changed
    (runs / "p001-r01" / "manifest.json").write_text(json.dumps(man))
    assert run_sweep(exp, out) == 0
    names = sorted(p.name for p in runs.iterdir())
    assert names == ["p000-r00", "p000-r01", "p001-r00", "p001-r01"]
    assert (runs / "p000-r00" / "DONE").stat().st_mtime_ns == stamp["p000-r00"]
    assert (runs / "p001-r00" / "DONE").stat().st_mtime_ns == stamp["p001-r00"]
    assert (runs / "p001-r01" / "DONE").stat().st_mtime_ns != stamp["p001-r01"]
    assert len(pd.read_parquet(out / "runs.parquet")) == 4


def test_a_raising_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    from desim.allocators.generic import Generic

    orig = Generic.pte_alloc_one

    def flaky(self, cpu, mm):
        if self.m.config.machine.cpus == 3:
            raise RuntimeError("injected allocator fault")
        return orig(self, cpu, mm)

    monkeypatch.setattr(Generic, "pte_alloc_one", flaky)
    exp = write_exp(tmp_path, {"replications": 2, "sweep": {"grid": {"machine.cpus": [2, 3, 4]}}})
    out = tmp_path / "o"
    assert run_sweep(exp, out) == 1
    runs = pd.read_parquet(out / "runs.parquet")
    assert list(runs["status"]) == ["ok", "ok", "failed", "failed", "ok", "ok"]
    bad = runs[runs.status == "failed"]
    assert all("injected allocator fault" in e for e in bad["error"])
    d = out / "runs" / "p001-r00"
    assert "RuntimeError: injected allocator fault" in (d / "traceback.txt").read_text()
    assert yaml.safe_load((d / "config.yaml").read_text())["machine"]["cpus"] == 3
    assert not (d / "DONE").exists() and (d / "FAILED").exists()
    points = pd.read_parquet(out / "points.parquet")
    fc = points[points.metric == "fault.count"].set_index("point")
    assert list(fc["n"]) == [2, 0, 2] and list(fc["failed"]) == [0, 2, 0]

    # --fail-fast stops at the first failure: later runs are left for a re-run
    out2 = tmp_path / "ff"
    assert run_sweep(exp, out2, fail_fast=True) == 1
    st = pd.read_parquet(out2 / "runs.parquet")["status"].tolist()
    assert st[:3] == ["ok", "ok", "failed"] and set(st[3:]) == {"missing"}


def test_cli_invalid_point_fails_that_run_only_with_exit_status_1(tmp_path):
    exp = write_exp(
        tmp_path,
        {
            "sweep": {
                "list": [
                    {"allocator.name": "generic"},
                    {"allocator.name": "generic", "allocator.params": {"table_size": 8192}},
                ]
            }
        },
    )
    res = CliRunner().invoke(main, ["sweep", str(exp), "--jobs", "2", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1, res.output
    assert "1 failed" in res.output and "1 ok" in res.output
    assert "table_size" in (tmp_path / "o" / "runs" / "p001-r00" / "traceback.txt").read_text()
    assert (tmp_path / "o" / "runs" / "p000-r00" / "DONE").exists()


def test_cli_dry_run_lists_runs_and_estimates(tmp_path):
    exp = write_exp(tmp_path, SMALL)
    res = CliRunner().invoke(
        main, ["sweep", str(exp), "--dry-run", "--jobs", "2", "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    assert "4 runs: 0 done, 4 to run" in res.output
    assert "p001-r01" in res.output and "estimated wall time:" in res.output
    assert not (tmp_path / "o").exists()


def test_cli_errors_are_one_line(tmp_path, monkeypatch):
    bad = write_exp(tmp_path, {"sweep": {"zip": {"machine.cpus": [1, 2], "rcu.blimit": [1]}}})
    res = CliRunner().invoke(main, ["sweep", str(bad)])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and "sweep.zip" in res.output
    good = write_exp(tmp_path, SMALL, "good")
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # dask not installed
    res = CliRunner().invoke(
        main, ["sweep", str(good), "--dask", "tcp://127.0.0.1:1", "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "pip install 'desim[dask]'" in res.output
