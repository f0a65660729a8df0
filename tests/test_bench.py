"""The benchmark's workings (never its timings): every lock kind simulates the same queue, and
the verdicts read the targets the right way round."""

import pytest

from desim.bench import TARGETS, _closed_queue, verdicts


@pytest.mark.parametrize("think,waited", [(500, (0.99, 1.0)), (12_700, (0.4, 0.6))])
def test_every_lock_kind_simulates_the_same_closed_queue(think, waited):
    # Same seeded think times, FIFO, zero lock costs: the same cycles in the same simulated time,
    # so the wall-clock ratios compare like with like.
    done = {k: _closed_queue(k, 64, 2_000_000, think) for k in ("resource", "bare", "spinlock")}
    counts = {k: v[0] for k, v in done.items()}
    assert counts["resource"] == counts["bare"] == counts["spinlock"] > 0
    lo, hi = waited
    assert lo <= done["spinlock"][2] <= hi


def test_verdicts_compare_each_figure_with_its_target():
    met = {k: (t * 1.01 if op == ">=" else t * 0.99) for k, (op, t) in TARGETS.items()}
    missed = {k: (t * 0.99 if op == ">=" else t * 1.01) for k, (op, t) in TARGETS.items()}
    assert all(verdicts(met).values()) and len(verdicts(met)) == len(TARGETS)
    assert not any(verdicts(missed).values())
    assert verdicts({}) == {}


def test_scaling_run_reports_the_steady_part_per_simulated_second():
    from desim.bench import REPO, scaling_run

    r = scaling_run(str(REPO / "configs" / "default.yaml"), 2, 2)
    assert set(r) == {
        "wall_s_per_sim_s",
        "cpu_s_per_sim_s",
        "events_per_sim_s",
        "faults_per_sim_s",
        "peak_rss_mb",
    }
    # 2 CPUs faulting every ~20 us: about 2 x 48k faults per simulated second (think + ~1 us)
    assert 60_000 < r["faults_per_sim_s"] < 130_000
    assert r["events_per_sim_s"] > r["faults_per_sim_s"]
    assert r["peak_rss_mb"] > 0
