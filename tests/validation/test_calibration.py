"""Each calibration profile reproduces the public figures its comments cite.

Tolerances: the cited figures are single published measurements on unstated hardware
(DOMAIN.md section 2), and each run here makes ~100 synchronize calls (2 s at 50/s), whose
sample median has a relative standard error near 10%. We therefore accept a profile within
±25% of a cited median or mean, and require the cited range to contain the bulk of our
distribution. Mechanisms (two ticks, two FQS waits) are asserted within the histogram's bin
width. A profile that no longer reproduces its figure is marked xfail (strict) with the
modelling choice responsible; no constant is re-tuned to make it pass.
"""

from pathlib import Path

import pytest

from desim.config import load_config, validate
from desim.engine import simulate

PROFILES = Path(__file__).resolve().parents[2] / "configs" / "calibration"
MS = 1e6
US = 1e3


def run(name, *overrides):
    return simulate(load_config(PROFILES / f"{name}.yaml", list(overrides))).summary


@pytest.fixture(scope="module")
def laptop():
    return run("laptop-x86")


def test_laptop_gp_is_two_ticks_of_user_busy_cpus(laptop):
    # Every CPU faults with 200 us of user-mode think time: each notices the GP at one tick and
    # reports at the next, so GPs last two jiffies (the histogram's bin puts p50 within 5%).
    assert 2 * MS <= laptop["rcu.gp.p50_ns"] <= 2.1 * MS
    # synchronize_rcu: up to a jiffy until cpu's tick requests the GP, the GP, up to a jiffy
    # until the caller's CPU notices its end.
    assert 3 * MS <= laptop["rcu.synchronize.mean_ns"] <= 5 * MS


@pytest.mark.xfail(
    strict=True,
    reason=(
        "not reproduced since issue 16: the laptop's CPUs now run their think time as user code, "
        "whose ticks report a QS at the second tick (2 ms GPs, 3.7 ms synchronize_rcu); the ~6 ms "
        "figure is an idle box's, whose GP waits for FQS scans (test_idle_32cpu_box_two_fqs_waits)"
    ),
)
def test_laptop_idle_synchronize_rcu_is_a_few_ms(laptop):
    assert 4 * MS <= laptop["rcu.synchronize.mean_ns"] <= 8 * MS  # cited ~6 ms


def test_laptop_at_hz250_gp_is_two_ticks_of_4ms():
    s = run("laptop-x86", "machine.hz=250", "duration=1s")
    assert 8 * MS <= s["rcu.gp.p50_ns"] <= 8.4 * MS


def test_idle_32cpu_box_two_fqs_waits():
    # Joel Fernandes' idle 32-CPU HZ=1000 box (ANCHORS.md): mean 9.75 ms (run means 8.05-10.16),
    # max 25.72 ms, "two FQS waits of ~3 ms each". The model's v6.6 rules give the two waits
    # (the GP kthread's CPU is busy at the first scan) without any tuned constant.
    s = simulate(
        validate(
            {
                "seed": 1,
                "duration": "2s",
                "machine": {"cpus": 32, "hz": 1000},
                "workload": {"rcu_callers": {"rate": "50/s"}},
            }
        )
    ).summary
    assert s["rcu.gp.p50_ns"] == pytest.approx(6 * MS, rel=0.01)
    assert 0.75 * 9.75 * MS <= s["rcu.synchronize.mean_ns"] <= 1.25 * 9.75 * MS
    assert s["rcu.synchronize.max_ns"] <= 25.72 * MS


def test_laptop_fault_latency_about_1us(laptop):
    assert 0.75 * US <= laptop["fault.p50_ns"] <= 1.25 * US  # cited ~1 us median


def test_laptop_expedited():
    s = run("laptop-x86", "workload.rcu_callers.kind=expedited")
    assert 0.75 * 70 * US <= s["rcu.expedited.p50_ns"] <= 1.25 * 70 * US  # cited median ~70 us
    assert 0.75 * 150 * US <= s["rcu.expedited.mean_ns"] <= 1.25 * 150 * US  # cited mean ~150 us
    assert 1 * MS <= s["rcu.expedited.max_ns"] <= 5 * MS  # cited max 2.3 ms


def test_laptop_lock_handoff_is_one_cache_line_transfer():
    cfg = load_config(PROFILES / "laptop-x86.yaml")
    assert cfg.costs.lock_handoff == 100  # cited ~100 ns; test_lock.py checks how it is charged


def test_server32_synchronize_rcu_mean_about_10ms():
    s = run("server-32")
    assert 7.5 * MS <= s["rcu.synchronize.mean_ns"] <= 12.5 * MS  # cited mean ~10 ms
    assert s["rcu.synchronize.max_ns"] <= 26 * MS * 1.25  # cited range 6-26 ms


@pytest.mark.xfail(
    strict=True,
    reason=(
        "not reproduced since issue 16 (p50 61 ms): the profile's kernel sections were sized under "
        "the old rules, where the first FQS scan credited every CPU that had idled at any time "
        "since the GP began and a tick needed no noticing; under v6.6's snapshot-then-since scans "
        "and QS-after-noticing, 64 CPUs in 5 ms sections hold GPs ~28 ms (p50), and a caller "
        "arriving mid-GP waits for the next one too"
    ),
)
def test_server64_synchronize_rcu_median_about_37ms():
    s = run("server-64")
    assert 0.75 * 37 * MS <= s["rcu.synchronize.p50_ns"] <= 1.25 * 37 * MS  # cited median 37
    assert s["rcu.synchronize.max_ns"] <= 64 * MS * 1.25  # cited range 8-64


@pytest.mark.parametrize("name", ["powerpc-hash64k", "s390-lpar"])
def test_hz100_servers_gp_is_two_jiffies(name):
    s = run(name)
    # Two jiffies of 10 ms: two ticks (notice, then report) for CPUs in user mode, two FQS
    # waits of 1 jiffy for the GP kthread's CPU when idle.
    assert 20 * MS <= s["rcu.gp.p50_ns"] <= 21 * MS
    # + up to a jiffy to request the GP and up to one to notice its end
    assert 30 * MS <= s["rcu.synchronize.mean_ns"] <= 45 * MS
    assert s["rcu.synchronize.max_ns"] <= 60 * MS
    assert 0.75 * US <= s["fault.p50_ns"] <= 1.25 * US
    assert s["safety.violations"] == 0


def test_powerpc_profile_strands_fragments_and_s390_pairs_halves():
    ppc = run("powerpc-hash64k")
    assert ppc["mem.stranded.mean_bytes"] > 0  # holes are never reused
    s390 = run("s390-lpar")
    assert s390["mem.held.mean_bytes"] < 2 * s390["mem.live.mean_bytes"]  # halves pair up
