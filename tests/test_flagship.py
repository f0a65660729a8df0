"""The flagship experiment (experiments/pte-free-defer.yaml): it expands to the intended
design x CPU points, every point is a valid config, and a heavily shortened subset runs."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from desim.sweep.experiment import load_experiment
from desim.sweep.worker import compute_run

EXP = Path(__file__).resolve().parents[1] / "experiments" / "pte-free-defer.yaml"

DESIGNS = [
    ("generic", "4KiB", {}),
    ("generic", "4KiB", {}),  # on arm64
    ("powerpc", "64KiB", {"geometry": "hash64k"}),
    ("powerpc-refcount", "64KiB", {"geometry": "hash64k"}),
    ("powerpc-always-rcu", "64KiB", {"geometry": "hash64k"}),
    ("powerpc", "64KiB", {"geometry": "radix64k"}),
    ("powerpc-refcount", "64KiB", {"geometry": "radix64k"}),
    ("percpu-pool", "64KiB", {"fragment_size": "4KiB"}),
    ("s390", "4KiB", {}),
    ("s390-fullpage", "4KiB", {}),
    ("s390-hh", "4KiB", {"mm_lifetime": "synchronize_rcu", "list_lock": "global"}),
    ("s390-hh", "4KiB", {"mm_lifetime": "rcu_barrier", "list_lock": "global"}),
    ("s390-hh", "4KiB", {"mm_lifetime": "mmdrop_async", "list_lock": "global"}),
    ("s390-hh", "4KiB", {"mm_lifetime": "mmdrop_async", "list_lock": "per_mm"}),
]
CPUS = [4, 16, 64]


def _design(spec):
    cfg = spec.config
    return (
        cfg["allocator"]["name"],
        cfg["machine"]["page_size"],
        cfg["allocator"].get("params") or {},
    )


def test_expands_to_designs_times_cpus():
    exp = load_experiment(EXP)
    assert exp.replications >= 3
    specs = exp.runs()
    assert len(specs) == len(DESIGNS) * len(CPUS) * exp.replications
    assert all(s.invalid is None for s in specs), [s.invalid for s in specs if s.invalid]
    points = {(s.config["machine"]["cpus"],) + tuple(map(str, _design(s))) for s in specs}
    want = {(c, n, p, str(params)) for c in CPUS for n, p, params in DESIGNS}
    assert points == want
    # every design sees churn and retraction: fork/exit, munmap and khugepaged all enabled
    w = specs[0].config["workload"]
    assert {"processes", "munmap", "khugepaged", "faults"} <= set(w)


def _short(spec, cpus: int):
    cfg = copy.deepcopy(spec.config)
    cfg["duration"] = "8ms"
    cfg["warmup"] = "1ms"
    cfg["machine"]["cpus"] = cpus
    return dataclasses.replace(spec, config=cfg)


def test_shortened_subset_runs():
    exp = load_experiment(EXP)
    seen: dict[str, dict] = {}
    for s in exp.runs():
        if s.replication != 0 or s.config["machine"]["cpus"] != 4:
            continue
        arch = s.config["machine"].get("arch")
        key = (
            s.config["allocator"]["name"]
            + str(s.config["allocator"].get("params"))
            + ("" if arch in (None, "x86-64") else f"@{arch}")
        )
        if key in seen:
            continue
        out = compute_run(_short(s, 4))
        assert out.error is None, out.error
        summary = out.result.summary
        # powerpc 6.6's pte_frag_destroy may free an Active page (bad_page_state); nothing else
        assert summary["safety.violations"] == summary["safety.bad_page_state"]
        seen[key] = summary
    assert len(seen) == len(DESIGNS)
    # powerpc's no-reuse policy strands fragments; the per-table generic design never does
    assert seen["generic{}"]["mem.stranded.mean_bytes"] == 0
