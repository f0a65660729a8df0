"""``powerpc-refcount``: Hugh Dickins' v2 of "powerpc: add pte_free_defer() for pgtables sharing
page" (June 2023, linuxppc-dev; superseded by the PG_active scheme merged in v6.6, seed 001).

The struct page has one ``rcu_head`` but up to ``PTE_FRAG_NR`` fragments may be deferred at
once. v2 counts deferrals in the upper part of ``pt_frag_refcount``:

* ``pte_free_defer`` turns the fragment's reference of 1 into one of ``PTE_FREE_DEFERRED``
  (0x10000) by adding 0xffff; only if no other deferral is outstanding (the sum is below
  2 x 0x10000) does it queue ``call_rcu(&page->rcu_head, pte_free_now)``. The fragment stays
  counted, so it is *pending* (not a hole) until its callback.
* ``pte_free_now`` (the callback) turns one deferral back into a plain reference (subtracting
  0xffff). If no other deferral came in during the grace period, it frees that fragment with
  ``pte_fragment_free``. Otherwise it drops every extra deferral but one (0x10000 each), drops
  the reference of the fragment it was called for, and queues the ``rcu_head`` once more: the
  deferrals that arrived during the grace period share that single extra grace period.
* Everything else is the pre-6.6 allocator: no ``PG_active``, so ``pte_fragment_free`` frees
  a page at once when its count reaches zero (on the mmu_gather path the batch's grace
  period has already passed).

The model tracks which fragments each queueing covers: those deferred before the
``call_rcu`` are freed by its callback; later ones wait for the re-deferral.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from desim.allocators import ALLOCATORS
from desim.allocators.powerpc import FragPage, Powerpc
from desim.model.hooks import traced_as
from desim.model.memory import FREE, PENDING

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.memory import MM, Page, PageTable

PTE_FREE_DEFERRED = 0x10000  # beyond any PTE_FRAG_NR


class DeferPage(FragPage):
    """Fragment page state plus the deferrals outstanding on it.

    ``deferred``: deferred fragments not yet freed, oldest first; ``covered``: how many of
    them the queued callback's grace period covers; ``folded``: how many of them share the one
    0x10000 left by a re-deferral (the others still hold 0x10000 each).
    """

    __slots__ = ("deferred", "covered", "folded")

    def __init__(self) -> None:
        super().__init__()
        self.deferred: list[PageTable] = []
        self.covered = 0
        self.folded = 0


@ALLOCATORS.register("powerpc-refcount")
class PowerpcRefcount(Powerpc):
    counters = ("powerpc.defer_joined", "powerpc.redefer")
    known_violations = ()  # never sets PG_active
    summary = (
        "powerpc, Hugh's v2: deferrals counted in pt_frag_refcount (+0x10000 each), "
        "one rcu_head user, callback re-defers once"
    )
    State = DeferPage

    def final_free(self, cpu: CPU, page: Page) -> None:
        # pre-6.6 pte_fragment_free: no PG_active, the page goes back at once.
        self._release(cpu, page, pending=False)

    def pte_free_defer(self, cpu: CPU, mm: MM, table: PageTable):
        page = table.page
        st = page.data
        self._to_pending(table)
        st.deferred.append(table)
        page.frag_refcount += PTE_FREE_DEFERRED - 1
        if page.frag_refcount < 2 * PTE_FREE_DEFERRED:
            st.covered = len(st.deferred)
            self.m.page_call_rcu(cpu, page, self._pte_free_now, page)
        else:
            self.m.counters["powerpc.defer_joined"] += 1  # the rcu_head is already in use
        return
        yield

    @traced_as("pte_free_now")
    def _pte_free_now(self, cpu: CPU, page: Page) -> None:
        st = page.data
        done = st.deferred[: st.covered]
        del st.deferred[: st.covered]
        page.frag_refcount -= PTE_FREE_DEFERRED - 1
        if page.frag_refcount < PTE_FREE_DEFERRED:
            # No deferral arrived during the grace period: free the fragment(s) it covered.
            st.covered = st.folded = 0
            for t in done:
                self._hole(cpu, t)
            self._put(cpu, page, 1)
            return
        # More deferrals came in: fold them into one, free this one, defer once more.
        while page.frag_refcount >= 2 * PTE_FREE_DEFERRED:
            page.frag_refcount -= PTE_FREE_DEFERRED
        page.frag_refcount -= 1
        for t in done:
            self._hole(cpu, t)
        st.covered = st.folded = len(st.deferred)
        self.m.counters["powerpc.redefer"] += 1
        self.m.page_call_rcu(cpu, page, self._pte_free_now, page)

    def expected_refcount(self, page: Page) -> int:
        st = page.data
        deferred = set(map(id, st.deferred))
        n = 0
        for t in page.tables:
            if t.state != FREE and id(t) not in deferred:
                n += 1
        if st.cached is not None:
            n += self.nr - st.handed
        units = len(st.deferred) - st.folded + (1 if st.folded else 0)
        return n + units * PTE_FREE_DEFERRED

    def invariant_errors(self) -> list[str]:
        errs = super().invariant_errors()
        for page in self.held_pages:
            st = page.data
            if any(t.state != PENDING for t in st.deferred):
                errs.append(f"{page!r}: a deferred fragment is not pending")
            if st.deferred and not page.rcu_queued:
                errs.append(f"{page!r}: deferrals outstanding but the rcu_head is not queued")
        return errs
