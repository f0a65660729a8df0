"""``unsafe-callback-mm``: a control whose RCU callback reaches back to the mm.

s390's page-table allocator (arch/s390/mm/pgalloc.c, 6.6) keeps pages with a free 2 KB half on
the per-mm ``pgtable_list`` under ``mm->context.lock``. A ``pte_free_defer`` whose callback
puts the page back on that list has to find the mm from the callback, but RCU callbacks are
not ordered against the exit path: the process may exit and ``free_mm()`` run before the
callback does, which then takes a lock in freed memory. This is the hazard Hugh Dickins' s390
series had to design around (seed 000/001). One table per page otherwise, as ``generic``; the
mm is freed at exit with no wait, as for every design that never reaches back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from desim.allocators import ALLOCATORS
from desim.allocators.generic import Generic
from desim.model.hooks import traced_as

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.memory import MM, PageTable


@ALLOCATORS.register("unsafe-callback-mm")
class UnsafeCallbackMM(Generic):
    arch = "s390"  # its bug lives in the gather batch's RCU callback
    summary = "UNSAFE control: s390-style RCU callback takes mm->context.lock, mm may be freed"

    def pte_free_defer(self, cpu: CPU, mm: MM, table: PageTable):
        self._to_pending(table)
        self.m.page_call_rcu(cpu, table.page, self._rcu_free_via_mm, table)
        return
        yield

    @traced_as("pte_free_now (takes mm->context.lock)")
    def _rcu_free_via_mm(self, cpu: CPU, table: PageTable):
        """The callback: a generator, since it takes a spinlock."""
        mm: MM = table.mm  # type: ignore[assignment]  # a user table's callback: it has its mm
        if self.safety is not None:
            self.safety.mm_access(
                cpu, mm, "spin_lock(&mm->context.lock) in an RCU callback", (table, table.page)
            )
        lock = mm.context_lock
        ev = lock.acquire(cpu)
        if ev is not None:
            yield ev
        # the page's bookkeeping on mm->context.pgtable_list would be updated here
        yield cpu.compute(self.costs.lock_uncontended)
        lock.release(cpu)
        self._release(cpu, table)
