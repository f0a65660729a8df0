"""The scheduler, the closed-loop elements and the mm-lifetime rules on small deterministic runs."""

import pytest

from desim.config import validate
from desim.engine import simulate

SPAWN = {
    "seed": 3,
    "duration": "40ms",
    "machine": {"cpus": 2, "hz": 250},
    "workload": {"spawn": {"mode": "per_cpu", "work": "100us", "tables": 3}},
}


def _spawn(**top):
    return simulate(validate({**SPAWN, **top})).summary


def test_spawn_iterations_are_exact_and_every_mm_is_freed():
    s = _spawn(mm_lifetime="none")
    # fork+exec 60 us, 3 faults allocating a table each, 100 us of work, exit 30 us + tables
    assert 150_000 < s["spawn.latency.mean_ns"] < 250_000
    assert s["count.mm.freed"] == s["count.mm.exited"] == s["spawn.children"]
    assert s["safety.violations"] == 0
    assert s["sched.ctx_switches"] >= 2 * s["spawn.children"]  # to the child and back


@pytest.mark.parametrize("rule", ["synchronize_rcu_exit_mmap", "rcu_barrier"])
def test_a_wait_in_exit_mmap_is_on_the_parents_critical_path(rule):
    base = _spawn(mm_lifetime="none")
    s = _spawn(mm_lifetime=rule)
    # each iteration now waits a grace period (ms at HZ=250) before wait4 returns
    assert s["spawn.latency.mean_ns"] > 4_000_000 > base["spawn.latency.mean_ns"]
    assert s["safety.violations"] == 0


@pytest.mark.parametrize(
    "rule", ["synchronize_rcu_mmdrop", "call_rcu", "mmdrop_async", "slab_typesafe_by_rcu"]
)
def test_a_wait_at_the_final_mmdrop_is_off_the_critical_path(rule):
    base = _spawn(mm_lifetime="none")
    s = _spawn(mm_lifetime=rule)
    assert s["spawn.per_s"] == pytest.approx(base["spawn.per_s"], rel=0.02)
    if rule == "synchronize_rcu_mmdrop":
        # every exit's last mmdrop runs in finish_task_switch: a sleep in atomic context
        assert s["safety.sleep_in_atomic"] == s["count.mm.exited"] > 0
        assert s["safety.violations"] == s["safety.sleep_in_atomic"]
    else:
        assert s["safety.violations"] == 0
        assert s["count.mm.freed"] <= s["count.mm.exited"]


def test_s390_hh_maps_its_own_rules():
    s = _spawn(mm_lifetime="synchronize_rcu_exit_mmap", allocator="s390-hh")
    assert s["rcu.synchronize.count"] == s["count.mm.exited"] > 0
    s = _spawn(mm_lifetime="call_rcu", allocator="s390-hh")
    assert s["count.mm.freed"] <= s["count.mm.exited"] and s["safety.violations"] == 0


def test_slices_preempt_only_where_tasks_wait():
    cfg = {
        "seed": 1,
        "duration": "300ms",
        "machine": {"cpus": 2, "hz": 1000},
        "workload": {
            "build": {
                "slots": 2,
                "jobs": 4,
                "chain": [{"name": "cc1", "burst": "20ms", "tables": 2}],
            }
        },
    }
    s = simulate(validate(cfg)).summary
    assert s["sched.preemptions"] == 0 and s["sched.ticks"] == 0  # one task per CPU
    assert s["build.jobs_done"] == 4
    cfg["workload"]["build"]["slots"] = 4
    s = simulate(validate(cfg)).summary
    assert s["sched.preemptions"] > 0 and s["sched.rq_wait.max_ns"] > 0
    # 4 jobs x 20 ms on 2 CPUs: at least 40 ms; slices and switches add little
    assert 40_000_000 < s["build.makespan_ns"] < 46_000_000


def test_bad_mm_lifetime_names_the_field():
    from desim.config import ConfigError

    with pytest.raises(ConfigError, match=r"^mm_lifetime: .*'none'"):
        validate({"mm_lifetime": "later"})
