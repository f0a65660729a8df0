"""Sweep workers that fail alone: a thread-safe registry, a dead or hanging worker costs one run,
workers end with the sweep, and the input files a run reads travel with it (digest included)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

import desim
from desim.cli import main
from desim.sweep import runner
from desim.sweep.experiment import load_experiment
from desim.sweep.worker import run_and_write

ROOT = Path(__file__).resolve().parents[1]
WALL = {"sim.wall_s", "sim.events_per_s"}
SHORT = {"duration": "12ms", "warmup": "2ms", "machine.cpus": 2}
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
}


def write_exp(tmp_path: Path, body: dict, name: str = "exp", inline_base: bool = False) -> Path:
    """An experiment on the default config; ``inline_base`` makes relative files resolve in
    ``tmp_path`` (the experiment's folder) instead of configs/."""
    base_path = ROOT / "configs" / "default.yaml"
    base = yaml.safe_load(base_path.read_text()) if inline_base else str(base_path)
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump({"base": base, "set": dict(SHORT), **body}))
    return p


def run_sweep(
    exp: Path, out: Path, jobs: int = 1, dask: str | None = None, run_timeout: str | None = None
) -> int:
    from desim.sweep.command import sweep

    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115
    return sweep(str(exp), jobs, str(out), dask, False, False, quiet, quiet, run_timeout)


def summaries(out: Path) -> dict[str, dict]:
    res = {}
    for d in sorted((out / "runs").iterdir()):
        if (d / "summary.json").exists():
            s = json.loads((d / "summary.json").read_text())
            res[d.name] = {k: v for k, v in s.items() if k not in WALL}
    return res


def statuses(out: Path) -> dict[str, str]:
    t = pd.read_parquet(out / "runs.parquet")
    return dict(zip(t["run_id"], t["status"], strict=True))


def manifest(out: Path, run_id: str) -> dict:
    return json.loads((out / "runs" / run_id / "manifest.json").read_text())


# --- the registry --------------------------------------------------------------------------


def _fake_package(tmp_path: Path, name: str, modules: dict[str, str]) -> None:
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        f"from desim.registry import Registry\nREG = Registry('thing', {name!r})\n"
    )
    for mod, body in modules.items():
        (pkg / f"{mod}.py").write_text(f"from {name} import REG\n{body}")


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for m in set(sys.modules) - before:
        del sys.modules[m]


def test_registry_loads_once_while_many_threads_ask(fake_packages):
    # One module takes a while to import, as desim's workloads do on a cold Dask worker.
    _fake_package(
        fake_packages,
        "slowreg",
        {
            "a_slow": "import time\ntime.sleep(0.3)\n@REG.register('slow')\nclass Slow: pass\n",
            "b_fast": "@REG.register('fast')\nclass Fast: pass\n",
        },
    )
    from slowreg import REG

    n = 6
    barrier = threading.Barrier(n)
    got: list[str] = []

    def ask(name: str) -> None:
        barrier.wait()
        try:
            got.append(REG.get(name).__name__)
        except Exception as exc:  # the old registry: "unknown thing (allowed: )"
            got.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=ask, args=("fast" if i % 2 else "slow",)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got) == ["Fast"] * (n // 2) + ["Slow"] * (n // 2)
    assert REG.names() == ["fast", "slow"]


def test_registry_that_failed_to_load_tries_again(fake_packages):
    flag = fake_packages / "fail-once"
    flag.write_text("")
    _fake_package(
        fake_packages,
        "flakyreg",
        {
            "a": "@REG.register('a')\nclass A: pass\n",
            "b": f"import os\nif os.path.exists({str(flag)!r}):\n    os.remove({str(flag)!r})\n"
            "    raise RuntimeError('disk hiccup')\n@REG.register('b')\nclass B: pass\n",
        },
    )
    from flakyreg import REG

    with pytest.raises(RuntimeError, match="disk hiccup"):
        REG.get("b")
    assert REG.get("b").__name__ == "B"  # not "unknown thing 'b' (allowed: a)"
    assert REG.names() == ["a", "b"]


# --- a dead pool worker, a broken pool ----------------------------------------------------


def die_in_p001(spec, runs_dir, command, experiment):
    """Pool entry point for the test: the worker computing p001-r00 dies as an OOM kill would."""
    if spec.run_id == "p001-r00":
        os.kill(os.getpid(), signal.SIGKILL)
    return run_and_write(spec, runs_dir, command, experiment)


def test_a_killed_pool_worker_costs_only_its_run_and_a_rerun_completes_it(tmp_path, monkeypatch):
    exp = write_exp(
        tmp_path, {"seed": 4, "replications": 2, "sweep": {"grid": {"machine.cpus": [2, 3, 4]}}}
    )
    out = tmp_path / "o"
    monkeypatch.setattr(runner, "run_and_write", die_in_p001)
    assert run_sweep(exp, out, jobs=2) == 1
    st = statuses(out)
    assert st == {
        "p000-r00": "ok",
        "p000-r01": "ok",
        "p001-r00": "failed",
        "p001-r01": "ok",
        "p002-r00": "ok",
        "p002-r01": "ok",
    }
    err = manifest(out, "p001-r00")["error"]
    assert "worker process running this run died" in err and "SIGKILL" in err
    stamps = {
        d.name: (d / "DONE").stat().st_mtime_ns
        for d in (out / "runs").iterdir()
        if (d / "DONE").exists()
    }

    monkeypatch.undo()
    assert run_sweep(exp, out, jobs=2) == 0
    assert set(statuses(out).values()) == {"ok"}
    for name, stamp in stamps.items():  # only the failed run was run again
        assert (out / "runs" / name / "DONE").stat().st_mtime_ns == stamp


class _BrokenPool(runner.ProcessPool):
    """A pool whose first ``broken_starts`` instances break as a whole at once."""

    broken_starts = 0
    starts = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        type(self).starts += 1
        self.broken = type(self).starts <= type(self).broken_starts

    def schedule(self, function, args=(), kwargs=None, timeout=None):
        if not self.broken:
            return super().schedule(function, args, kwargs or {}, timeout)
        f: Future = Future()
        f.set_exception(BrokenProcessPool("All workers expired"))
        return f


@pytest.mark.parametrize("broken_starts, expect", [(1, 0), (runner.POOL_STARTS, 1)])
def test_a_pool_broken_as_a_whole_is_started_again_up_to_a_limit(
    tmp_path, monkeypatch, broken_starts, expect
):
    monkeypatch.setattr(_BrokenPool, "broken_starts", broken_starts)
    monkeypatch.setattr(_BrokenPool, "starts", 0)
    monkeypatch.setattr(runner, "ProcessPool", _BrokenPool)
    exp = write_exp(tmp_path, {"replications": 2})
    out = tmp_path / "o"
    assert run_sweep(exp, out, jobs=2) == expect
    if expect == 0:
        assert _BrokenPool.starts == 2 and set(statuses(out).values()) == {"ok"}
    else:
        assert _BrokenPool.starts == runner.POOL_STARTS
        assert set(statuses(out).values()) == {"failed"}
        assert (
            manifest(out, "p000-r01")["error"]
            == f"the process pool broke {runner.POOL_STARTS} times; not tried again"
        )


# --- the sweep's parent killed --------------------------------------------------------------


def test_a_killed_sweep_process_takes_its_workers_and_fork_server_along(tmp_path):
    psutil = pytest.importorskip("psutil")
    # Runs far longer than the test: whatever is still computing after the kill shows.
    exp = write_exp(tmp_path, {"set": {**SHORT, "duration": "30s"}, "replications": 4})
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "desim.cli", "sweep", str(exp), "--jobs", "2", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=ENV,
    )
    try:
        me = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        kids: list = []
        while time.monotonic() < deadline:
            # the fork server and the resource tracker, children of the sweep; two workers,
            # children of the fork server
            kids = me.children(recursive=True)
            if sum(1 for k in kids if k.ppid() != proc.pid) >= 2:
                break
            time.sleep(0.05)
        assert sum(1 for k in kids if k.ppid() != proc.pid) >= 2, "the workers never started"
        time.sleep(0.5)  # the workers are computing
        os.kill(proc.pid, signal.SIGKILL)  # the sweep process only
        proc.wait()

        def alive():
            out = []
            for k in kids:
                with contextlib.suppress(psutil.NoSuchProcess):
                    if k.is_running() and k.status() != psutil.STATUS_ZOMBIE:
                        out.append(k)
            return out

        deadline = time.monotonic() + 5
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive() == []
        assert [d.name for d in (out / "runs").iterdir() if not d.name.startswith(".")] == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


# --- --run-timeout -----------------------------------------------------------------------------

HANGS = {"sweep": {"list": [{"duration": "12ms"}, {"duration": "600s"}, {"duration": "12ms"}]}}


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_run_over_run_timeout_is_recorded_failed_and_the_sweep_goes_on(tmp_path, jobs):
    exp = write_exp(tmp_path, HANGS)
    out = tmp_path / "o"
    t0 = time.monotonic()
    res = CliRunner().invoke(
        main, ["sweep", str(exp), "--jobs", str(jobs), "--out", str(out), "--run-timeout", "5s"]
    )
    assert res.exit_code == 1, res.output
    assert time.monotonic() - t0 < 120  # a bound on the hang, not a performance figure
    assert statuses(out) == {"p000-r00": "ok", "p001-r00": "failed", "p002-r00": "ok"}
    d = out / "runs" / "p001-r00"
    assert (
        manifest(out, "p001-r00")["error"]
        == "RunTimeout: exceeded --run-timeout 5 s; the run was stopped"
    )
    assert (d / "FAILED").exists() and not (d / "DONE").exists()
    assert yaml.safe_load((d / "config.yaml").read_text())["duration"] == "600s"
    assert "exceeded --run-timeout 5 s" in res.output


@pytest.mark.parametrize("value", ["5", "soon", "0s", "-3s", "2 MiB", "inf s"])
def test_a_bad_run_timeout_is_one_line_exit_2_and_writes_nothing(tmp_path, value):
    exp = write_exp(tmp_path, {})
    res = CliRunner().invoke(
        main, ["sweep", str(exp), "--out", str(tmp_path / "o"), "--run-timeout", value]
    )
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and "--run-timeout" in res.output
    assert not (tmp_path / "o").exists()


def test_dask_records_an_overdue_run_failed_and_cancels_it(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    release = threading.Event()
    real = runner.compute_run

    def hang_p001(spec):
        if spec.run_id == "p001-r00":
            release.wait(60)
        return real(spec)

    monkeypatch.setattr(runner, "compute_run", hang_p001)
    exp = write_exp(
        tmp_path,
        {"sweep": {"list": [{"machine.cpus": 2}, {"machine.cpus": 3}, {"machine.cpus": 4}]}},
    )
    out = tmp_path / "o"
    try:
        with distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster:
            assert run_sweep(exp, out, dask=cluster.scheduler_address, run_timeout="1s") == 1
            release.set()
    finally:
        release.set()
    assert statuses(out) == {"p000-r00": "ok", "p001-r00": "failed", "p002-r00": "ok"}
    assert (
        manifest(out, "p001-r00")["error"]
        == "RunTimeout: exceeded --run-timeout 1 s; the run was stopped"
    )


# --- input files: digest and travel ----------------------------------------------------------


def csv_experiment(tmp_path: Path, samples: str = "10us\n20us\n40us\n") -> Path:
    """Point 0 reads think.csv (next to the experiment); point 1 does not."""
    (tmp_path / "think.csv").write_text(samples)
    return write_exp(
        tmp_path,
        {
            "seed": 5,
            "replications": 2,
            "sweep": {
                "list": [
                    {"workload.faults.think": {"dist": "empirical", "file": "think.csv"}},
                    {"workload.faults.think": {"dist": "exponential", "mean": "20us"}},
                ]
            },
        },
        inline_base=True,
    )


def test_digest_covers_input_file_content_and_desim_version(tmp_path, monkeypatch):
    exp = csv_experiment(tmp_path)
    first = load_experiment(exp).runs()
    assert first[0].input_names == {"think.csv": str((tmp_path / "think.csv").resolve())}
    assert first[0].inputs[str((tmp_path / "think.csv").resolve())].data == b"10us\n20us\n40us\n"
    assert first[2].inputs == {}
    assert [s.digest for s in load_experiment(exp).runs()] == [s.digest for s in first]
    (tmp_path / "think.csv").write_text("10us\n20us\n80us\n")
    changed = load_experiment(exp).runs()
    assert changed[0].digest != first[0].digest and changed[1].digest != first[1].digest
    assert changed[2].digest == first[2].digest  # does not read the file
    digests = [s.digest for s in changed]
    monkeypatch.setattr(desim, "__version__", "99.0")
    assert all(a.digest != b for a, b in zip(load_experiment(exp).runs(), digests, strict=True))


def test_resume_redoes_the_runs_whose_input_file_changed(tmp_path):
    exp = csv_experiment(tmp_path)
    out = tmp_path / "o"
    assert run_sweep(exp, out) == 0
    before = summaries(out)
    stamps = {d.name: (d / "DONE").stat().st_mtime_ns for d in (out / "runs").iterdir()}
    (tmp_path / "think.csv").write_text("1us\n2us\n")  # much shorter think times
    assert run_sweep(exp, out) == 0
    after = summaries(out)
    for run in ("p000-r00", "p000-r01"):
        assert (out / "runs" / run / "DONE").stat().st_mtime_ns != stamps[run]
        assert after[run]["fault.count"] > before[run]["fault.count"]
    for run in ("p001-r00", "p001-r01"):
        assert (out / "runs" / run / "DONE").stat().st_mtime_ns == stamps[run]


def test_a_run_uses_the_content_planned_not_the_file_on_disk(tmp_path):
    from desim.sweep.worker import compute_run

    exp = csv_experiment(tmp_path)
    spec = load_experiment(exp).runs()[0]
    ref = compute_run(spec)
    (tmp_path / "think.csv").write_text("999us\n")  # changed after planning ...
    again = compute_run(spec)
    (tmp_path / "think.csv").unlink()  # ... and gone
    gone = compute_run(spec)
    assert ref.error is None and again.error is None and gone.error is None, gone.error
    assert again.result.summary["fault.count"] == ref.result.summary["fault.count"]
    assert gone.result.summary["fault.count"] == ref.result.summary["fault.count"]


def test_provided_files_are_served_and_never_cached_across_contexts(tmp_path):
    from pydantic import TypeAdapter

    from desim.distributions import TimeDist, provided_files, relative_to

    td = TypeAdapter(TimeDist)
    path = str(tmp_path / "nowhere" / "x.csv")  # not on this disk
    for content, want in ((b"1us\n3us\n", [1000, 3000]), (b"5us\n", [5000])):
        with relative_to("/elsewhere"), provided_files({path: content}, {"x.csv": path}):
            d = td.validate_python({"dist": "empirical", "file": "x.csv"})
        assert d.file == path and list(d.data) == want
    with pytest.raises(ValueError, match="not found"):
        td.validate_python({"dist": "empirical", "file": path})


def test_input_files_over_the_bound_make_the_point_invalid(tmp_path, monkeypatch):
    from desim.sweep import experiment

    monkeypatch.setattr(experiment, "MAX_INPUT_BYTES", 8)
    specs = load_experiment(csv_experiment(tmp_path)).runs()
    assert specs[0].invalid.startswith("workload.faults.think.file: ")
    assert "larger than" in specs[0].invalid and specs[2].invalid is None


# --- a real, fresh Dask worker with two threads, in another process ------------------------

CLUSTER = """
import sys
from distributed import LocalCluster

if __name__ == "__main__":
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      dashboard_address=":0") as cluster:
        print(cluster.scheduler_address, flush=True)
        sys.stdin.read()
"""


@contextlib.contextmanager
def fresh_dask_worker(cwd: Path):
    """A scheduler and one two-thread worker process that has imported nothing of desim."""
    cwd.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", CLUSTER],
        cwd=cwd,
        env=ENV,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://"), "the Dask cluster did not start"
        yield address
    finally:
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_fresh_two_thread_dask_worker_runs_every_run(tmp_path):
    pytest.importorskip("distributed")
    exp = write_exp(
        tmp_path,
        {"seed": 3, "replications": 3, "sweep": {"grid": {"allocator.name": ["generic", "s390"]}}},
    )
    with fresh_dask_worker(tmp_path / "worker") as address:
        assert run_sweep(exp, tmp_path / "o", dask=address) == 0
    assert list(statuses(tmp_path / "o").values()) == ["ok"] * 6


def test_dask_workers_need_no_copy_of_the_input_files(tmp_path):
    pytest.importorskip("distributed")
    exp = csv_experiment(tmp_path)
    assert run_sweep(exp, tmp_path / "serial") == 0
    specs = load_experiment(exp).runs()
    (tmp_path / "think.csv").rename(tmp_path / "moved.csv")  # gone once the sweep is planned
    runs_dir = tmp_path / "dask" / "runs"
    got: list = []
    with fresh_dask_worker(tmp_path / "worker") as address:
        runner.run_dask(
            specs,
            runs_dir,
            ["desim"],
            "exp",
            lambda *res: got.append(res) and False,
            runner.connect_dask(address),
        )
    assert [err for _, err, _ in got] == [None] * 4, got
    assert summaries(tmp_path / "dask") == summaries(tmp_path / "serial")
    ref = summaries(tmp_path / "serial")
    assert not np.isclose(ref["p000-r00"]["fault.count"], ref["p001-r00"]["fault.count"])


def test_digest_covers_the_model_code_but_not_the_report(tmp_path, monkeypatch):
    from desim.sweep import experiment

    exp = csv_experiment(tmp_path)
    digests = [s.digest for s in load_experiment(exp).runs()]
    monkeypatch.setattr(experiment, "model_fingerprint", lambda: "another model")
    assert all(a.digest != b for a, b in zip(load_experiment(exp).runs(), digests, strict=True))
    monkeypatch.undo()
    assert "report/" in experiment.NOT_MODEL and len(experiment.model_fingerprint()) == 16
