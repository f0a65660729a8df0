"""mmu_gather (mm/mmu_gather.c), in the two ways v6.6 frees the tables it gathers.

``machine.tlb_table_free: rcu`` is ``MMU_GATHER_RCU_TABLE_FREE`` (arm64, powerpc, s390, sparc64,
x86 paravirt guests). Tables unlinked by one munmap or exit are collected in a page-sized batch
(``PAGE_SIZE / sizeof(void *) - 3`` pointers: 509 with 4 KiB pages, 8189 with 64 KiB) and freed
by ONE ``call_rcu`` per batch. When the batch page cannot be had (GFP_NOWAIT), the table is freed
at once after an IPI to every other CPU (``tlb_remove_table_sync_one``): slow, but safe against
IRQ-disabled walkers.

The batch page is booked as its own memory kind (``account.tlb_batch``) from its allocation
until the batch's callback frees it: on 64 KiB powerpc a batch page can outweigh the tables it
carries.

``machine.tlb_table_free: flush`` is bare-metal x86 in v6.6-6.7: ``tlb_remove_table`` is
``native_tlb_remove_table`` (arch/x86/kernel/paravirt.c), i.e. ``tlb_remove_page``. The table
page joins the gather's page list and ``tlb_finish_mmu`` frees it right after the TLB flush,
whose IPIs every CPU in the mm's cpumask must have answered: a CPU walking with IRQs off
(GUP-fast) holds the free back; no grace period is waited for. The page-list pages x86 uses are
freed at the end of the same call, so they are not booked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from desim.model.hooks import traced_as

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.machine import Machine
    from desim.model.memory import MM, Page, PageTable


def batch_capacity(page_size: int) -> int:
    return page_size // 8 - 3


def _chain(gens):
    for g in gens:
        yield from g


@traced_as("tlb_remove_table_rcu")
def _batch_cb(cpu: CPU, arg) -> object:
    machine, batch, page = arg
    free = machine.allocator.tlb_table_free
    gens = None
    for table in batch:
        r = free(cpu, table)
        if r is not None:
            gens = gens or []
            gens.append(r)
    machine.allocator.account.tlb_batch -= machine.pages.page_size
    machine.pages.free(cpu, page)
    return _chain(gens) if gens else None


class MMUGather:
    __slots__ = ("machine", "cpu", "mm", "batch", "page", "capacity", "tables", "batches", "flush")

    def __init__(self, machine: Machine, cpu: CPU, mm: MM) -> None:
        self.machine = machine
        self.cpu = cpu
        self.mm = mm
        self.batch: list[PageTable] | None = None
        self.page: Page | None = None
        self.capacity = batch_capacity(machine.config.machine.page_size)
        self.tables = 0
        self.batches = 0
        self.flush = machine.tlb_table_free == "flush"

    def remove_table(self, table: PageTable):
        """``tlb_remove_table``: queue ``table`` for freeing after a GP (a generator)."""
        self.tables += 1
        m = self.machine
        if self.flush:
            # tlb_remove_page: freed by finish(), after the flush
            if self.batch is None:
                self.batch = []
            self.batch.append(table)
            return
        if self.batch is None:
            page = m.pages.alloc(self.cpu, "tlb_batch", nowait=True)
            if page is None:
                m.counters["tlb.sync_frees"] += 1
                yield from m.ipi_all(self.cpu)
                r = m.allocator.tlb_table_free(self.cpu, table)
                if r is not None:
                    yield from r
                return
            m.allocator.account.tlb_batch += m.pages.page_size
            self.page = page
            self.batch = []
        self.batch.append(table)
        if len(self.batch) >= self.capacity:
            self._flush()

    def _flush(self) -> None:
        if self.batch:
            m = self.machine
            self.cpu.charge(m.costs.call_rcu)
            m.rcu.call_rcu(self.cpu, _batch_cb, (m, self.batch, self.page))
            self.batches += 1
        self.batch = None
        self.page = None

    def finish(self):
        """``tlb_finish_mmu``: flush the TLB, then hand the batch to RCU (or, in flush mode,
        free the gathered tables once the flush IPIs are answered)."""
        m = self.machine
        yield self.cpu.compute(m.draw.tlb_flush())
        if not self.flush:
            self._flush()
            return
        batch, self.batch = self.batch, None
        if not batch:
            return
        if m.irqs_off:
            # The flush IPI is answered only once IRQs are back on (GUP-fast's walk).
            yield from m.wait_irqs_on(self.cpu)
        free = m.allocator.tlb_table_free
        cpu = self.cpu
        for table in batch:
            r = free(cpu, table)
            if r is not None:
                yield from r
        m.counters["tlb.flush_frees"] += len(batch)
