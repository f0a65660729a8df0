"""Whole runs: determinism by seed, conservation of pages and bytes, warm-up."""

import json

from conftest import make_config

from desim import engine
from desim.engine import build, simulate
from desim.model import mm_ops

WORKLOAD = {
    "processes": {
        "initial": 8,
        "fork_rate": "300/s",
        "lifetime": "8ms",
        "tables": {"dist": "uniform", "low": 4, "high": 16},
    },
    "faults": {"think": "10us"},
    "munmap": {"rate": "2000/s"},
    "khugepaged": {"scan_sleep": "1ms"},
}


def test_same_seed_same_summary_other_seed_differs():
    cfg = make_config({"duration": "40ms"}, workload=WORKLOAD)
    a = simulate(cfg).summary
    b = simulate(cfg).summary
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    c = simulate(cfg.model_copy(update={"seed": 2})).summary
    assert a != c


def test_pages_and_bytes_balance_at_the_end_of_a_run():
    cfg = make_config({"duration": "40ms"}, workload=WORKLOAD)
    m = build(cfg)
    m.env.run(until=cfg.duration)
    pages = m.pages
    real = sum(1 for p in m.allocator.held_pages if p.allocated)
    assert pages.allocated - pages.freed == pages.held
    assert pages.pages_held("pgtable") == real == len(m.allocator.held_pages)
    acc = m.allocator.account
    assert acc.held == real * cfg.machine.page_size
    assert acc.as_tuple() == m.allocator.audit().as_tuple()
    assert m.counters["mm.exited"] > 0 and m.counters["tables.deferred"] > 0


def test_warmup_restarts_statistics_but_not_state():
    cfg = make_config({"duration": "40ms", "warmup": "20ms"}, workload=WORKLOAD)
    r = simulate(cfg)
    assert r.series["t_ns"][0] >= 20_000_000
    full = simulate(make_config({"duration": "40ms"}, workload=WORKLOAD))
    assert 0 < r.summary["fault.count"] < full.summary["fault.count"]
    # The page allocator's own counters are state, not statistics: they are not reset.
    assert r.summary["pages.allocated"] == full.summary["pages.allocated"]


def test_memory_series_conserves_bytes_at_every_sample():
    cfg = make_config({"duration": "30ms", "record.sample_interval": "500us"}, workload=WORKLOAD)
    r = simulate(cfg)
    s = r.series
    for i in range(len(s["t_ns"])):
        parts = s["live"][i] + s["pending"][i] + s["stranded"][i] + s["spare"][i] + s["internal"][i]
        assert parts == s["held"][i] == s["pgtable_pages"][i] * cfg.machine.page_size


def _step_below(env, until):
    """The plain loop: every event before ``until``, one at a time, counted."""
    n = 0
    while env._queue and env._queue[0][0] < until:
        env.step()
        n += 1
    return n


def test_checkpointed_run_steps_exactly_the_events_before_the_end(monkeypatch):
    # A due checkpoint, like any event, keeps a fault off its one-event lookahead path, so
    # the counts are compared without it (tests/test_lookahead.py shows outcomes are equal).
    monkeypatch.setattr(mm_ops, "LOOKAHEAD", False)
    cfg = make_config({"duration": "20ms"}, workload=WORKLOAD)
    plain = build(cfg)
    n_plain = _step_below(plain.env, cfg.duration)
    monkeypatch.setattr(engine, "MAX_CHECKPOINT_SPAN", 77_777)  # many checkpoints, odd instants
    seen = []
    cut = build(cfg)
    n_cut, stopped = engine._run(cut, cfg.duration, seen.append)
    assert stopped is None and n_cut == n_plain
    assert len(seen) == -(-cfg.duration // 77_777) and seen[-1] == cfg.duration
    assert cut.env.now == cfg.duration
    # what is left is the same queue of model events (checkpoints leave nothing behind)
    left = [(t, p, type(e).__name__) for t, p, _, e in sorted(cut.env._queue)]
    assert left == [(t, p, type(e).__name__) for t, p, _, e in sorted(plain.env._queue)]
    assert cut.latency["fault"].n == plain.latency["fault"].n > 0
    assert cut.counters == plain.counters


def test_pending_latency_samples_stay_bounded_by_checkpoints(monkeypatch):
    monkeypatch.setattr(engine, "FLUSH_BATCH", 50)
    cfg = make_config({"duration": "5ms"}, workload=WORKLOAD)
    m = build(cfg)
    pending = []
    engine._run(
        m, cfg.duration, lambda now: pending.append(max(len(h._pending) for h in m.histograms()))
    )
    assert pending and max(pending) < 50  # every larger batch was binned at the checkpoint
    assert m.latency["fault"].n > 50
