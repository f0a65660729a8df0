"""desim probe: measures the host (on Linux), models it, and sets the two side by side."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from click.testing import CliRunner

from desim import probe
from desim.cli import main
from desim.config import validate

FACTS = {
    "cpus": 2,
    "page_size": 4096,
    "release": "6.6.0",
    "version": "#1 SMP",
    "machine": "x86_64",
    "config": {"CONFIG_HZ": "250", "CONFIG_PREEMPT_RCU": "y"},
    "hz": 250,
    "rcu_flavour": "preemptible",
    "preempt": "dynamic",
    "rcu_lazy": True,
    "cmdline": [],
    "rcu_params": {
        "jiffies_till_first_fqs": "1",
        "jiffies_till_next_fqs": "1",
        "rcu_normal_wake_from_gp": "1",
    },
    "missing": [],
}


def dist(p50: float) -> dict:
    return {"n": 10, "p50": p50, "p90": p50, "p99": p50, "mean": p50}


def test_profile_reads_the_machine_and_fits_only_the_fault_cost():
    prof = probe.profile(FACTS, {"fault": dist(1000)})
    cfg = validate({k: v for k, v in prof.items() if not k.startswith("_")})
    assert (cfg.machine.cpus, cfg.machine.hz, cfg.rcu.flavor) == (2, 250, "preemptible")
    assert (cfg.rcu.fqs_jiffies, cfg.rcu.next_fqs_jiffies) == (1, 1)
    assert cfg.costs.fault_work == 825  # 1000 ns measured - walk and lock (175 ns)
    assert not cfg.rcu.lazy  # lazy needs offloaded CPUs: no rcu_nocbs=
    lazy = probe.profile({**FACTS, "cmdline": ["rcu_nocbs=all"]}, {})
    assert lazy["rcu"]["lazy"] and lazy["rcu"]["nocb_cpus"] == "all"


def test_compare_marks_fitted_figures_and_judges_the_others_by_the_tolerance():
    measured = {"fault": dist(700), "sync_rcu_idle": dist(8e6), "spawn_sync": dist(16e6)}
    simulated = {"fault": dist(700), "sync_rcu_idle": dist(16e6), "spawn_sync": dist(17e6)}
    rows = {r["scenario"]: r for r in probe.compare(FACTS, measured, simulated)}
    assert rows["fault"]["verdict"] == "fitted"
    assert rows["sync_rcu_idle"]["verdict"] == "differs"
    assert "rcu_normal_wake_from_gp" in rows["sync_rcu_idle"]["why"]
    assert rows["spawn_sync"]["verdict"] == "agrees" and rows["spawn_sync"]["ratio"] == 17 / 16


def test_the_models_scenarios_are_valid_configs():
    prof = probe.profile(FACTS, {"fault": dist(900)})
    for name, cfg in probe.scenarios(prof, quick=True).items():
        validate(cfg)
        assert name in probe.METRIC


@pytest.mark.skipif(sys.platform != "linux", reason="desim probe measures a Linux kernel")
def test_quick_probe_on_this_host_writes_a_profile_and_a_table(tmp_path):
    out = tmp_path / "probe"
    r = CliRunner().invoke(main, ["probe", "--quick", "--out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "probe.json").read_text())
    assert data["machine"]["cpus"] >= 1 and data["machine"]["page_size"] >= 4096
    for name in ("fault", "spawn"):
        m = data["measured"][name]
        assert m["n"] > 0 and 0 < m["p50"] <= m["p99"]
    scenarios = {row["scenario"] for row in data["comparison"]}
    assert scenarios == set(data["measured"])
    assert all(
        row["verdict"] in ("agrees", "differs", "fitted", "not simulated")
        for row in data["comparison"]
    )
    if probe.membarrier_available() is None:
        assert {"sync_rcu_idle", "sync_rcu_busy", "spawn_sync"} <= scenarios
    else:
        assert any("membarrier" in m for m in data["missing"])
    prof = yaml.safe_load((out / "profile.yaml").read_text())
    validate(prof)
    assert "measured on this host and simulated by desim" in r.output
    # a second probe replaces its own directory, never a user's
    assert CliRunner().invoke(main, ["probe", "--quick", "--out", str(out)]).exit_code == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "x").write_text("")
    r = CliRunner().invoke(main, ["probe", "--quick", "--out", str(mine)])
    assert r.exit_code == 2 and "desim probe only replaces a probe it wrote" in r.output
