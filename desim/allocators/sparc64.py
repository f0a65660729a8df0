"""``sparc64``: one 8 KiB PTE table filling one 8 KiB page (Linux v6.6).

sparc64's ``pgtable_t`` is a ``pte_t *`` but its tables never share a page (1024 entries of
8 B = PAGE_SIZE), so Hugh Dickins' "sparc: add pte_free_defer() for pte_t *pgtable_t"
(arch/sparc/mm/init_64.c, v6.6) is the generic scheme: ``call_rcu`` on the table page's own
``rcu_head`` and a callback that frees it; the mmu_gather path (``tlb_remove_table``) frees it
after the batch's grace period. The behaviour is ``generic``'s with the table size fixed to the
page; only the geometry, and its check, live here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from desim.allocators import ALLOCATORS
from desim.allocators.generic import Generic, GenericParams

SPARC64_PAGE = 8 * 1024


class Sparc64Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@ALLOCATORS.register("sparc64")
class Sparc64(Generic):
    arch = "sparc64"
    Params = Sparc64Params
    summary = "sparc64: one 8 KiB table per 8 KiB page, pte_free_defer = call_rcu on the page"

    @classmethod
    def page_sizes(cls, params) -> tuple[int, ...]:
        return (SPARC64_PAGE,)

    def __init__(self, machine, params: Sparc64Params) -> None:
        super().__init__(machine, GenericParams(table_size=SPARC64_PAGE))
        self.params = params
