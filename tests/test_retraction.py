"""Retraction as the kernel does it: a collapsed range stays PMD-mapped, an unmapped one stays
unmapped (desim.model.mm_ops), and the summary reports the pte_free_defer share of frees."""

from __future__ import annotations

from conftest import make_config, make_machine, run_task, settle

from desim.engine import simulate
from desim.model import mm_ops


def _populated(overrides: dict, n: int = 4):
    m = make_machine(overrides)
    mm = m.new_mm(n)
    for _ in range(n):
        run_task(m, 0, lambda cpu, task: mm_ops.populate(m, cpu, task, mm, True))
    return m, mm


def _fault(m, mm):
    run_task(m, 1, lambda cpu, task: mm_ops.handle_fault(m, cpu, task, mm, 0.5, True))


def test_a_collapsed_range_is_pmd_mapped_and_its_faults_allocate_no_table():
    m, mm = _populated({"machine.arch": "x86-64"})
    victim = mm.tables[0]
    run_task(m, 0, lambda cpu, task: mm_ops.retract_page_tables(m, cpu, task, [(mm, victim)]))
    assert mm.target_tables == 3 and len(mm.tables) == 3
    for _ in range(5):
        _fault(m, mm)
    assert m.counters["tables.allocated"] == 4  # the four populated, no refault
    settle(m)


def test_powerpc_hash_deposits_a_table_beside_the_huge_pmd():
    m, mm = _populated(
        {"machine.arch": "powerpc-hash", "machine.page_size": "64KiB", "allocator.name": "powerpc"}
    )
    victim = mm.tables[0]
    run_task(m, 0, lambda cpu, task: mm_ops.retract_page_tables(m, cpu, task, [(mm, victim)]))
    assert mm.target_tables == 4  # arch_needs_pgtable_deposit
    _fault(m, mm)
    assert m.counters["tables.allocated"] == 5 and len(mm.tables) == 4


def test_an_unmapped_range_is_not_faulted_again_unless_remapped():
    for remap, want in ((False, 2), (True, 4)):
        m, mm = _populated({"machine.arch": "x86-64"})
        run_task(
            m, 0, lambda cpu, task, m=m, mm=mm, r=remap: mm_ops.do_munmap(m, cpu, task, mm, 2, r)
        )
        for _ in range(5):
            _fault(m, mm)
        assert len(mm.tables) == want and mm.target_tables == want


def test_summary_reports_the_share_of_frees_through_pte_free_defer():
    s = simulate(
        make_config(
            {"duration": "30ms"},
            workload={
                "processes": {"initial": 6, "tables": 8, "shmem_fraction": 1.0},
                "munmap": {"rate": "2000/s", "tables": 1},
                "madv_collapse": {"rate": "2000/s"},
            },
        )
    ).summary
    deferred, gathered = s["count.tables.deferred"], s["count.tables.gathered"]
    assert deferred > 0 and gathered > 0
    assert s["tables.freed"] == deferred + gathered + s.get("count.alloc.lost_race", 0)
    assert s["tables.defer_share"] == deferred / s["tables.freed"]


def test_khugepaged_defaults_are_the_kernels():
    cfg = make_config(workload={"khugepaged": {}})
    p = cfg.workload["khugepaged"]
    assert p.scan_sleep == 10_000_000_000 and p.pages_to_scan == 4096
