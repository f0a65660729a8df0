"""``lockstress`` end to end (YAML -> distributions -> CPUs -> machine locks) against queueing theory.

Lock costs are set to 0 so each lock is a pure FIFO server (their effect is tested exactly in
tests/test_lock.py; ``test_lock_costs_add_to_the_wait`` checks that they are charged here too).

Tolerance: the run is cut into B = 20 consecutive batches after a warm-up; each batch gives
a mean wait (wait time / acquisitions in the batch, from the lock-class statistics). The
closed form must lie inside the 99% Student-t confidence interval of the batch means, widened
by 3% of the expected value for the bias a finite run keeps (start-up, and ratio-estimator
bias of batch means). Batches of thousands of acquisitions are long against the queue's
relaxation time at these loads, so their means are nearly independent, which is what the t
interval needs. Seeds are fixed: the outcome is deterministic, and an error of a few percent
in the model (a handoff charged, an arrival lost, a CPU queueing delay) fails it.
"""

from fractions import Fraction
from math import factorial

import numpy as np
import pytest
from scipy import stats

from desim.config import validate
from desim.engine import build, simulate

HOLD_NS = 1000  # mean hold 1 us: mu = 1/1000 per ns
BATCHES = 20


def mm1_wq(lam: float, mu: float) -> float:
    """M/M/1 mean wait in queue: Wq = rho / (mu - lam)."""
    return (lam / mu) / (mu - lam)


def finite_source_wq(n: int, think: Fraction, hold: Fraction) -> Fraction:
    """M/M/1//N (machine repairman), exactly, in rational arithmetic.

    n sources think Exp(mean ``think``) then need the server for Exp(mean ``hold``).
    With r = hold/think: p_k = p_0 n!/(n-k)! r^k (k in the queue+service), p_0 from sum p_k = 1;
    the server is busy 1 - p_0 of the time, so throughput X = (1 - p_0)/hold; the thinking
    sources are n - L, so X = (n - L)/think gives L; Little: W = L/X; Wq = W - hold.
    """
    r = hold / think
    terms = [Fraction(factorial(n), factorial(n - k)) * r**k for k in range(n + 1)]
    p0 = 1 / sum(terms)
    x = (1 - p0) / hold
    L = n - x * think
    return L / x - hold


def _batched_wait(cfg_data: dict, total_ns: int, warm_ns: int):
    m = build(validate(cfg_data))
    env = m.env
    env.run(until=warm_ns)
    st = m.lock_classes["lockstress"]
    step = (total_ns - warm_ns) // BATCHES
    means = []
    for b in range(1, BATCHES + 1):
        n0, w0 = st.acquisitions, st.wait.total
        env.run(until=warm_ns + b * step)
        means.append((st.wait.total - w0) / (st.acquisitions - n0))
    means = np.array(means)
    half = stats.t.ppf(0.995, BATCHES - 1) * means.std(ddof=1) / np.sqrt(BATCHES)
    return float(means.mean()), float(half), m


def _cfg(workload, cpus, duration):
    return {
        "seed": 7,
        "duration": duration,
        "machine": {"cpus": cpus},
        "costs": {"lock_uncontended": 0, "lock_handoff": 0},
        "record": {"enabled": True},
        "safety": {"enabled": False},
        "workload": {"lockstress": workload},
    }


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_poisson_arrivals_exponential_holds_match_mm1(rho):
    lam = rho / HOLD_NS
    total = 150_000_000 if rho < 0.8 else 300_000_000  # 75k / 240k acquisitions
    # 32 CPUs: P(more than 32 in the system) = rho^32 < 1e-3, so arrivals practically never
    # queue for a CPU and the arrival stream the lock sees is the Poisson one.
    data = _cfg(
        {
            "mode": "open",
            "rate": f"{lam * 1e9}/s",
            "hold": {"dist": "exponential", "mean": f"{HOLD_NS}ns"},
        },
        32,
        total,
    )
    mean, half, m = _batched_wait(data, total, total // 20)
    expected = mm1_wq(lam, 1 / HOLD_NS)
    print(
        f"M/M/1 rho={rho}: simulated Wq {mean:.1f} ns +- {half:.1f} (99% CI), formula {expected:.1f} ns"
    )
    assert abs(mean - expected) <= half + 0.03 * expected, (mean, half, expected)
    # the lock's utilisation is rho: the hold time per unit time
    st = m.lock_classes["lockstress"]
    assert st.hold_total / total == pytest.approx(rho, rel=0.03)


@pytest.mark.parametrize("n,think_over_hold", [(4, 5), (8, 10), (16, 20)])
def test_closed_think_hold_loop_matches_finite_source_queue(n, think_over_hold):
    think = HOLD_NS * think_over_hold
    total = 120_000_000
    data = _cfg(
        {
            "mode": "closed",
            "think": {"dist": "exponential", "mean": f"{think}ns"},
            "hold": {"dist": "exponential", "mean": f"{HOLD_NS}ns"},
        },
        n,
        total,
    )
    mean, half, _ = _batched_wait(data, total, total // 20)
    expected = float(finite_source_wq(n, Fraction(think), Fraction(HOLD_NS)))
    print(
        f"M/M/1//{n} think/hold={think_over_hold}: simulated Wq {mean:.1f} ns +- {half:.1f}, "
        f"formula {expected:.1f} ns"
    )
    assert abs(mean - expected) <= half + 0.03 * expected, (mean, half, expected)


def test_finite_source_formula_limits():
    # one source never waits; a huge population with tiny per-source rate approaches M/M/1
    assert finite_source_wq(1, Fraction(10), Fraction(1)) == 0
    n = 600
    think = Fraction(n * 2)  # total offered rate n/think = 0.5 per unit, mu = 1
    assert float(finite_source_wq(n, think, Fraction(1))) == pytest.approx(
        mm1_wq(0.5, 1.0), rel=0.02
    )


def test_lock_costs_add_to_the_wait():
    # Deterministic: 2 CPUs, constant think and hold, so the second CPU always arrives while
    # the first holds. Hold 1000 ns, costs 25 ns + 100 ns handoff: the waiter is granted
    # handoff + cost after the release.
    data = _cfg({"mode": "closed", "think": "10ns", "hold": "1000ns", "cpus": 2}, 2, "1ms")
    data["costs"] = {"lock_uncontended": 25, "lock_handoff": 100}
    m = build(validate(data))
    m.env.run(until=20_000)
    st = m.lock_classes["lockstress"]
    assert st.contended > 0 and st.handoffs > 0
    # every contended wait is whole holds plus the 125 ns grant; none is shorter than that
    assert st.wait.lo >= 125


def test_k_locks_share_the_traffic():
    data = _cfg({"mode": "closed", "locks": 4, "think": "5us", "hold": "1us"}, 8, "20ms")
    r = simulate(validate(data))
    s = r.summary
    # every cycle took a lock once; up to one acquisition per CPU is still in progress at the end
    assert 0 <= s["lock.lockstress.acquisitions"] - s["count.lockstress.cycles"] <= 8
    # one lock for 8 CPUs at think/hold 5 would be ~saturated; four locks are far less contended
    one = dict(
        data, workload={"lockstress": {"mode": "closed", "locks": 1, "think": "5us", "hold": "1us"}}
    )
    s1 = simulate(validate(one)).summary
    assert s["lock.lockstress.wait_mean_ns"] < 0.5 * s1["lock.lockstress.wait_mean_ns"]


def test_open_mode_needs_a_rate():
    from desim.config import ConfigError

    with pytest.raises(ConfigError, match=r"workload\.lockstress\.rate: open mode needs"):
        validate(_cfg({"mode": "open"}, 2, "1ms"))
