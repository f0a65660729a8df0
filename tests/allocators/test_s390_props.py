"""Hypothesis: random alloc / pte_free / gather / defer / exit / wait sequences on the s390 designs.

After every step the kept memory split equals the one recomputed by scanning the pages, the
bytes held equal the page-table pages held times 4 KiB, the bit invariants hold and the safety
checker saw nothing; after every mm exits and RCU settles, every page is back and every mm is
freed (whatever the mm-lifetime rule). KVM (PGSTE) mms are mixed in.
"""

from __future__ import annotations

import pytest
from conftest import check, make_machine, run_task, run_together, settle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from steps import gather

from desim.model.memory import DETACHED
from desim.model.mmu_gather import MMUGather

DESIGNS = [
    ("s390", {}),
    ("s390-fullpage", {}),
    ("s390-hh", {}),
    ("s390-hh", {"mm_lifetime": "synchronize_rcu"}),
    ("s390-hh", {"mm_lifetime": "rcu_barrier", "list_lock": "per_mm"}),
]

mm_i = st.integers(0, 3)
cpu_i = st.integers(0, 1)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), mm_i, cpu_i, st.integers(1, 3)),
        st.tuples(st.just("alloc"), mm_i, cpu_i, st.integers(1, 3)),
        st.tuples(st.just("free"), mm_i, cpu_i, st.integers(0, 20)),
        st.tuples(st.just("gather"), mm_i, cpu_i, st.integers(1, 4)),
        st.tuples(st.just("defer"), mm_i, cpu_i, st.integers(0, 20)),
        st.tuples(st.just("exit"), mm_i, cpu_i, st.just(0)),
        st.tuples(st.just("race"), mm_i, cpu_i, st.integers(0, 20)),
        st.tuples(st.just("wait"), st.sampled_from([1_000, 300_000, 3_000_000]), cpu_i, st.just(0)),
    ),
    max_size=40,
)


def _exit(m, cpu, task, mm):
    m.unlink_mm(mm)
    tables, mm.tables = mm.tables, []
    tlb = MMUGather(m, cpu, mm)
    for t in tables:
        t.state = DETACHED
        yield from m.allocator.pte_free_tlb(cpu, tlb, t)
    yield from tlb.finish()
    yield from m.allocator.mm_teardown(cpu, mm)
    yield from m.allocator.mm_free(cpu, mm, task)


def _race(m, mm, victim, first):
    a = m.allocator

    def alloc(cpu, task):
        t = yield from a.pte_alloc_one(cpu, mm)
        mm.tables.append(t)

    def free(cpu, task):
        if victim is None:
            yield from alloc(cpu, task)
        elif victim.page.pfn % 2:
            victim.state = DETACHED
            yield from a.pte_free_defer(cpu, mm, victim)
        else:
            yield from a.pte_free(cpu, mm, victim)

    run_together(m, (first, alloc), (1 - first, free))


@pytest.mark.parametrize("name, params", DESIGNS, ids=lambda v: str(v))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, pgste=st.lists(st.booleans(), min_size=4, max_size=4))
def test_random_sequences_keep_books_and_return_every_page(name, params, ops, pgste):
    over = {"machine.cpus": 2, "allocator.name": name}
    over.update({f"allocator.params.{k}": v for k, v in params.items()})
    m = make_machine(over)
    a = m.allocator
    mms = [m.new_mm(64, pgste=p) for p in pgste]
    every = list(mms)
    for op, i, c, n in ops:
        if op == "wait":
            m.env.run(until=m.env.now + i)
            check(m)
            continue
        mm = mms[i % len(mms)] if mms else None
        if mm is None:
            continue
        if op == "alloc":

            def body(cpu, task, mm=mm, n=n):
                for _ in range(n):
                    t = yield from a.pte_alloc_one(cpu, mm)
                    mm.tables.append(t)

            run_task(m, c, body)
        elif op in ("free", "defer") and mm.tables:
            t = mm.tables.pop(n % len(mm.tables))
            if op == "defer":
                t.state = DETACHED  # retracted; pte_free takes a never-exposed LIVE table
            hook = a.pte_free if op == "free" else a.pte_free_defer
            run_task(m, c, lambda cpu, task, mm=mm, t=t, hook=hook: hook(cpu, mm, t))
        elif op == "gather" and mm.tables:
            victims = mm.tables[-n:]
            del mm.tables[-n:]
            gather(m, mm, victims, cpu=c)
        elif op == "race":
            # Two CPUs at the same instant: one allocates in mm, the other frees or defers one
            # of its tables (both take the list lock: the waiter sees the holder's window).
            victim = mm.tables.pop(n % len(mm.tables)) if mm.tables else None
            _race(m, mm, victim, first=c)
        elif op == "exit":
            mms.remove(mm)
            run_task(m, c, lambda cpu, task, mm=mm: _exit(m, cpu, task, mm))
        check(m)
    for mm in list(mms):
        run_task(m, 0, lambda cpu, task, mm=mm: _exit(m, cpu, task, mm))
        check(m)
    settle(m)
    m.env.run(until=m.env.now + 1_000_000)  # mmdrop_async kworkers
    settle(m)
    check(m)
    assert a.held_pages == {} and m.pages.pages_held("pgtable") == 0
    assert a.account.as_tuple() == (0, 0, 0, 0, 0)
    assert all(mm.freed for mm in every)
