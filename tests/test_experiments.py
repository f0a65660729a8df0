"""Every experiment shipped in experiments/ plans its runs (every point validates) and its first
point runs, shortened: an experiment the findings are regenerated from cannot rot unnoticed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from desim.config import validate
from desim.engine import simulate
from desim.sweep.experiment import load_experiment
from desim.units import units_required

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_point_validates_and_the_first_runs_shortened(path):
    runs = load_experiment(path).runs()
    assert runs, "an experiment with no run"
    assert [r.run_id for r in runs if r.invalid is not None] == []
    cfg = copy.deepcopy(runs[0].config)
    cfg.update(duration="2ms", warmup="0ms")
    proc = cfg.get("workload", {}).get("processes")
    if isinstance(proc, dict) and "scale" in proc:  # a sized preset: a sliver of it
        proc["scale"] = 0.01
    with runs[0].input_files(), units_required():
        result = simulate(validate(cfg))
    assert result.summary["sim.events"] > 0
