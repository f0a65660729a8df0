"""Workload elements on small deterministic scenarios: IRQs-off walkers, collapse, pressure,
phases and placement."""

import math

import pytest
from conftest import make_config, make_machine, run_task

from desim.config import ConfigError, validate
from desim.engine import build, simulate
from desim.model import mm_ops
from desim.model.memory import LIVE, PENDING
from desim.workloads.base import Placement, Placer, shared
from desim.workloads.gup_fast import gup_fast_walk


def _mm_with_tables(m, n=2, shmem=True):
    def body(cpu, task):
        mm = yield from mm_ops.do_fork(m, cpu, n)
        for _ in range(n):
            yield from mm_ops.populate(m, cpu, task, mm, shmem)
        return mm

    return run_task(m, 0, body)


def test_ipi_waits_for_an_irqs_off_walker():
    m = make_machine()
    mm = _mm_with_tables(m)
    c = m.costs
    t_start = m.env.now
    done = {}

    def walker():
        cpu = m.cpus[1]
        cpu.acquire(object())
        yield from gup_fast_walk(m, cpu, mm, 0.0, 16, 10_000)
        done["walk"] = m.env.now
        cpu.release()

    def sender():
        yield m.env.timeout(1000)
        cpu = m.cpus[0]
        cpu.acquire(object())
        yield from m.ipi_all(cpu)
        done["ipi"] = m.env.now
        cpu.release()

    m.env.process(walker())
    m.env.process(sender())
    m.env.run(until=t_start + 100_000)
    assert done["walk"] == t_start + 10_000
    # handled only once IRQs are back on (the 2 us latency overlapped the wait), then the handler
    assert done["ipi"] == done["walk"] + c.ipi_handler
    assert m.counters["ipi.waited_irqs_off"] == 1
    assert not m.irqs_off


def test_ipi_without_walkers_costs_latency_plus_handler():
    m = make_machine()
    out = run_task(m, 0, lambda cpu, task: _timed(m, cpu))
    assert out == m.costs.ipi_latency + m.costs.ipi_handler


def _timed(m, cpu):
    t0 = m.env.now
    yield from m.ipi_all(cpu)
    return m.env.now - t0


def test_walker_is_an_rcu_reader():
    m = make_machine()
    mm = _mm_with_tables(m)
    seen = []

    def body(cpu, task):
        gen = gup_fast_walk(m, cpu, mm, 0.0, 1, 500)
        ev = next(gen)
        seen.append((cpu.nesting, cpu in m.irqs_off))
        yield ev
        yield from gen

    run_task(m, 2, body)
    assert seen == [(1, True)]
    assert m.cpus[2].nesting == 0


def test_madv_collapse_defers_under_mmap_read_lock_only():
    m = make_machine()
    mm = _mm_with_tables(m, 3)
    table = mm.tables[1]
    seen = []

    def body(cpu, task):
        gen = mm_ops.collapse_pte_mapped_thp(m, cpu, task, mm, table, 5000)
        ev = next(gen)
        seen.append((mm.mmap_lock.readers, m.i_mmap_lock.readers, mm.mmap_lock.writer))
        yield ev
        yield from gen

    run_task(m, 1, body)
    assert seen == [(1, 0, False)]
    assert table.state == PENDING and table not in mm.tables and len(mm.tables) == 2
    assert m.counters["collapse.madvise"] == 1 and m.counters["tables.deferred"] == 1
    assert mm.mmap_lock.readers == 0


def test_nowait_failure_rate_matches():
    cfg = make_config(workload={"memory_pressure": {"nowait_fail": 0.25}})
    m = build(cfg)
    n = 20_000
    fails = sum(m.pages.nowait_fail() for _ in range(n))
    assert abs(fails / n - 0.25) <= 5 * math.sqrt(0.25 * 0.75 / n)


def test_watermark_fails_nowait_below_min_free():
    cfg = make_config(
        {"machine.memory_limit": "40KiB"}, workload={"memory_pressure": {"min_free_pages": 3}}
    )
    m = build(cfg)
    cpu = m.cpus[0]
    got = [m.pages.alloc(cpu, "x") for _ in range(7)]  # 10 - 7 = 3 free: not below
    assert all(got) and m.pages.alloc(cpu, "tlb_batch", nowait=True) is not None
    assert m.pages.alloc(cpu, "tlb_batch", nowait=True) is None  # 2 free < 3
    assert m.counters["pressure.watermark_failures"] == 1


def test_pressure_sends_mmu_gather_to_the_ipi_path_safely():
    # an RCU-batched machine: bare-metal x86 allocates no batch page that could fail
    s = simulate(
        make_config(
            {"duration": "30ms", "machine.arch": "x86-64-guest"},
            workload={
                "processes": {"initial": 8, "tables": 8, "fork_rate": "500/s", "lifetime": "5ms"},
                "gup_fast": {"rate": "200000/s"},
                "memory_pressure": {"nowait_fail": 1.0},
            },
        )
    ).summary
    assert s["count.tlb.sync_frees"] > 0 and s["ipi.sent"] > 0
    assert s.get("count.tlb.batches", 0) == 0
    assert s["safety.violations"] == 0


def test_phases_scale_rates_without_recreating_processes():
    cfg = make_config(
        {"machine.cpus": 8, "duration": "40ms"},
        workload={
            "processes": {"initial": 4, "persistent": 4, "tables": 4},
            "lockstress": {"mode": "open", "rate": "1000000/s", "hold": "10ns"},
            "phases": [
                {"duration": "10ms", "mix": {"lockstress": 0}},
                {"duration": "10ms", "mix": {"lockstress": 2}},
                {"duration": "10ms", "mix": {}},
            ],
        },
    )
    m = build(cfg)
    counts = []
    for t in (10_000_000, 20_000_000, 30_000_000):
        m.env.run(until=t)
        counts.append(m.counters["lockstress.arrivals"])
    per = [counts[0], counts[1] - counts[0], counts[2] - counts[1]]
    assert per[0] == 0
    assert abs(per[1] - 20_000) <= 5 * math.sqrt(20_000)
    assert abs(per[2] - 10_000) <= 5 * math.sqrt(10_000)
    assert m.counters["mm.created"] == 4 and shared(m).phase == 2


def test_placement_policies():
    m = make_machine({"machine.cpus": 4})
    u = iter([0.1, 0.9, 0.5, 0.3] * 10).__next__
    pinned = Placer(m, Placement(policy="pinned", cpus=(1, 3)), u)
    assert [pinned.home().id for _ in range(4)] == [1, 3, 1, 3]
    spread = Placer(m, Placement(policy="spread"), u)
    m.cpus[0].acquire(object())
    m.cpus[1].acquire(object())
    assert spread.home().id == 2
    mig = Placer(m, Placement(policy="migrating"), u)
    assert {mig.where(m.cpus[0]).id for _ in range(4)} == {0, 3, 2, 1}
    assert Placement.model_validate("pinned").policy == "pinned"
    with pytest.raises(ConfigError, match="workload.processes.placement.cpus: CPU 7"):
        validate({"machine": {"cpus": 4}, "workload": {"processes": {"placement": {"cpus": [7]}}}})


def test_pinned_processes_live_on_their_cpus_and_persistent_ones_stay():
    cfg = make_config(
        {"duration": "10ms"},
        workload={
            "processes": {
                "initial": 6,
                "persistent": 2,
                "tables": 2,
                "lifetime": "1ms",
                "placement": {"policy": "pinned", "cpus": [2, 3]},
            }
        },
    )
    m = build(cfg)
    m.env.run(until=500_000)
    assert {c.id for c in shared(m).homes.values()} == {2, 3}
    m.env.run(until=10_000_000)
    assert len(m.mms) == 2 and m.counters["mm.exited"] == 4
    assert all(t.state == LIVE for mm in m.mms for t in mm.tables)


def test_per_process_faults_follow_the_population():
    s = simulate(
        make_config(
            {"duration": "50ms"},
            workload={
                "processes": {"initial": 10, "persistent": 10, "tables": 4},
                "faults": {"mode": "per_process", "rate": "2000/s"},
            },
        )
    ).summary
    expected = 10 * 2000 * 0.05
    assert abs(s["fault.count"] - expected) <= 5 * math.sqrt(expected) + 40  # + populate faults


def test_phases_scale_rcu_callers_too():
    cfg = make_config(
        {"machine.cpus": 4, "duration": "80ms"},
        workload={
            "rcu_callers": {"rate": "2000/s"},
            "phases": [
                {"duration": "20ms", "mix": {"rcu_callers": 0}},
                {"duration": "20ms", "mix": {"rcu_callers": 3}},
                {"duration": "40ms", "mix": {"rcu_callers": 0}},
            ],
        },
    )
    m = build(cfg)
    m.env.run(until=20_000_000)
    assert m.rcu.sync_latency.n == 0  # no caller in a phase that mixes it out
    m.env.run(until=80_000_000)  # the second phase's calls have all returned
    n = m.rcu.sync_latency.n
    assert abs(n - 120) <= 5 * math.sqrt(120)  # 3 x 2000/s for 20 ms
