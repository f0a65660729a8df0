"""``gup_fast``: GUP-fast-like walkers (``get_user_pages_fast``, mm/gup.c, 6.6).

GUP-fast pins user pages without mmap_lock (O_DIRECT I/O, RDMA registration, futexes): it
disables local IRQs and walks the page tables locklessly, then re-checks the PMD and backs off
if the table changed. Two things keep the walked table from being freed under it:

* IRQs off blocks the IPI of ``tlb_remove_table_sync_one`` (the mmu_gather fallback when its
  batch page cannot be allocated): a CPU with IRQs disabled takes the IPI only when it
  re-enables them (``machine.local_irq_disable`` / ``ipi_all``), so that free waits;
* an IRQs-off region is also an RCU read-side critical section of the consolidated RCU, so a
  ``pte_free_defer`` grace period cannot end while the walker is inside it.

Walks arrive machine-wide at ``rate`` (scaled by phases; ``mode: per_process``: each live
process at ``rate``); each pins ``pages`` pages of one
table of a random live process, on that process's CPU. Default costs are estimates (~100 ns
of setup and ~20 ns per PTE read and pinned: a page-struct refcount atomic per page).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from desim.distributions import AnyDist, Interarrival, count_at_most
from desim.fields import Duration
from desim.model.hooks import USER_TASK
from desim.model.memory import LIVE
from desim.workloads import ELEMENTS
from desim.workloads.base import Element, Params, Placement, RateMode, rate_mode

# A walk pins pages of one PTE table; the largest table has 8192 entries (arm64, 64 KiB pages).
MAX_PTES = 8192


class GupFastParams(Params):
    rate: Interarrival = Field(
        "20000/s",
        description="walks per second (machine-wide, or per live process with mode: per_process)",
        validate_default=True,
    )
    mode: RateMode = rate_mode()
    pages: Annotated[AnyDist, count_at_most(MAX_PTES)] = Field(
        16, description="pages pinned by one walk (within one table)", validate_default=True
    )
    setup: Duration = Field(
        "100ns", description="CPU time of one walk besides its pages", validate_default=True
    )
    per_page: Duration = Field(
        "20ns", description="CPU time per PTE read and page pinned", validate_default=True
    )
    placement: Placement = Field(
        Placement(policy="migrating"),
        description="where a walk runs when no processes element placed its mm",
    )


def gup_fast_walk(m, cpu, mm, pick: float, pages: int, cost: int):
    """One IRQs-off lockless walk of the table at fraction ``pick`` of ``mm``'s tables."""
    tables = mm.tables
    if not tables:
        return
    if cpu.trace is not None:
        cpu.trace.op(cpu, "get_user_pages_fast")
    m.local_irq_disable(cpu)
    cpu.rcu_read_lock()  # IRQs off: an RCU-sched reader, which the consolidated RCU honours
    table = tables[int(pick * len(tables))]
    gen = table.gen
    yield cpu.compute(cost)
    if m.safety is not None:
        m.safety.table_access(cpu, table, gen, "gup_fast pte read")
    if table.state != LIVE:
        m.counters["gup_fast.backoffs"] += 1  # the PMD re-check failed: unpin and fall back
    cpu.rcu_read_unlock()
    m.local_irq_enable(cpu)
    m.counters["gup_fast.walks"] += 1
    m.counters["gup_fast.pages"] += pages


@ELEMENTS.register("gup_fast")
class GupFast(Element[GupFastParams]):
    Params = GupFastParams
    summary = "GUP-fast walkers: lockless walk with IRQs off, blocking the table-free IPI"

    def start(self) -> None:
        m = self.m
        p = self.p
        count = p.pages.sampler(self.rng("pages"))
        u = self.uniform("pick")
        placer = self.placer(p.placement)

        def walk(mm):
            cpu = self.state.cpu_of(mm) or placer.home()
            n = max(1, round(count()))
            body = gup_fast_walk(m, cpu, mm, u(), n, p.setup + n * p.per_page)
            self.env.process(self.run_on(m, cpu, USER_TASK(), body))

        self.on_arrivals(
            p.rate.ns_sampler(self.rng("arrivals")), u, walk, p.mode == "per_process", p.rate.mean()
        )
