"""``powerpc-always-rcu``: Jason Gunthorpe's counter-proposal to Hugh's v2 (June 2023, seed 001).

``pte_fragment_free`` queues ``call_rcu(&page->rcu_head, ...)`` for EVERY page whose
``pt_frag_refcount`` reaches zero, and ``pte_free_defer`` becomes a plain fragment free: since
powerpc never hands a freed fragment out again, only the page's final free needs a grace
period, and the page's one ``rcu_head`` is used once, by that final free. The price: on the
mmu_gather path the fragment is already freed after the batch's grace period
(``__tlb_remove_table``), so the page then waits for a second one; a ``pte_free`` of a
never-visible table pays one too. ``pte_frag_destroy`` is untouched by the proposal: a page
whose last references are the tail dropped at mm teardown is still freed at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from desim.allocators import ALLOCATORS
from desim.allocators.powerpc import Powerpc

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.memory import MM, Page, PageTable


@ALLOCATORS.register("powerpc-always-rcu")
class PowerpcAlwaysRcu(Powerpc):
    known_violations = ()  # never sets PG_active
    summary = (
        "powerpc, Jason's proposal: every final page free by call_rcu "
        "(the mmu_gather path pays two grace periods)"
    )

    def final_free(self, cpu: CPU, page: Page) -> None:
        self._free_by_rcu(cpu, page)

    def pte_free_defer(self, cpu: CPU, mm: MM, table: PageTable):
        self.pte_fragment_free(cpu, table)
        return
        yield
