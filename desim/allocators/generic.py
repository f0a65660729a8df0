"""``generic``: one PTE table per page (x86-64, arm64; s390 and sparc64 share the shape).

Models ``pte_free_defer()`` of mm/pgtable-generic.c (v6.6): the table's page goes to
``call_rcu`` on its own ``rcu_head`` and the callback frees it. The mmu_gather path hands the
table to the gather batch and frees the page in the batch's RCU callback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from desim.allocators import ALLOCATORS
from desim.allocators.base import Allocator
from desim.fields import MAX_PAGE_SIZE, Int
from desim.model.hooks import traced_as
from desim.model.memory import DETACHED, LIVE, PENDING, MemoryAccount, PageTable

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.memory import MM


class GenericParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    table_size: Int | None = Field(
        None,
        gt=0,
        le=MAX_PAGE_SIZE,
        description="bytes of one PTE table; default: the page size (512 x 8 B at 4 KiB)",
    )


@ALLOCATORS.register("generic")
class Generic(Allocator):
    Params: ClassVar[type[BaseModel]] = GenericParams
    summary = "x86-64/arm64: one table per page, pte_free_defer = call_rcu on the page"

    @classmethod
    def check_config(cls, params, config) -> None:
        super().check_config(params, config)
        size = getattr(params, "table_size", None)
        if size and size > config.machine.page_size:
            raise ValueError(
                f"allocator.params.table_size: {size} exceeds the page size "
                f"{config.machine.page_size}"
            )

    def __init__(self, machine, params: GenericParams) -> None:
        super().__init__(machine, params)
        self.table_size = params.table_size or self.page_size
        self.slack = self.page_size - self.table_size

    def pte_alloc_one(self, cpu: CPU, mm: MM):
        page = self.new_table_page(cpu)
        if page is None:
            return None
        size = self.table_bytes(mm)
        table = PageTable(page, 0, size, mm)
        page.tables.append(table)
        acc = self.account
        acc.live += size
        acc.internal += self.page_size - size
        return table
        yield

    def table_bytes(self, mm: MM) -> int:
        """Bytes of ``mm``'s tables in use; the rest of the page is internal waste."""
        return self.table_size

    def _to_pending(self, table: PageTable) -> None:
        table.state = PENDING
        table.t_freed = self.env.now
        self.account.live -= table.size
        self.account.pending += table.size

    def _retire(self, cpu: CPU, table: PageTable) -> None:
        """``table`` is freed: its bytes leave the live (or, after a grace period, pending) books."""
        was_live = table.state != PENDING  # LIVE, or DETACHED (audit counts both live)
        self.table_freed(cpu, table)
        acc = self.account
        if was_live:
            acc.live -= table.size
        else:
            acc.pending -= table.size
            self.reusable(table)

    def _release(self, cpu: CPU, table: PageTable) -> None:
        """Every free path ends here: retire the table, and with it its page (one table each).

        A design whose pages hold several tables overrides this to free the page only with its
        last table.
        """
        self._retire(cpu, table)
        self.account.internal -= self.page_size - table.size
        self.release_table_page(cpu, table.page)

    def pte_free(self, cpu: CPU, mm: MM, table: PageTable):
        self._release(cpu, table)
        return
        yield

    def pte_free_tlb(self, cpu: CPU, tlb, table: PageTable):
        self._to_pending(table)
        yield from tlb.remove_table(table)

    def tlb_table_free(self, cpu: CPU, table: PageTable):
        self._release(cpu, table)

    def pte_free_defer(self, cpu: CPU, mm: MM, table: PageTable):
        self._to_pending(table)
        self.m.page_call_rcu(cpu, table.page, self._rcu_free, table)
        return
        yield

    @traced_as("pte_free_now")
    def _rcu_free(self, cpu: CPU, table: PageTable) -> None:
        self._release(cpu, table)

    def audit(self) -> MemoryAccount:
        acc = MemoryAccount()
        for page in self.held_pages:
            for t in page.tables:
                if t.state == LIVE or t.state == DETACHED:
                    acc.live += t.size
                elif t.state == PENDING:
                    acc.pending += t.size
                acc.internal += self.page_size - t.size
        return acc
