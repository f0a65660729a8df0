"""mmu_gather with MMU_GATHER_RCU_TABLE_FREE (mm/mmu_gather.c).

Tables unlinked by one munmap or exit are collected in a page-sized batch
(``PAGE_SIZE / sizeof(void *) - 3`` pointers: 509 with 4 KiB pages, 8189 with 64 KiB) and freed
by ONE ``call_rcu`` per batch. When the batch page cannot be had (GFP_NOWAIT), the table is freed
at once after an IPI to every other CPU (``tlb_remove_table_sync_one``): slow, but safe against
IRQ-disabled walkers.

The batch page is booked as its own memory kind (``account.tlb_batch``) from its allocation
until the batch's callback frees it: on 64 KiB powerpc a batch page can outweigh the tables it
carries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.machine import Machine
    from desim.model.memory import MM, Page, PageTable


def batch_capacity(page_size: int) -> int:
    return page_size // 8 - 3


def _chain(gens):
    for g in gens:
        yield from g


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
    __slots__ = ("machine", "cpu", "mm", "batch", "page", "capacity", "tables", "batches")

    def __init__(self, machine: Machine, cpu: CPU, mm: MM) -> None:
        self.machine = machine
        self.cpu = cpu
        self.mm = mm
        self.batch: list[PageTable] | None = None
        self.page: Page | None = None
        self.capacity = batch_capacity(machine.config.machine.page_size)
        self.tables = 0
        self.batches = 0

    def remove_table(self, table: PageTable):
        """``tlb_remove_table``: queue ``table`` for freeing after a GP (a generator)."""
        self.tables += 1
        m = self.machine
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
        """``tlb_finish_mmu``: flush the TLB, then hand the batch to RCU."""
        yield self.cpu.compute(self.machine.costs.tlb_flush)
        self._flush()
