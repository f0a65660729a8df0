"""``unsafe-immediate``: a control that frees a retracted table at once, with no grace period.

This is what ``retract_page_tables()`` would do with plain ``pte_free()`` instead of
``pte_free_defer()`` (Linux 6.6 before "mm: free retracted page table by RCU"): a fault walking
the table locklessly under ``rcu_read_lock`` may still read its PTEs and take its ``ptl`` after
the page went back to the page allocator. The safety checker must catch it (use_after_free,
lock_in_freed_page). Everything else is ``generic``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from desim.allocators import ALLOCATORS
from desim.allocators.generic import Generic

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.memory import MM, PageTable


@ALLOCATORS.register("unsafe-immediate")
class UnsafeImmediate(Generic):
    summary = "UNSAFE control: retraction frees the table at once, no RCU grace period"

    def pte_free_defer(self, cpu: CPU, mm: MM, table: PageTable):
        self._to_pending(table)  # pending for no time at all: free-to-reuse delay 0
        self._release(cpu, table)
        return
        yield
