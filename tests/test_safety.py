"""The safety checker: each violation kind on a minimal hand-built scenario, and silence on the
same scenario done right; the unsafe controls caught on a shortened race-hunt.

Scenarios drive CPUs explicitly: cpu0 is khugepaged (retraction) or the exiting task, cpu1 a
faulting task walking the table locklessly. Times are chosen so the interleaving is exact.
"""

from __future__ import annotations

import pytest
from conftest import make_config, make_machine, run_task, settle
from rich.console import Console

from desim.config import load_config
from desim.engine import simulate
from desim.model import mm_ops
from desim.model.safety import KINDS, SafetyStop, format_violation


def spawn(m, cpu_id, body_fn, *args, delay=0):
    """Start ``body_fn(cpu, task, *args)`` on CPU ``cpu_id`` after ``delay`` ns (not run yet)."""
    cpu = m.cpus[cpu_id]
    task = object()

    def proc():
        if delay:
            yield m.env.timeout(delay)
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        yield from body_fn(cpu, task, *args)
        cpu.release()

    return m.env.process(proc())


def counts(m):
    return {k: v for k, v in m.safety.counts.items() if v}


def machine_with_table(allocator="generic", n_tables=1, params=None, **over):
    m = make_machine(
        {"allocator.name": allocator, **over}, allocator={"name": allocator, "params": params or {}}
    )
    mm = m.new_mm(n_tables)
    tables = [
        run_task(m, 0, lambda c, t: mm_ops.populate(m, c, t, mm, True)) for _ in range(n_tables)
    ]
    return m, mm, tables


# The races below end with the faulting task going round again and allocating a PTE table for
# the retracted range, which may reuse the page just freed. A collapsed range is PMD-mapped from
# then on, so that refault takes a table only where the arch deposits one beside the huge PMD
# (arch_needs_pgtable_deposit, powerpc hash: do_set_pmd in mm/memory.c); the scenarios name that
# machine rather than their allocator's own.
DEPOSIT = {"machine.arch": "powerpc-hash"}


def fault_during_retraction(allocator, walk_ns):
    """cpu1 faults on the mm's only table; 100 ns later cpu0 retracts that table; the retried
    fault allocates a table again (to deposit)."""
    m, mm, (table,) = machine_with_table(allocator, **DEPOSIT, **{"costs.pte_walk": walk_ns})
    t0 = m.env.now
    fault = spawn(m, 1, lambda c, t: mm_ops.handle_fault(m, c, t, mm, 0.0, True))
    spawn(m, 0, lambda c, t: mm_ops.retract_page_tables(m, c, t, [(mm, table)]), delay=100)
    m.env.run(until=fault)
    assert m.env.now > t0 + walk_ns
    settle(m)
    return m, table


# -- use after free and locks in freed pages ------------------------------------------------------


def test_walker_reading_a_table_freed_under_it_is_use_after_free_then_a_freed_lock():
    # The walk (10 us) outlasts retract + immediate free (~2 us): the PTE read hits a freed
    # page, then spin_lock takes the ptl that lived in it. The unlock after it is the same
    # incident and is not counted again.
    m, table = fault_during_retraction("unsafe-immediate", 10_000)
    assert counts(m) == {"use_after_free": 1, "lock_in_freed_page": 1}
    uaf = next(r for r in m.safety.records if r["kind"] == "use_after_free")
    assert uaf["cpu"] == 1
    assert "pte read" in uaf["message"] and "freed" in uaf["message"]
    events = [(e["object"], e["event"], e["cpu"]) for e in uaf["history"]]
    page = f"page#{table.page.pfn}.{table.gen}"  # as named when it was freed
    assert (page, "freed", 0) in events
    assert (repr(table), "retracted", 0) in events
    assert events.index((repr(table), "retracted", 0)) > 0  # after its allocation


def test_walker_waiting_on_the_ptl_of_a_table_freed_on_unlock_is_a_lock_in_a_freed_page():
    # The walk (1 us) ends while khugepaged holds the ptl (TLB flush 1.5 us): the read was
    # safe; the retractor's unlock hands the lock to the walker and frees the page at once.
    m, _ = fault_during_retraction("unsafe-immediate", 1_000)
    assert counts(m) == {"lock_in_freed_page": 2}  # freed while held; unlocked after free
    msgs = [r["message"] for r in m.safety.records]
    assert "freed while its ptl is held by cpu1" in msgs[0]
    assert "cpu1 spin_unlock on the ptl" in msgs[1]


@pytest.mark.parametrize("walk_ns", [10_000, 1_000])
def test_same_races_with_pte_free_defer_are_silent(walk_ns):
    m, table = fault_during_retraction("generic", walk_ns)
    assert m.safety.total == 0
    assert m.counters["fault.retries"] == 1  # pmd_same failed: the fault went round again
    assert not table.page.allocated or table.page.gen != table.gen  # freed after the GP


# -- the rcu_head and the list links it overlays --------------------------------------------------


def test_two_fragments_of_a_page_deferred_in_one_gp_queue_its_rcu_head_twice():
    m, mm, (a, b) = machine_with_table("unsafe-shared-rcuhead", 2, {"fragments": 2})
    assert a.page is b.page
    run_task(m, 0, lambda c, t: mm_ops.retract_page_tables(m, c, t, [(mm, a), (mm, b)]))
    assert counts(m) == {"rcu_head_reuse": 1}
    rec = m.safety.records[0]
    assert rec["message"] == f"rcu_head of {a.page!r} queued while already queued"
    queued = [e for e in rec["history"] if e["event"] == "rcu_head queued"]
    assert len(queued) == 2


def test_fragments_deferred_one_grace_period_apart_are_silent():
    m, mm, (a, b) = machine_with_table("unsafe-shared-rcuhead", 2, {"fragments": 2})
    run_task(m, 0, lambda c, t: mm_ops.retract_page_tables(m, c, t, [(mm, a)]))
    settle(m)  # the callback ran: the rcu_head is free
    run_task(m, 0, lambda c, t: mm_ops.retract_page_tables(m, c, t, [(mm, b)]))
    settle(m)
    assert m.safety.total == 0
    assert not a.page.allocated and m.allocator.account.held == 0


def _noop(cpu, arg):
    return None


def bare_machine():
    """A machine for tests that handle pages outside any design (no audit of the books)."""
    return make_machine({"safety.audit_interval": 0})


def test_list_links_used_while_the_rcu_head_is_queued():
    m = bare_machine()
    cpu = m.cpus[0]
    page = m.allocator.new_table_page(cpu)
    m.page_call_rcu(cpu, page, _noop, None)
    m.safety.list_use(cpu, page, "list_add to pgtable_list")
    assert counts(m) == {"rcu_head_reuse": 1}
    settle(m)
    m.safety.list_use(cpu, page, "list_add to pgtable_list")  # the callback has run
    assert m.safety.total == 1


def test_rcu_head_queued_while_its_links_are_on_a_list_and_page_freed_while_queued():
    m = bare_machine()
    cpu = m.cpus[0]
    page = m.allocator.new_table_page(cpu)
    page.on_list = "pgtable_list"
    m.page_call_rcu(cpu, page, _noop, None)
    assert counts(m) == {"rcu_head_reuse": 1}
    page.on_list = None
    m.allocator.release_table_page(cpu, page)  # freed with the callback still queued
    assert counts(m) == {"rcu_head_reuse": 2}


def test_rcu_head_used_right_is_silent():
    m = bare_machine()
    cpu = m.cpus[0]
    page = m.allocator.new_table_page(cpu)
    m.safety.list_use(cpu, page, "list_add")
    page.on_list = "pgtable_list"
    m.safety.list_use(cpu, page, "list_del")
    page.on_list = None
    m.page_call_rcu(cpu, page, lambda c, p: m.allocator.release_table_page(c, p), page)
    settle(m)
    assert not page.allocated and m.safety.total == 0


# -- an RCU callback reaching a freed mm ----------------------------------------------------------


def retract_then_exit(allocator, wait_gp):
    m, mm, (table,) = machine_with_table(allocator)
    run_task(m, 0, lambda c, t: mm_ops.retract_page_tables(m, c, t, [(mm, table)]))
    if wait_gp:
        settle(m)
    run_task(m, 1, lambda c, t: mm_ops.exit_mmap(m, c, t, mm))
    assert mm.freed
    settle(m)
    return m, mm


def test_callback_taking_the_lock_of_an_mm_freed_before_it_ran():
    m, mm = retract_then_exit("unsafe-callback-mm", wait_gp=False)
    assert counts(m) == {"callback_freed_mm": 1}  # one per callback, lock + unlock
    rec = m.safety.records[0]
    assert "mm->context.lock" in rec["message"] and repr(mm) in rec["message"]
    events = [e["event"] for e in rec["history"]]
    assert events.index("freed") < events.index("rcu_head callback runs")


def test_callback_after_the_grace_period_but_before_exit_is_silent():
    m, _ = retract_then_exit("unsafe-callback-mm", wait_gp=True)
    assert m.safety.total == 0


def test_generic_callback_never_reaches_the_mm():
    m, _ = retract_then_exit("generic", wait_gp=False)
    assert m.safety.total == 0


def test_freed_mm_is_poisoned_even_without_hooks():
    m = make_machine()
    cpu = m.cpus[0]
    mm = m.new_mm(1)
    mm.arch["pgtable_list"] = []
    m.free_mm(cpu, mm)
    ev = mm.context_lock.acquire(cpu)  # a design that forgot mm_access
    assert ev is None
    m.env.run(until=m.env.now + 10)
    mm.context_lock.release(cpu)
    assert counts(m) == {"callback_freed_mm": 1}
    mm.arch.get("pgtable_list")
    assert counts(m) == {"callback_freed_mm": 2}


# -- double frees and invariants -----------------------------------------------------------------


def test_table_freed_twice():
    m, mm, (table,) = machine_with_table()
    run_task(m, 0, lambda c, t: m.allocator.pte_free(c, mm, table))
    assert m.safety.total == 0
    run_task(m, 0, lambda c, t: m.allocator.pte_free(c, mm, table))
    assert counts(m) == {"double_free": 2}  # the table, then its page
    assert m.safety.records[0]["message"] == f"{table!r} freed twice"


def test_mm_freed_twice():
    m = make_machine()
    mm = m.new_mm(1)
    m.free_mm(m.cpus[0], mm)
    assert m.safety.total == 0
    m.free_mm(m.cpus[1], mm)
    assert counts(m) == {"double_free": 1}


def test_design_invariant_hook_and_audit_of_the_memory_books():
    m, mm, _ = machine_with_table(**{"safety.audit_interval": "1ms"})
    m.env.run(until=m.env.now + 5_000_000)
    assert m.safety.total == 0  # books balance at every audit
    m.allocator.account.live += 8  # a design losing track of 8 bytes
    m.env.run(until=m.env.now + 5_000_000)
    assert counts(m) == {"invariant": 1}  # reported once, though it lasts
    assert "memory books" in m.safety.records[0]["message"]
    m.safety.invariant(m.cpus[0], (mm,), "s390-hh: half both A and P")
    assert counts(m) == {"invariant": 2}


# -- reports and stopping -----------------------------------------------------------------------


def test_stop_on_first_raises_and_format_shows_history():
    m, mm, (table,) = machine_with_table(**{"safety.stop_on_first": True})
    run_task(m, 0, lambda c, t: m.allocator.pte_free(c, mm, table))
    with pytest.raises(SafetyStop, match="double_free"):
        run_task(m, 0, lambda c, t: m.allocator.pte_free(c, mm, table))
    assert m.safety.total == 1
    lines = format_violation(m.safety.records[0])
    assert lines[0].startswith("double_free at t=")
    assert any("allocated for mm#0" in ln for ln in lines[1:])
    assert any(ln.rstrip().endswith("freed") for ln in lines[1:])


def test_disabled_checker_calls_no_hooks():
    m, mm, (table,) = machine_with_table(
        "unsafe-immediate", **DEPOSIT, **{"safety.enabled": False, "costs.pte_walk": 10_000}
    )
    fault = spawn(m, 1, lambda c, t: mm_ops.handle_fault(m, c, t, mm, 0.0, True))
    spawn(m, 0, lambda c, t: mm_ops.retract_page_tables(m, c, t, [(mm, table)]), delay=100)
    m.env.run(until=fault)  # the same race runs, unobserved
    assert m.safety is None and table.page.gen > table.gen  # freed, then reused by the refault


# -- the controls on race-hunt --------------------------------------------------------------------


def hunt(allocator, duration, seed=3, **over):
    """A shortened race-hunt: khugepaged first wakes at 1 ms, exits start a few ms in."""
    sets = [
        f"allocator.name={allocator}",
        f"duration={duration}",
        *(f"{k}={v}" for k, v in over.items()),
    ]
    return simulate(load_config("configs/race-hunt.yaml", sets, seed))


@pytest.mark.parametrize(
    "allocator,kind,duration",
    [
        ("unsafe-immediate", "lock_in_freed_page", "3ms"),
        ("unsafe-shared-rcuhead", "rcu_head_reuse", "3ms"),
        ("unsafe-callback-mm", "callback_freed_mm", "20ms"),
    ],
)
def test_each_unsafe_control_is_caught_on_race_hunt(allocator, kind, duration):
    r = hunt(allocator, duration)
    assert r.summary[f"safety.{kind}"] > 0
    assert r.violations[0]["history"]


def test_generic_is_clean_on_race_hunt():
    # generic runs on bare-metal x86-64, where a collapsed range stays PMD-mapped: each table is
    # retracted once, so khugepaged needs new mms to find tables (race-hunt's 800/s runs dry in
    # a few ms); the churn that keeps it retracting is set here.
    r = hunt("generic", "12ms", **{"workload.processes.fork_rate": "4000/s"})
    assert r.summary["safety.violations"] == 0
    assert r.summary["count.tables.deferred"] > 300 and r.summary["count.mm.exited"] > 3
    assert r.summary["count.fault.retries"] > 10  # the races did happen, safely


def test_stop_on_first_ends_the_run_and_cli_prints_violations():
    from desim.cli import print_violations

    r = hunt("unsafe-immediate", "12ms", **{"safety.stop_on_first": "true"})
    assert r.stopped_early and r.summary["safety.violations"] == 1
    assert r.summary["sim.duration_ns"] < 3_000_000
    con = Console(record=True, width=200)
    print_violations(r.violations, r.summary, con)
    text = con.export_text()
    assert text.startswith(f"safety violation: {r.violations[0]['kind']} at t=")
    assert "allocated (gen 1)" in text  # the history follows the headline

    r = hunt("unsafe-immediate", "3ms")
    assert {f"safety.{k}" for k in KINDS} <= set(r.summary)
    con = Console(record=True, width=200)
    print_violations(r.violations, r.summary, con)
    text = con.export_text()
    assert "first safety violations" in text and r.violations[0]["kind"] in text
    assert text.count("cpu") >= 5


def test_make_config_accepts_audit_interval():
    assert make_config({"safety.audit_interval": "0ms"}).safety.audit_interval == 0
