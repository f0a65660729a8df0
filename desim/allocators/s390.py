"""``s390``: the half-page allocator as merged in Linux 6.6 (arch/s390/mm/pgalloc.c).

What the 6.6 functions do, in the model's words (shared parts in ``s390_base``):

* ``page_table_free`` (``pte_free``; also the body of ``pte_free_defer``): under
  ``mm->context.lock`` (spin_lock_bh) flip the half from A to P; if the other half is still
  allocated and the page is not Active, put the page at the HEAD of the list (the freed half is
  reusable at once), otherwise unlink it. After the unlock, clear P; if no bit is left, free
  the page: through ``call_rcu`` on its ``rcu_head`` if it was Active, else at once.
* ``page_table_free_rcu`` (``pte_free_tlb``, the mmu_gather path): the same flip under the
  lock, but the page goes to the TAIL (its half stays P until the gather's grace period), and
  the table joins the gather batch. PGSTE tables just join the batch.
* ``__tlb_remove_table`` (``tlb_table_free``, after the batch's grace period, or at once after
  the IPI fallback): clear P without any lock (an atomic xor); a PGSTE table clears AA. No bit
  left: free the page, through ``call_rcu`` if Active.
* ``pte_free_defer``: ``SetPageActive`` then ``page_table_free``. The Active page leaves the
  list and is never relinked, so NEITHER half is reused; when its last half is freed the page
  takes one ``call_rcu``. The callback never reaches back to the mm.

Faithful corners: ``page_table_alloc`` looks at the list's first page only, so a half freed by
mmu_gather (at the tail) is reused only once it reaches the head; a PGSTE mm's retracted table
goes the same way as a full page (the kernel warns: THP is off for KVM guests), counted in
``s390.pgste_defer``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from desim.allocators import ALLOCATORS
from desim.allocators.s390_base import (
    FREEING,
    HALF,
    PGSTE,
    HalfPageAllocator,
    S390PageState,
    a_bit,
    p_bit,
)
from desim.model.hooks import traced_as
from desim.model.memory import PG_ACTIVE

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.memory import MM, Page, PageTable


@ALLOCATORS.register("s390")
class S390(HalfPageAllocator):
    counters = ("s390.active_pages", "s390.page_call_rcu")
    summary = "s390 6.6: 2 KiB halves, AA/PP bits, per-mm pgtable_list, Active pages not reused"

    def __init__(self, machine, params) -> None:
        super().__init__(machine, params)
        self.deferring: dict = {}  # pages marked Active whose deferrer waits for the lock

    def list_lock(self, mm: MM):
        return mm.context_lock

    # -- page_table_free ----------------------------------------------------------------------
    def _page_table_free(self, cpu: CPU, mm: MM, table: PageTable, deferred: bool = False):
        page = table.page
        st: S390PageState = page.data
        if st.bits & PGSTE:
            if deferred:
                self._deferral_locked(page)
            self.free_pgste(cpu, page)
        else:
            half = table.offset // HALF
            lock = mm.context_lock
            yield from self.spin_lock(cpu, lock)
            if deferred:
                self._deferral_locked(page)
            old = self._split(page)
            st.bits ^= a_bit(half) | p_bit(half)
            self.free_slot(cpu, page, half)
            self._relist(cpu, mm, page, tail=False)  # head: reusable at once
            self.commit(page, old)
            self.check(cpu, page, "page_table_free")
            self.spin_unlock(cpu, lock)
            old = self._split(page)
            st.bits ^= p_bit(half)
            self.commit(page, old)
            self.check(cpu, page, "page_table_free P clear")
            if st.bits:
                return
        self._last_half_gone(cpu, page)

    def _relist(self, cpu: CPU, mm: MM, page: Page, tail: bool) -> None:
        """After a half went A→P: a page whose other half is allocated goes on the list, unless
        Active (never reused); any other page comes off it."""
        if page.data.bits & 0x03 and not page.flags & PG_ACTIVE:
            self.list_add(cpu, mm, page, tail=tail)
        else:
            self.list_del_init(cpu, page)

    def _deferral_locked(self, page: Page) -> None:
        n = self.deferring.get(page, 0)
        if n > 1:
            self.deferring[page] = n - 1
        elif n:
            del self.deferring[page]

    def _last_half_gone(self, cpu: CPU, page: Page) -> None:
        """``TestClearPageActive`` → ``call_rcu(pte_free_now)``, else ``pte_free_now`` at once."""
        if page.flags & PG_ACTIVE:
            page.flags &= ~PG_ACTIVE
            old = self._split(page)
            page.data.bits |= FREEING
            self.m.page_call_rcu(cpu, page, self._free_now, page)
            self.commit(page, old)
            self.m.counters["s390.page_call_rcu"] += 1
        else:
            self.release(cpu, page)

    @traced_as("pte_free_now")
    def _free_now(self, cpu: CPU, page: Page) -> None:
        self.release(cpu, page)

    def pte_free(self, cpu: CPU, mm: MM, table: PageTable):
        yield from self._page_table_free(cpu, mm, table)

    def pte_free_defer(self, cpu: CPU, mm: MM, table: PageTable):
        page = table.page
        old = self._split(page)
        page.flags |= PG_ACTIVE  # SetPageActive, outside the lock
        self.commit(page, old)  # the other free half is stranded now
        if mm.pgste:
            self.m.counters["s390.pgste_defer"] += 1  # the kernel's WARN_ON_ONCE
        self.m.counters["s390.active_pages"] += 1
        # Until page_table_free holds the lock, the Active page may still be on the list (and
        # page_table_alloc may even hand out its free half: harmless, that half was never
        # deferred). The invariant allows an Active listed page only in this window.
        self.deferring[page] = self.deferring.get(page, 0) + 1
        yield from self._page_table_free(cpu, mm, table, deferred=True)

    # -- mmu_gather ---------------------------------------------------------------------------
    def list_after_free_rcu(self, cpu: CPU, mm: MM, page: Page, half: int) -> None:
        """``page_table_free_rcu`` (shared path in ``s390_base``): as ``page_table_free``, but at
        the list's TAIL: the gathered half stays P until the batch's grace period."""
        self._relist(cpu, mm, page, tail=True)

    def tlb_table_free(self, cpu: CPU, table: PageTable):
        """``__tlb_remove_table``: lockless, never touches the mm."""
        page = table.page
        st: S390PageState = page.data
        if st.bits & PGSTE:
            self.free_pgste(cpu, page)
        else:
            self.clear_p(cpu, page, table.offset // HALF)
        self.check(cpu, page, "__tlb_remove_table")
        if not st.bits & 0x3F:
            self._last_half_gone(cpu, page)

    # -- invariants ---------------------------------------------------------------------------
    def page_errors(self, page: Page) -> list[str]:
        errs = self.common_errors(page)
        bits = page.data.bits
        if bits & PGSTE:
            return errs
        if bits & 0x0C:
            errs.append("H bits set: 6.6 has none")
        if page.on_list is not None:
            if page.flags & PG_ACTIVE and page not in self.deferring:
                errs.append("Active page on pgtable_list")
            if (bits & 0x03) in (0, 0x03):
                errs.append(f"on pgtable_list with {bits & 0x03:#x} allocated halves")
        if page.rcu_queued and (bits & 0x3F or not bits & FREEING):
            errs.append("rcu_head queued while a half is still in use")
        return errs
