"""The thinnest end-to-end path: a default-shaped config runs and its books balance."""

from conftest import make_config, run_task, settle

from desim.engine import simulate
from desim.model.machine import Machine


def test_generic_alloc_defer_frees_after_gp():
    m = Machine(make_config())
    mm = m.new_mm(1)

    def body(cpu, task):
        t = yield from m.allocator.pte_alloc_one(cpu, mm)
        yield from m.allocator.pte_free_defer(cpu, mm, t)
        return t

    t = run_task(m, 0, body)
    assert m.pages.pages_held("pgtable") == 1
    assert m.allocator.account.pending == 4096
    settle(m)
    assert m.pages.pages_held("pgtable") == 0
    assert m.allocator.account.held == 0
    assert not t.page.allocated


def test_default_shape_runs():
    cfg = make_config(
        {"duration": "30ms"},
        workload={
            "processes": {"initial": 8, "fork_rate": "200/s", "lifetime": "10ms"},
            "faults": {},
            "munmap": {},
            "khugepaged": {"scan_sleep": "2ms"},
        },
    )
    r = simulate(cfg)
    s = r.summary
    assert s["fault.count"] > 1000
    assert s["count.tables.deferred"] > 0
    assert s["safety.violations"] == 0
