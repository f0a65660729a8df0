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
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
WALL = {"sim.wall_s", "sim.events_per_s"}
SHORT = {"duration": "12ms", "warmup": "2ms", "machine.cpus": 2}
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


def write_exp(tmp_path: Path, body: dict, name: str = "exp", inline_base: bool = False) -> Path:
    """An experiment on the default config; ``inline_base`` makes relative files resolve in
    ``tmp_path`` (the experiment's folder) instead of configs/."""
    base_path = ROOT / "configs" / "default.yaml"
    base = yaml.safe_load(base_path.read_text()) if inline_base else str(base_path)
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump({"base": base, "set": dict(SHORT), **body}))
    return p


def run_sweep(exp: Path, out: Path, jobs: int = 1, dask: str | None = None) -> int:
    from desim.sweep.command import sweep

    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115
    return sweep(str(exp), jobs, str(out), dask, False, False, quiet, quiet)


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
        f"from desim.registry import Registry\nREG = Registry('thing', {name!r})\n")
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
    _fake_package(fake_packages, "slowreg", {
        "a_slow": "import time\ntime.sleep(0.3)\n@REG.register('slow')\nclass Slow: pass\n",
        "b_fast": "@REG.register('fast')\nclass Fast: pass\n"})
    from slowreg import REG

    n = 6
    barrier = threading.Barrier(n)
    got: list[str] = []

    def ask(name: str) -> None:
        barrier.wait()
        try:
            got.append(REG.get(name).__name__)
        except Exception as exc:             # the old registry: "unknown thing (allowed: )"
            got.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=ask, args=("fast" if i % 2 else "slow",))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got) == ["Fast"] * (n // 2) + ["Slow"] * (n // 2)
    assert REG.names() == ["fast", "slow"]


def test_registry_that_failed_to_load_tries_again(fake_packages):
    flag = fake_packages / "fail-once"
    flag.write_text("")
    _fake_package(fake_packages, "flakyreg", {
        "a": "@REG.register('a')\nclass A: pass\n",
        "b": f"import os\nif os.path.exists({str(flag)!r}):\n    os.remove({str(flag)!r})\n"
             "    raise RuntimeError('disk hiccup')\n@REG.register('b')\nclass B: pass\n"})
    from flakyreg import REG

    with pytest.raises(RuntimeError, match="disk hiccup"):
        REG.get("b")
    assert REG.get("b").__name__ == "B"      # not "unknown thing 'b' (allowed: a)"
    assert REG.names() == ["a", "b"]


# --- a real, fresh Dask worker with two threads, in another process ------------------------

CLUSTER = """
import sys
from distributed import LocalCluster

if __name__ == "__main__":
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      dashboard_address=None) as cluster:
        print(cluster.scheduler_address, flush=True)
        sys.stdin.read()
"""


@contextlib.contextmanager
def fresh_dask_worker(cwd: Path):
    """A scheduler and one two-thread worker process that has imported nothing of desim."""
    cwd.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", CLUSTER], cwd=cwd, env=ENV, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
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
    exp = write_exp(tmp_path, {"seed": 3, "replications": 3,
                               "sweep": {"grid": {"allocator.name": ["generic", "s390"]}}})
    with fresh_dask_worker(tmp_path / "worker") as address:
        assert run_sweep(exp, tmp_path / "o", dask=address) == 0
    assert list(statuses(tmp_path / "o").values()) == ["ok"] * 6
