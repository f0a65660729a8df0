"""The spinlock model against queueing theory, across utilisations up to 0.9.

Lock costs are set to zero so the lock is a pure FIFO single server (their effect is tested
exactly in tests/test_lock.py). Tolerance: each run's mean wait gets a 99% confidence interval
from 20 batch means (batching absorbs the strong autocorrelation of waits near saturation);
the closed form must fall inside it, widened by 2% for the bias of starting empty. Seeds are
fixed, so the outcome is deterministic: a model error of a few percent fails it. Times are
drawn in whole nanoseconds, as everywhere in desim (a 1 us mean makes the rounding negligible).
"""

from collections import deque

import numpy as np
import pytest
import simpy
from queueing import md1_wq, mm1_wq, repairman_wq
from scipy import stats

from desim.bench import BareCpu
from desim.model.lock import SpinLock
from desim.model.stats import LockClassStats

MU = 1.0 / 1000  # service rate: mean hold 1 us (ns units)


def _ns(x):
    return np.rint(x).astype(np.int64).tolist()


def _ci(waits, batches=20, level=0.99):
    w = np.asarray(waits[len(waits) // 20 :], dtype=float)  # drop the first 5% (empty start)
    m = len(w) // batches
    means = w[: m * batches].reshape(batches, m).mean(axis=1)
    half = stats.t.ppf(0.5 + level / 2, batches - 1) * means.std(ddof=1) / np.sqrt(batches)
    return means.mean(), half


def _open_queue(rho, service, n, seed):
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    lock = SpinLock(env, LockClassStats("q"), 0, 0)
    gaps = _ns(rng.exponential(1 / (rho * MU), n))
    holds = _ns(rng.exponential(1 / MU, n)) if service == "exp" else [round(1 / MU)] * n
    waits = []

    def customer(hold):
        cpu = BareCpu()
        t0 = env.now
        ev = lock.acquire(cpu)
        if ev is not None:
            yield ev
        waits.append(env.now - t0)
        yield env.timeout(hold)
        lock.release(cpu)

    def arrivals():
        for g, h in zip(gaps, holds, strict=True):
            yield env.timeout(g)
            env.process(customer(h))

    env.process(arrivals())
    env.run()
    return waits


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
def test_mm1_mean_wait(rho):
    mean, half = _ci(_open_queue(rho, "exp", 60_000 if rho < 0.9 else 200_000, seed=11))
    expected = mm1_wq(rho * MU, MU)
    assert abs(mean - expected) <= half + 0.02 * expected, (mean, half, expected)


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
def test_md1_mean_wait(rho):
    mean, half = _ci(_open_queue(rho, "det", 60_000 if rho < 0.9 else 150_000, seed=12))
    expected = md1_wq(rho * MU, MU)
    assert abs(mean - expected) <= half + 0.02 * expected, (mean, half, expected)


@pytest.mark.parametrize("n,think_over_hold", [(4, 10.0), (8, 10.0), (16, 20.0)])
def test_finite_source_mean_wait(n, think_over_hold):
    rng = np.random.default_rng(13)
    env = simpy.Environment()
    lock = SpinLock(env, LockClassStats("q"), 0, 0)
    lam = MU / think_over_hold
    waits = []
    cycles = 12_000

    def source():
        cpu = BareCpu()
        thinks = deque(_ns(rng.exponential(1 / lam, cycles)))
        holds = deque(_ns(rng.exponential(1 / MU, cycles)))
        while thinks:
            yield env.timeout(thinks.popleft())
            t0 = env.now
            ev = lock.acquire(cpu)
            if ev is not None:
                yield ev
            waits.append(env.now - t0)
            yield env.timeout(holds.popleft())
            lock.release(cpu)

    for _ in range(n):
        env.process(source())
    env.run()
    mean, half = _ci(waits)
    expected = repairman_wq(n, lam, MU)
    assert abs(mean - expected) <= half + 0.02 * expected, (mean, half, expected)


def test_closed_forms_limits():
    # Sanity of the formulas themselves: a single source never waits; M/D/1 waits half of M/M/1.
    assert repairman_wq(1, 0.1, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert md1_wq(0.5, 1.0) == pytest.approx(mm1_wq(0.5, 1.0) / 2)
