"""desim.records: declared counters, components contributing their own metrics, record types."""

from __future__ import annotations

import pytest

from desim import records
from desim.config import validate
from desim.engine import build, simulate


def test_a_misspelt_counter_fails_at_once_instead_of_making_a_new_metric():
    m = build(validate({"duration": "1ms", "allocator": "s390"}))
    m.counters["mm.created"] += 1
    m.counters["s390.list_hits"] += 1  # the design's own, declared on its class
    with pytest.raises(KeyError):
        m.counters["mm.creatd"] += 1
    with pytest.raises(KeyError):
        m.counters["powerpc.alloc_race"] += 1  # another design's


def test_declared_counters_include_the_bases():
    from desim.allocators import ALLOCATORS

    names = records.declared_counters(ALLOCATORS.get("s390-hh"))
    assert "s390.fresh_pages" in names and "s390.relinked" in names  # base's and its own


def test_a_component_adds_a_metric_by_contributing_a_result_hook():
    cfg = validate({"duration": "2ms", "machine": {"cpus": 2}})
    m = build(cfg)
    assert m.result_hooks[:2] == [m.latency_results, m.rcu.results]
    r = simulate(cfg)
    assert {"rcu.gps_completed", "mem.live.peak_bytes", "pages.allocated", "ipi.sent"} <= set(
        r.summary
    )


def test_record_types_name_the_columns():
    assert records.LatencyBin._fields == ("op", "bin", "lo_ns", "hi_ns", "count")
    assert records.SERIES_COLUMNS[0] == "t_ns" and "tlb_batch" in records.SERIES_COLUMNS
    assert set(records.MEMORY_KINDS) < set(records.MEMORY_COLUMNS)
