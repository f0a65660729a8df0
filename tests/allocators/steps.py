"""The allocator's kernel hooks one at a time, each checked with ``conftest.check`` after it.

Shared by the exact scenarios of the designs (powerpc, s390, sparc64). A plain module, not a
``conftest.py``: the tests import their helpers with ``from conftest import ...``, and a second
``conftest`` module here would shadow the one in ``tests/``.
"""

from conftest import check, run_task

from desim.model.memory import DETACHED
from desim.model.mmu_gather import MMUGather


def alloc(m, mm, cpu=0):
    t = run_task(m, cpu, lambda c, task: m.allocator.pte_alloc_one(c, mm))
    check(m)
    return t


def pte_free(m, mm, t, cpu=0):
    run_task(m, cpu, lambda c, task: m.allocator.pte_free(c, mm, t))
    check(m)


def defer(m, mm, t, cpu=0, violations=0):
    t.state = DETACHED  # retract_page_tables cleared the PMD first
    run_task(m, cpu, lambda c, task: m.allocator.pte_free_defer(c, mm, t))
    check(m, violations)


def gather(m, mm, tables, cpu=0):
    """munmap/exit: the tables go through one mmu_gather batch (one call_rcu)."""

    def body(c, task):
        tlb = MMUGather(m, c, mm)
        for t in tables:
            t.state = DETACHED
            yield from m.allocator.pte_free_tlb(c, tlb, t)
        yield from tlb.finish()

    run_task(m, cpu, body)
    check(m)
