"""Big machines: what makes them cheaper to simulate changes no outcome.

Each test runs the same small configurations both ways and compares every figure of the run
(summary, series, histograms, lock statistics, grace-period spans, violations).
"""

from pathlib import Path

import pytest
from conftest import run_outcome

from desim import rng
from desim.config import load_config
from desim.engine import simulate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# Every distribution the presets draw from, through both kinds of sampler (element uniforms and
# distribution samplers), and a long enough run that blocks are refilled many times.
BLOCK_CASES = [
    ("default", ["duration=30ms", "machine.cpus=4"]),
    ("kernel-build", ["duration=30ms"]),
    ("spawn-loop", ["duration=30ms"]),
    ("race-hunt", ["duration=15ms", "allocator.name=unsafe-immediate"]),
    ("s390", ["duration=30ms", "allocator.name=s390-hh"]),
]


@pytest.mark.parametrize("name,overrides", BLOCK_CASES)
def test_the_sampler_block_size_changes_no_value_drawn(monkeypatch, name, overrides):
    cfg = load_config(CONFIGS / f"{name}.yaml", ["warmup=0", *overrides])
    monkeypatch.setattr(rng, "BLOCK", 4096)
    big = run_outcome(simulate(cfg))
    monkeypatch.setattr(rng, "BLOCK", 7)  # odd and tiny: many refills, none aligned
    small = run_outcome(simulate(cfg))
    assert big == small


# Machines where most CPUs idle (so the tick visits few) or all are busy (so the GP kthread's
# placement finds no idle CPU), with grace periods running, callbacks queued on idle CPUs,
# preemptible and non-preemptible RCU, offloaded CPUs, and scheduler run queues that empty.
LAZY_CASES = [
    ("default", ["duration=40ms", "seed=3"]),
    (
        "default",
        [
            "duration=40ms",
            "machine.cpus=32",
            "machine.arch=x86-64-guest",
            "workload.faults.cpus=4",
            "workload.munmap.rate=5000/s",
        ],
    ),
    (
        "default",
        [
            "duration=30ms",
            "machine.cpus=16",
            "workload.faults.gaps=idle",
            "rcu.nocb_cpus=all",
            "rcu.lazy=true",
            "machine.arch=x86-64-guest",
        ],
    ),
    ("powerpc", ["duration=40ms"]),
    ("s390", ["duration=40ms", "allocator.name=s390-hh"]),
    ("kernel-build", ["duration=60ms", "machine.cpus=48"]),
    # a few more job slots than CPUs: a CPU whose queue empties pulls from a busier one
    ("kernel-build", ["duration=200ms", "machine.cpus=4", "workload.build.slots=5"]),
    ("spawn-loop", ["duration=40ms"]),
    ("race-hunt", ["duration=15ms", "allocator.name=unsafe-shared-rcuhead"]),
]


@pytest.mark.parametrize("name,overrides", LAZY_CASES)
def test_incremental_scans_give_the_same_run(monkeypatch, name, overrides):
    from desim.model import rcu as rcu_mod
    from desim.model import sched as sched_mod

    cfg = load_config(CONFIGS / f"{name}.yaml", ["warmup=0", *overrides])
    lazy = simulate(cfg)
    monkeypatch.setattr(rcu_mod, "EAGER_SCANS", True)
    monkeypatch.setattr(sched_mod, "EAGER_PULL", True)
    eager = simulate(cfg)
    assert run_outcome(lazy) == run_outcome(eager)
    assert lazy.summary["sim.events"] == eager.summary["sim.events"]


@pytest.mark.parametrize("case,partly_idle", [(1, True), (2, True), (5, True), (6, False)])
def test_the_sets_the_lazy_paths_read_match_the_cpus(case, partly_idle):
    name, overrides = LAZY_CASES[case]
    from desim.engine import build

    cfg = load_config(CONFIGS / f"{name}.yaml", ["warmup=0", *overrides])
    m = build(cfg)
    rcu = m.rcu
    seen = {"awake": 0, "cbs": 0}
    for t in range(1, 31):
        m.env.run(until=t * 1_000_000 - 1)
        awake = {c.id for c in m.cpus if not c.idle}
        cbs = {c.id for c in m.cpus if c.cbs.n and not c.offloaded}
        assert rcu.awake == awake
        assert rcu.cb_cpus == cbs
        seen["awake"] += 0 < len(awake) < len(m.cpus)
        seen["cbs"] += bool(cbs)
        sched = m.cpus[0].sched
        if sched is not None:
            assert sched.waiting == sum(len(q.queue) for q in sched.rqs)
    assert bool(seen["awake"]) == partly_idle
