"""s390 allocators (6.6 half pages, Hugh's v2 with HH bits, 6.7 full pages): exact scenarios.

Each scenario drives the kernel hooks one at a time on a 2-CPU machine with no workload and
checks, after every step, which half comes next, the page's bits, list membership, when a page
returns to the page allocator and whether RCU was involved. ``check`` asserts after every step
that the kept memory split equals the one recomputed from the pages.
"""

import pytest
from conftest import check, make_machine, run_task, run_together, settle, split, start_task
from steps import alloc, defer, gather, pte_free

from desim.allocators.s390_base import FREEING, PGSTE
from desim.config import ConfigError
from desim.model import mm_ops
from desim.model.machine import Machine
from desim.model.memory import DETACHED, PG_ACTIVE

KB = 1024
H = 2 * KB


def machine(name="s390", cpus=2, **params) -> Machine:
    over = {"machine.cpus": cpus, "allocator.name": name}
    for k, v in params.items():
        over[f"allocator.params.{k}"] = v
    return make_machine(over)


def pages_list(mm):
    return list(mm.arch.get("pgtable_list", ()))


# -- s390 (6.6) ---------------------------------------------------------------------------------


def test_two_halves_per_page_lower_first_and_list_membership():
    m = machine()
    mm = m.new_mm(8)
    t0 = alloc(m, mm)
    page = t0.page
    assert (t0.offset, t0.size) == (0, H)
    assert page.data.bits == 0x01 and pages_list(mm) == [page]
    assert split(m) == {"live": H, "spare": H}
    t1 = alloc(m, mm)
    assert t1.page is page and t1.offset == H
    assert page.data.bits == 0x03 and pages_list(mm) == [] and page.on_list is None
    assert split(m) == {"live": 2 * H}
    t2 = alloc(m, mm)
    assert t2.page is not page and t2.offset == 0
    assert m.pages.pages_held("pgtable") == 2


def test_pte_free_puts_page_at_head_and_its_half_is_reused_next():
    m = machine()
    mm = m.new_mm(8)
    a0, a1 = alloc(m, mm), alloc(m, mm)
    b0 = alloc(m, mm)  # second page, on the list
    assert pages_list(mm) == [b0.page]
    pte_free(m, mm, a0)
    assert pages_list(mm) == [a0.page, b0.page]  # list_add: head
    assert a0.page.data.bits == 0x02
    assert split(m) == {"live": 2 * H, "spare": 2 * H}
    queued = m.rcu.queued
    r = alloc(m, mm)
    assert r.page is a0.page and r.offset == 0  # the freed lower half, at once
    assert pages_list(mm) == [b0.page]
    assert m.rcu.queued == queued  # no RCU anywhere on this path
    assert m.counters["s390.list_hits"] == 2  # a1 and r both came off the list
    del a1


def test_both_halves_freed_returns_page_at_once_without_rcu():
    m = machine()
    mm = m.new_mm(8)
    t0, t1 = alloc(m, mm), alloc(m, mm)
    page = t0.page
    pte_free(m, mm, t1)
    assert pages_list(mm) == [page] and page.allocated
    pte_free(m, mm, t0)
    assert not page.allocated and pages_list(mm) == []
    assert m.rcu.queued == 0 and m.allocator.account.held == 0


def test_gather_half_goes_to_tail_pending_and_is_reused_only_at_the_head():
    m = machine()
    mm = m.new_mm(8)
    a0, a1 = alloc(m, mm), alloc(m, mm)
    pa = a0.page
    gather(m, mm, [a1])  # page_table_free_rcu: A->P, list tail
    assert pa.data.bits == 0x21 and pages_list(mm) == [pa]
    assert split(m) == {"live": H, "pending": H}
    b0 = alloc(m, mm)  # head busy (A|P == 3): fresh page
    pb = b0.page
    assert pb is not pa and pages_list(mm) == [pb, pa]
    settle(m)  # __tlb_remove_table clears P, no lock
    check(m)
    assert pa.data.bits == 0x01 and pages_list(mm) == [pb, pa]
    assert split(m) == {"live": 2 * H, "spare": 2 * H}
    assert alloc(m, mm).page is pb  # the head's free half first
    r = alloc(m, mm)
    assert r.page is pa and r.offset == H  # then the gathered half
    assert pages_list(mm) == []
    assert "context.lock" in m.lock_classes and "s390_global_list" not in m.lock_classes


def test_defer_marks_active_neither_half_reused_one_call_rcu_at_last_free():
    m = machine()
    mm = m.new_mm(8)
    t0, t1 = alloc(m, mm), alloc(m, mm)
    page = t0.page
    defer(m, mm, t0)
    assert page.flags & PG_ACTIVE and page.data.bits == 0x02
    assert pages_list(mm) == [] and not page.rcu_queued
    assert split(m) == {"live": H, "stranded": H}
    assert m.rcu.queued == 0  # nothing queued while t1 lives
    n = alloc(m, mm)
    assert n.page is not page  # the Active page's half is not reused
    pte_free(m, mm, n)  # (n's page: both halves free: gone)
    pte_free(m, mm, t1)  # last half: Active → call_rcu
    assert page.allocated and page.rcu_queued and not page.flags & PG_ACTIVE
    assert m.rcu.queued == 1 and split(m) == {"pending": 2 * H}
    settle(m)
    check(m)
    assert not page.allocated and m.allocator.account.held == 0
    assert m.rcu.invoked == 1


def test_defer_of_a_listed_page_queues_at_once():
    m = machine()
    mm = m.new_mm(8)
    t0 = alloc(m, mm)
    page = t0.page
    assert pages_list(mm) == [page]
    defer(m, mm, t0)
    assert pages_list(mm) == [] and page.rcu_queued and page.data.bits == FREEING
    assert split(m) == {"pending": 2 * H}
    assert alloc(m, mm).page is not page
    settle(m)
    check(m)
    assert not page.allocated


def test_defer_while_other_half_in_gather_frees_after_both_grace_periods():
    m = machine()
    mm = m.new_mm(8)
    t0, t1 = alloc(m, mm), alloc(m, mm)
    page = t0.page
    gather(m, mm, [t1])
    assert pages_list(mm) == [page]  # other half allocated: tail
    defer(m, mm, t0)
    assert pages_list(mm) == [] and page.data.bits == 0x20 and page.flags & PG_ACTIVE
    assert split(m) == {"pending": H, "stranded": H}
    settle(m)  # batch GP, then the page's own GP
    check(m)
    assert not page.allocated and m.rcu.invoked == 2


def test_active_page_still_listed_while_deferrer_waits_its_free_half_goes_out():
    """6.6 sets PageActive before taking context.lock: a page_table_alloc holding the lock at
    that instant still finds the page at the list head and hands out its free half (harmless:
    that half was never deferred). Then the deferred half is stranded until the other goes."""
    m = machine()
    mm = m.new_mm(8)
    t0 = alloc(m, mm)
    page = t0.page
    t0.state = DETACHED
    t1, _ = run_together(
        m,
        (1, lambda c, task: m.allocator.pte_alloc_one(c, mm)),  # takes the lock first
        (0, lambda c, task: m.allocator.pte_free_defer(c, mm, t0)),
    )
    check(m)
    assert t1.page is page and t1.offset == H  # the Active page's free half went out
    assert m.lock_classes["context.lock"].contended == 1
    assert page.flags & PG_ACTIVE and page.data.bits == 0x02 and pages_list(mm) == []
    assert split(m) == {"live": H, "stranded": H}
    pte_free(m, mm, t1)
    assert page.rcu_queued
    settle(m)
    check(m)
    assert not page.allocated


def test_pgste_mm_gets_full_pages_never_listed():
    m = machine()
    kvm = m.new_mm(8, pgste=True)
    t = alloc(m, kvm)
    page = t.page
    assert (t.offset, t.size) == (0, 4 * KB)
    assert page.data.bits == 0x03 | PGSTE and pages_list(kvm) == []
    assert split(m) == {"live": 4 * KB}  # PGSTEs in the upper half: in use
    t2 = alloc(m, kvm)
    assert t2.page is not page
    gather(m, kvm, [t])
    assert page.data.bits == 0x03 | PGSTE  # AA cleared only by __tlb_remove_table
    assert split(m) == {"live": 4 * KB, "pending": 4 * KB}
    settle(m)
    check(m)
    assert not page.allocated
    defer(m, kvm, t2)  # THP is off for KVM: the kernel warns
    assert m.counters["s390.pgste_defer"] == 1 and t2.page.rcu_queued
    settle(m)
    check(m)
    assert m.allocator.account.held == 0


def test_invariant_checker_catches_a_corrupted_page():
    m = machine()
    mm = m.new_mm(8)
    t = alloc(m, mm)
    t.page.data.bits |= 0x10  # A and P on one half
    m.allocator.check(m.cpus[0], t.page, "test")
    assert m.safety.counts["invariant"] >= 1
    assert any("allocated and pending" in e for e in m.allocator.invariant_errors())


def test_s390_refuses_other_page_sizes():
    with pytest.raises(
        ValueError,
        match=r"machine.page_size: s390 \(2 KiB tables, two per "
        r"page\) needs 4KiB pages, got 64KiB",
    ):
        make_machine({"allocator.name": "s390", "machine.page_size": "64KiB"})


# -- s390-hh (Hugh's v2) ------------------------------------------------------------------------


def test_hh_defer_relinks_half_after_gp_through_pt_mm_under_global_lock():
    m = machine("s390-hh")
    mm = m.new_mm(8)
    t0, _t1 = alloc(m, mm), alloc(m, mm)
    page = t0.page
    assert page.data.pt_mm is mm
    defer(m, mm, t0)
    assert page.data.bits == 0x06  # A1 | H0: one bit per half
    assert page.rcu_queued and pages_list(mm) == []
    assert split(m) == {"live": H, "pending": H}
    assert alloc(m, mm).page is not page  # pending half not handed out
    settle(m)
    check(m)
    assert page.data.bits == 0x02 and pages_list(mm)[0] is page  # relinked at the head
    assert m.counters["s390.relinked"] == 1
    assert m.lock_classes["s390_global_list"].acquisitions > 0
    assert m.lock_classes["context.lock"].acquisitions == 0
    r = alloc(m, mm)
    assert r.page is page and r.offset == 0  # the deferred half IS reused (not 6.6)


def test_hh_second_defer_rides_the_rcu_head_and_is_requeued():
    m = machine("s390-hh")
    mm = m.new_mm(8)
    t0, t1 = alloc(m, mm), alloc(m, mm)
    page = t0.page
    defer(m, mm, t0)
    defer(m, mm, t1)
    assert page.data.bits == 0x0C and m.rcu.queued == 1  # H0 | H1, one rcu_head use
    assert m.counters["s390.defer_rides_other"] == 1
    assert split(m) == {"pending": 2 * H}
    while m.rcu.invoked < 1:
        m.env.step()
    check(m)
    assert page.allocated and page.data.bits == 0x08 and page.rcu_queued
    assert m.counters["s390.rcu_requeue"] == 1
    settle(m)
    check(m)
    assert not page.allocated and m.rcu.invoked == 2


def test_hh_gather_frees_page_in_batch_callback():
    m = machine("s390-hh")
    mm = m.new_mm(8)
    t0, t1 = alloc(m, mm), alloc(m, mm)
    gather(m, mm, [t0])
    assert t0.page.data.bits == 0x12 and pages_list(mm) == []  # pending: off the list
    gather(m, mm, [t1])
    assert t0.page.data.bits == 0x30
    settle(m)
    check(m)
    assert not t0.page.allocated and m.counters["s390.relinked"] == 0


@pytest.mark.parametrize("rule, expected", [(True, 0), (False, 1)])
def test_hh_one_bit_rule_checker(rule, expected):
    m = machine("s390-hh", one_bit_at_a_time=rule)
    mm = m.new_mm(8)
    t0, _t1 = alloc(m, mm), alloc(m, mm)
    defer(m, mm, t0, violations=expected)
    assert t0.page.data.bits == (0x06 if rule else 0x16)  # v2 as posted: A->H+P (0x15)
    assert m.safety.counts["invariant"] == expected
    if not rule:
        assert "one-bit rule" in m.safety.records[0]["message"]
    settle(m)
    # The callback clears H (leaving P alone, one bit): no new break by any transition (the
    # safety auditor may re-report the state it polled while H and P were both up).
    assert t0.page.data.bits == 0x02
    assert {k for k, v in m.safety.counts.items() if v} <= {"invariant"}
    assert all("0x16): breaks one-bit rule" in r["message"] for r in m.safety.records)
    check(m, m.safety.total)


def _exit_latency(rule: str, defer_first: bool = True):
    m = machine("s390-hh", cpus=2, mm_lifetime=rule)
    out = {}

    def body(cpu, task):
        mm = yield from mm_ops.do_fork(m, cpu, 4)
        for _ in range(4):
            yield from mm_ops.populate(m, cpu, task, mm, True)
        if defer_first:
            t = mm.tables.pop()
            t.state = DETACHED
            yield from m.allocator.pte_free_defer(cpu, mm, t)
        t0 = m.env.now
        yield from mm_ops.exit_mmap(m, cpu, task, mm)
        out["exit"] = m.env.now - t0
        out["freed_at_exit"] = mm.freed
        return mm

    mm = run_task(m, 0, body)
    settle(m)
    m.env.run(until=m.env.now + 1_000_000)  # the mmdrop_async kworker
    check(m)
    assert mm.freed and m.allocator.account.held == 0
    return out


def test_hh_mm_lifetime_exit_latency_ordering():
    sync = _exit_latency("synchronize_rcu")
    barrier = _exit_latency("rcu_barrier")
    drop = _exit_latency("mmdrop_async")
    assert sync["freed_at_exit"] and not barrier["freed_at_exit"]
    assert not drop["freed_at_exit"]  # the deferral's mmgrab holds it
    assert sync["exit"] > 1_000_000 and barrier["exit"] > 1_000_000  # a GP at HZ=1000
    assert drop["exit"] < 200_000
    assert sync["exit"] > 10 * drop["exit"] and barrier["exit"] > 10 * drop["exit"]
    assert _exit_latency("mmdrop_async", defer_first=False)["freed_at_exit"]


def test_hh_params_are_validated():
    with pytest.raises(ConfigError, match="mm_lifetime"):
        machine("s390-hh", mm_lifetime="never")


# -- s390-fullpage (6.7+) -----------------------------------------------------------------------


def test_fullpage_one_table_per_page_upper_half_internal_or_pgste():
    m = machine("s390-fullpage")
    mm = m.new_mm(8)
    kvm = m.new_mm(8, pgste=True)
    t0, t1 = alloc(m, mm), alloc(m, mm)
    assert t0.page is not t1.page and t0.size == H
    assert split(m) == {"live": 2 * H, "internal": 2 * H}
    k = alloc(m, kvm)
    assert k.size == 4 * KB
    assert split(m) == {"live": 2 * H + 4 * KB, "internal": 2 * H}
    defer(m, mm, t0)
    assert t0.page.rcu_queued and split(m)["pending"] == H
    gather(m, kvm, [k])
    settle(m)
    check(m)
    assert split(m) == {"live": H, "internal": H}


def test_concurrent_rcu_barriers_share_one_barrier_as_in_the_kernel():
    """rcu_barrier's barrier_sequence: callers that queued behind a running barrier are served
    by the NEXT one together (what keeps s390-hh's rcu_barrier exits from serialising)."""
    m = machine(cpus=4)
    done = []

    def cb(cpu, arg):
        return None

    for c in m.cpus:
        m.rcu.call_rcu(c, cb, None)

    def barrier(cpu_id):
        def body(cpu, task):
            yield from m.rcu.barrier(cpu, task)
            done.append(m.env.now)

        return start_task(m, cpu_id, body)

    first = barrier(0)
    m.env.run(until=m.env.now + 10)
    for c in m.cpus:
        m.rcu.call_rcu(c, cb, None)
    late = [barrier(i) for i in (1, 2, 3)]
    m.env.run(until=m.env.all_of([first, *late]))
    assert len(done) == 4
    assert len(set(done[1:])) == 1  # the three late callers share the second barrier
    assert done[1] >= done[0]
    assert m.rcu.barrier_seq == 4  # two barriers ran, not four
