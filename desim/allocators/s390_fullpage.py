"""``s390-fullpage``: Linux 6.7+, "s390/mm: use full 4KB page for 2KB PTE" (arch/s390/mm/pgalloc.c).

From 6.7 ``page_table_alloc`` takes a whole 4 KiB page for each 2 KiB PTE table (the upper
2 KiB are zeroed: the PGSTE area KVM guests use), ``page_table_free``/``__tlb_remove_table``
free the page, and ``pte_free_defer`` is ``call_rcu`` on the page's ``rcu_head`` like the
generic version: no ``pgtable_list``, no AA/PP bits, no ``context.lock``. The cost is the
unused upper half of every non-KVM table (``internal``); for a PGSTE mm that half holds the
guest state, so it counts as live. The behaviour is the ``generic`` allocator's, reused here
with a 2 KiB table in a 4 KiB page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from desim.allocators import ALLOCATORS
from desim.allocators.generic import Generic, GenericParams
from desim.allocators.s390_base import HALF
from desim.fields import MAX_PAGE_SIZE, Int

if TYPE_CHECKING:
    from desim.model.memory import MM


class S390FullPageParams(GenericParams):
    table_size: Int | None = Field(
        HALF, gt=0, le=MAX_PAGE_SIZE, description="bytes of one PTE table (2 KiB on s390)"
    )


@ALLOCATORS.register("s390-fullpage")
class S390FullPage(Generic):
    arch = "s390"
    Params = S390FullPageParams
    summary = "s390 6.7+: one 2 KiB table per 4 KiB page, pte_free_defer = call_rcu"

    @classmethod
    def page_sizes(cls, params) -> tuple[int, ...]:
        return (2 * HALF,)

    def table_bytes(self, mm: MM) -> int:
        # A KVM guest's table uses the upper half for its PGSTEs: the whole page is live.
        return self.page_size if mm.pgste else self.table_size
