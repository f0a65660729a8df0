"""The scheduler against closed forms: finite-source M/M/c//N and a hand-computed round robin."""

import numpy as np
import pytest
from simpy.events import Timeout

from desim.config import validate
from desim.model.machine import Machine
from desim.model.sched import scheduler
from tests.validation.queueing import finite_source_mmc


def _machine(cpus: int, hz: int = 1000, **sched) -> Machine:
    cfg = validate(
        {
            "machine": {"cpus": cpus, "hz": hz},
            "sched": sched,
            "record": {"enabled": False},
            "safety": {"enabled": False},
        }
    )
    return Machine(cfg)


def _cycling(m, sched, task, think, burst, done):
    """A source: think off-CPU (sleeping), then one CPU burst; forever."""
    yield from sched.start(task)
    while True:
        yield from sched.sleep(task, Timeout(m.env, think()))
        yield from sched.run_user(task, burst())
        done[0] += 1


@pytest.mark.parametrize("n,c,rho", [(4, 2, 0.3), (8, 2, 0.5), (6, 4, 0.8), (12, 3, 1.0)])
def test_finite_source_mmc(n, c, rho):
    """n tasks with exponential think and burst times on c CPUs: M/M/c//N.

    ``rho`` is the offered load n (lam/mu) / c. The slice is longer than any burst, so each
    burst runs to its end (FCFS service); ``newidle_balance`` keeps the CPUs work-conserving.
    Tolerances: 4% on throughput, 10% on the mean run-queue wait (from ~40,000 bursts).
    """
    mean_burst = 1_000_000  # 1 ms
    lam_over_mu = rho * c / n
    mean_think = mean_burst / lam_over_mu
    m = _machine(c, slice="10s", switch_cost=0)
    sched = scheduler(m)
    rng = np.random.default_rng(7)
    done = [0]
    for _ in range(n):
        think = lambda: max(1, round(rng.exponential(mean_think)))  # noqa: E731
        burst = lambda: max(1, round(rng.exponential(mean_burst)))  # noqa: E731
        m.env.process(_cycling(m, sched, sched.new_task(), think, burst, done))
    warm = 200_000_000
    m.env.run(until=warm)
    sched.clear_stats()
    d0 = done[0]
    span = 20_000_000_000 // max(1, round(rho * c))
    m.env.run(until=warm + span)
    x_sim = (done[0] - d0) / span
    x, wq = finite_source_mmc(n, c, 1 / mean_think, 1 / mean_burst)
    assert x_sim == pytest.approx(x, rel=0.04)
    assert sched.rq_wait.mean == pytest.approx(wq, rel=0.10, abs=0.01 * mean_burst)


def _run_to_exit(m, sched, task, burst, ends):
    yield from sched.start(task)
    yield from sched.run_user(task, burst)
    cpu = task.cpu
    ev = cpu.syscall(task)
    if ev is not None:
        yield ev
    ends[task.name] = m.env.now
    sched.exit(task)


@pytest.mark.parametrize(
    "cost,expected",
    [
        # cost 0: A runs 0-3 (slice), B 3-5 (done), C 5-8 (slice), A 8-10 (done), C 10-14.
        (0, {"A": 10_000_000, "B": 5_000_000, "C": 14_000_000}),
        # cost 1 us, taken from the incoming task at each switch between tasks: C's slice ends at
        # 8.001 ms, so the tick that sees it is the one at 9 ms; A then runs 9-11.001, C the rest.
        (1000, {"A": 11_001_000, "B": 5_001_000, "C": 14_004_000}),
    ],
)
def test_single_cpu_round_robin(cost, expected):
    """One CPU, HZ=1000, a 3 ms slice, bursts of 5, 2 and 7 ms started in that order at 0."""
    m = _machine(1, slice="3ms", switch_cost=cost)
    sched = scheduler(m)
    ends: dict[str, int] = {}
    for name, burst in (("A", 5_000_000), ("B", 2_000_000), ("C", 7_000_000)):
        m.env.process(_run_to_exit(m, sched, sched.new_task(name), burst, ends))
    m.env.run(until=100_000_000)
    assert ends == expected
    assert sched.preemptions == 2
