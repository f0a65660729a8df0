"""Process populations: ``processes.scale``, KVM guests, populate-as-you-fault, per-process
rates, and placement: every operation of a placed process runs on its CPU."""

import math
from collections import defaultdict

import pytest
from conftest import make_config

from desim.config import ConfigError, validate
from desim.engine import build, simulate
from desim.model import mm_ops
from desim.workloads.base import shared


def _count_calls(monkeypatch, names):
    """Record (op, cpu id, mm id) for every call of the mm_ops functions ``names``."""
    calls = []
    for name in names:
        real = getattr(mm_ops, name)

        def wrapper(m, cpu, *args, _real=real, _name=name, **kw):
            mm = args[1] if _name != "do_fork" else None
            calls.append((_name, cpu.id, None if mm is None else mm.id))
            return _real(m, cpu, *args, **kw)

        monkeypatch.setattr(mm_ops, name, wrapper)
    return calls


OPS = ["handle_fault", "do_munmap", "collapse_pte_mapped_thp", "exit_mmap"]


def _placed(policy):
    return make_config(
        {"duration": "40ms", "machine.cpus": 4},
        workload={
            "processes": {
                "initial": 4,
                "persistent": 2,
                "tables": 8,
                "shmem_fraction": 1.0,
                "lifetime": "20ms",
                "placement": {"policy": policy, "cpus": [2, 3]},
            },
            "faults": {"mode": "per_process", "rate": "5000/s"},
            "munmap": {"mode": "per_process", "rate": "500/s", "tables": 1, "remap": True},
            "madv_collapse": {"mode": "per_process", "rate": "200/s"},
            "gup_fast": {"mode": "per_process", "rate": "2000/s"},
        },
    )


def test_every_operation_of_a_pinned_process_runs_on_its_cpu(monkeypatch):
    calls = _count_calls(monkeypatch, OPS)
    m = build(_placed("pinned"))
    m.env.run(until=40_000_000)
    by_mm = defaultdict(set)
    for _, cpu, mm in calls:
        by_mm[mm].add(cpu)
    assert {op for op, _, _ in calls} == set(OPS)
    assert all(len(cpus) == 1 for cpus in by_mm.values()), by_mm  # one CPU per process
    assert {c for cpus in by_mm.values() for c in cpus} == {2, 3}  # only the allowed ones
    assert m.counters["mm.exited"] == 2 and m.counters["gup_fast.walks"] > 0
    # and GUP-fast ran only there: the CPUs outside the set did nothing at all
    assert m.cpus[0].busy_ns == 0 and m.cpus[1].busy_ns == 0


def test_a_migrating_process_runs_each_operation_anywhere_in_its_set(monkeypatch):
    calls = _count_calls(monkeypatch, OPS)
    m = build(_placed("migrating"))
    m.env.run(until=40_000_000)
    by_mm = defaultdict(set)
    for _, cpu, mm in calls:
        by_mm[mm].add(cpu)
    assert all(cpus <= {2, 3} for cpus in by_mm.values())
    assert any(len(cpus) == 2 for cpus in by_mm.values())  # ops of one mm on both CPUs


def test_spread_gives_each_initial_process_its_own_cpu_while_there_are_enough():
    m = build(
        make_config(
            {"machine.cpus": 8},
            workload={"processes": {"initial": 6, "tables": 2, "placement": "spread"}},
        )
    )
    m.env.run(until=1_000_000)
    homes = [c.id for c in shared(m).homes.values()]
    assert sorted(homes) == [0, 1, 2, 3, 4, 5]


def test_scale_multiplies_the_population_and_the_fork_rate_not_what_is_per_process():
    def run(scale):
        cfg = make_config(
            {"duration": "200ms"},
            workload={
                "processes": {
                    "scale": scale,
                    "initial": 40,
                    "persistent": 20,
                    "guests": 4,
                    "tables": 3,
                    "guest_tables": 5,
                    "fork_rate": "400/s",
                    "lifetime": "1s",
                }
            },
        )
        m = build(cfg)
        m.env.run(until=1_000_000)
        first = list(m.mms)
        m.env.run(until=200_000_000)
        return first, m

    first, m = run(0.25)
    assert len(first) == 10  # 40 x 0.25
    guests = [mm for mm in first if mm.pgste]
    assert len(guests) == 1  # 4 x 0.25
    assert all(len(mm.tables) == 5 for mm in guests)
    assert all(len(mm.tables) == 3 for mm in first if not mm.pgste)
    forked = m.counters["mm.created"] - 10
    assert abs(forked - 20) <= 5 * math.sqrt(20)  # 400/s x 0.25 x 0.2 s
    first, m = run(1.0)
    assert len(first) == 40 and sum(mm.pgste for mm in first) == 4
    # a class given keeps one process however small the scale
    first, _ = run(0.01)
    assert len(first) == 1 and first[0].pgste


def test_persistent_and_guests_cannot_exceed_initial():
    with pytest.raises(ConfigError, match="workload.processes.persistent"):
        validate({"workload": {"processes": {"initial": 4, "persistent": 3, "guests": 2}}})
    with pytest.raises(ConfigError, match="workload.processes.guests: 5 exceeds initial"):
        validate({"workload": {"processes": {"initial": 4, "guests": 5}}})
    with pytest.raises(ConfigError, match="workload.processes.scale"):
        validate({"workload": {"processes": {"scale": 0}}})


def test_guests_are_never_collapsed():
    s = simulate(
        make_config(
            {"duration": "30ms"},
            workload={
                "processes": {"initial": 4, "guests": 4, "tables": 8, "shmem_fraction": 1.0},
                "madv_collapse": {"rate": "2000/s"},
                "khugepaged": {"scan_sleep": "1ms", "mappers": 4},
            },
        )
    ).summary
    assert s.get("count.tables.deferred", 0) == 0
    assert s["count.collapse.no_shmem_range"] > 0


def test_processes_forked_during_the_run_fault_their_tables_in():
    cfg = make_config(
        {"duration": "30ms"},
        workload={
            "processes": {
                "initial": 2,
                "persistent": 2,
                "tables": 6,
                "fork_rate": "200/s",
                "populate_on_fork": False,
            }
        },
    )
    m = build(cfg)
    m.env.run(until=1)
    assert all(len(mm.tables) == 6 for mm in m.mms)  # the initial ones start populated
    m.env.run(until=30_000_000)
    late = [mm for mm in m.mms if mm.id >= 2]
    assert late and all(len(mm.tables) == 0 for mm in late)  # nothing faults: nothing mapped
    cfg = make_config(
        {"duration": "30ms"},
        workload={
            "processes": {
                "initial": 0,
                "tables": 50,
                "fork_rate": "200/s",
                "populate_on_fork": False,
            },
            "faults": {"mode": "per_process", "rate": "2000/s"},
        },
    )
    m = build(cfg)
    m.env.run(until=30_000_000)
    sizes = [len(mm.tables) for mm in m.mms]
    # each fills up as it faults: a fault below the target populates one table
    assert len(m.mms) >= 2 and max(sizes) > 0 and min(sizes) < 50
    assert sum(sizes) == m.counters["tables.allocated"]


@pytest.mark.parametrize("element", ["munmap", "madv_collapse", "gup_fast"])
def test_a_per_process_rate_grows_with_the_population(element):
    counter = {
        "munmap": "munmap.count",
        "madv_collapse": "collapse.madvise",
        "gup_fast": "gup_fast.walks",
    }[element]
    params = {"mode": "per_process", "rate": "400/s"}
    if element == "munmap":
        params |= {"tables": 1, "remap": True}

    def count(n):
        s = simulate(
            make_config(
                {"duration": "100ms"},
                workload={
                    "processes": {
                        "initial": n,
                        "persistent": n,
                        "tables": 64,
                        "shmem_fraction": 1.0,
                    },
                    element: params,
                },
            )
        ).summary
        return s[f"count.{counter}"]

    for n in (2, 8):
        expected = n * 400 * 0.1
        assert abs(count(n) - expected) <= 5 * math.sqrt(expected)


def test_a_per_process_rate_starts_over_the_whole_initial_population():
    # 50 processes forked one after another on one CPU, each munmapping every 20 ms (constant
    # gaps): 0.4 ms apart machine-wide once all exist. Drawn over the first mm forked alone,
    # the first gap would be 20 ms and the 40 ms window would see about half as many.
    cfg = make_config(
        {"duration": "40ms", "machine.cpus": 1},
        workload={
            "processes": {"initial": 50, "persistent": 50, "tables": 4},
            "munmap": {
                "mode": "per_process",
                "rate": {"dist": "constant", "value": "20ms"},
                "tables": 1,
                "remap": True,
            },
        },
    )
    m = build(cfg)
    m.env.run(until=40_000_000)
    # every gap 0.4 ms from the end of the forks (50 x the fork cost, 3 ms) on
    assert m.counters["munmap.count"] >= (40 - 4) / 0.4 - 2
