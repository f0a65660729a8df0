"""``powerpc``: the PTE fragment allocator of book3s64 / 8xx as merged in Linux v6.6.

Modelled after arch/powerpc/mm/pgtable-frag.c (v6.6) and the hooks of
arch/powerpc/include/asm/pgalloc.h and book3s/64/pgalloc.h that lead to it:

* ``pte_fragment_alloc`` → ``get_pte_from_cache``: under ``mm->page_table_lock`` the next
  fragment of the mm's cached page (``mm->context.pte_frag``, here ``mm.arch["pte_frag"]``) is
  handed out and the cursor advanced; the cursor is cleared once the page's last fragment is out.
* ``__alloc_for_ptecache``: on a cache miss a fresh page is allocated and constructed *without*
  the lock, with ``pt_frag_refcount`` 1; only then is the lock taken to install it as the cached
  page with the refcount raised to ``PTE_FRAG_NR``. If another CPU installed a page during the
  allocation window, this page keeps refcount 1 and serves just the one fragment it returns:
  the rest of it can never be handed out (the two-CPU allocation race, ``powerpc.alloc_race``).
* ``pte_fragment_free`` (reached by ``pte_free``, by ``__tlb_remove_table`` → ``pgtable_free``
  after the mmu_gather batch's grace period, and by ``pte_free_defer``): drop one reference; a
  freed fragment is never handed out again. At zero the page goes back to the page allocator,
  at once, or through ``call_rcu`` on the page's single ``rcu_head`` (``pte_free_now``) if
  ``PG_active`` was set (and is cleared) on it.
* ``pte_free_defer``: set ``PG_active`` on the page and free the fragment at once. Because
  fragments are never reused, nobody can find the retracted fragment again; only the page's
  final free must wait for a grace period, and the Active mark says so.
* ``pte_frag_destroy`` (``destroy_context``, here ``mm_teardown``): subtract the fragments of the
  cached page never handed out; if that was the last reference the page is freed at once,
  without looking at ``PG_active``: a page still marked reaches the page allocator with the flag
  set, which ``free_pages_prepare`` reports as "BUG: Bad page state" (the safety checker's
  ``bad_page_state``; also counted as ``powerpc.teardown_free_active``). Fixed upstream in 2026.

How the bytes of a held page split (``audit`` recomputes it from the pages; ``account`` follows
every transition): handed-out fragments in use are *live*; fragments in an mmu_gather batch (or,
in the refcount variant, awaiting their deferral's callback) are *pending*; a whole page queued
for its final free by RCU is *pending*; freed fragments of a page still held are *stranded*
holes, as is the never-to-be-used rest of a race loser's page or of a page whose tail was dropped
at teardown; the not-yet-handed-out tail of an mm's cached page is *spare*. Fragments tile the
page, so *internal* is always 0. Note that in v6.6 a deferred fragment that is not its page's
last is a hole at once: nothing waits on a grace period until the page's final free.

Subclasses (``powerpc-refcount``, ``powerpc-always-rcu``) override ``final_free`` and
``pte_free_defer`` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from desim.allocators import ALLOCATORS
from desim.allocators.base import Allocator
from desim.model.hooks import traced_as
from desim.model.memory import DETACHED, FREE, LIVE, PENDING, PG_ACTIVE, MemoryAccount, PageTable

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.memory import MM, Page

# geometry preset -> (page size, fragment size): PTE_FRAG_NR = page size / fragment size
GEOMETRIES: dict[str, tuple[int, int]] = {
    "hash64k": (64 * 1024, 4096),  # book3s64 hash MMU, 64 KiB pages: 16 x 4 KiB
    "radix64k": (64 * 1024, 256),  # book3s64 radix MMU, 64 KiB pages: 256 x 256 B
    "8xx16k": (16 * 1024, 4096),  # 8xx with 16 KiB pages: 4 x 4 KiB
}


class PowerpcParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    geometry: Literal["hash64k", "radix64k", "8xx16k"] = Field(
        "hash64k",
        description="fragment geometry: hash64k (16 x 4 KiB per 64 KiB page), radix64k "
        "(256 x 256 B per 64 KiB page), 8xx16k (4 x 4 KiB per 16 KiB page)",
    )


class FragPage:
    """What the kernel keeps for a fragment page, besides ``pt_frag_refcount``.

    ``handed``: fragments handed out so far (the next one is at ``handed * frag_size``; the
    kernel's cursor pointer); ``cached``: the mm whose ``pte_frag`` cursor points into this page;
    ``rcu_final``: the page's final free is queued on its ``rcu_head``.
    """

    __slots__ = ("handed", "cached", "rcu_final")

    def __init__(self) -> None:
        self.handed = 0
        self.cached: MM | None = None
        self.rcu_final = False


@ALLOCATORS.register("powerpc")
class Powerpc(Allocator):
    counters: ClassVar[tuple[str, ...]] = (
        "powerpc.alloc_race",
        "powerpc.rcu_page_frees",
        "powerpc.teardown_dropped",
        "powerpc.teardown_free_active",
    )
    Params = PowerpcParams
    summary = (
        "powerpc 6.6: per-mm fragment cache under page_table_lock, fragments never reused, "
        "PG_active pages freed by RCU"
    )
    State: type[FragPage] = FragPage
    # Violations the design as merged is known to commit (tests expect them, nothing else).
    known_violations: ClassVar[tuple[str, ...]] = ("bad_page_state",)

    @classmethod
    def default_arch(cls, params: BaseModel) -> str:
        return "powerpc-radix" if getattr(params, "geometry", "") == "radix64k" else "powerpc-hash"

    @classmethod
    def geometry(cls, params) -> tuple[str, ...]:
        return ("geometry", params.geometry)

    @classmethod
    def page_sizes(cls, params) -> tuple[int, ...]:
        return (GEOMETRIES[params.geometry][0],)  # the geometry's page size

    def __init__(self, machine, params: PowerpcParams) -> None:
        super().__init__(machine, params)
        need, self.frag = GEOMETRIES[params.geometry]
        self.nr = need // self.frag  # PTE_FRAG_NR

    # -- allocation -----------------------------------------------------------------------------
    def pte_alloc_one(self, cpu: CPU, mm: MM):
        lock = mm.page_table_lock
        yield from cpu.spin_lock(lock)  # time owed is paid before the lock ...
        yield cpu.compute(0)  # ... and the lock's own cost while holding it
        page = mm.arch.get("pte_frag")
        if page is not None:
            table = self._take(page)
            lock.release(cpu)
            return table
        lock.release(cpu)
        return (yield from self._alloc_fresh(cpu, mm))

    def _take(self, page: Page) -> PageTable:
        """``get_pte_from_cache``: the cached page's next fragment (page_table_lock held)."""
        st = page.data
        table = PageTable(page, st.handed * self.frag, self.frag, st.cached)
        page.tables.append(table)
        st.handed += 1
        if st.handed == self.nr:
            st.cached.arch["pte_frag"] = None
            st.cached = None
        acc = self.account
        acc.spare -= self.frag
        acc.live += self.frag
        return table

    def _alloc_fresh(self, cpu: CPU, mm: MM):
        """``__alloc_for_ptecache``: allocate unlocked, then install under page_table_lock."""
        page = self.new_table_page(cpu)
        if page is None:
            return None
        st = page.data = self.State()
        page.frag_refcount = 1
        table = PageTable(page, 0, self.frag, mm)
        page.tables.append(table)
        st.handed = 1
        rest = self.page_size - self.frag
        acc = self.account
        acc.live += self.frag
        acc.stranded += rest  # until installed, no one else can take the rest
        # The allocation and constructor take time with the lock NOT held: the race window.
        lock = mm.page_table_lock
        yield from cpu.spin_lock(lock)  # pays for the allocation first
        yield cpu.compute(0)
        if mm.arch.get("pte_frag") is None:
            page.frag_refcount = self.nr
            st.cached = mm
            mm.arch["pte_frag"] = page
            acc.stranded -= rest
            acc.spare += rest
        else:
            # Another CPU installed a page meanwhile: this one serves only its first fragment.
            self.m.counters["powerpc.alloc_race"] += 1
        lock.release(cpu)
        return table

    # -- freeing ---------------------------------------------------------------------------------
    def _to_pending(self, table: PageTable) -> None:
        table.state = PENDING
        table.t_freed = self.env.now
        acc = self.account
        acc.live -= self.frag
        acc.pending += self.frag

    def _hole(self, cpu: CPU, table: PageTable) -> None:
        """``table`` is freed for good: a hole in its page that is never handed out again."""
        was = table.state
        self.table_freed(cpu, table)
        acc = self.account
        if was == PENDING:
            acc.pending -= self.frag
        else:
            table.t_freed = self.env.now
            acc.live -= self.frag
        acc.stranded += self.frag

    def pte_fragment_free(self, cpu: CPU, table: PageTable) -> None:
        """Free ``table``'s fragment and drop the reference it held on its page."""
        self._hole(cpu, table)
        self._put(cpu, table.page, 1)

    def _put(self, cpu: CPU, page: Page, n: int) -> None:
        page.frag_refcount -= n
        if page.frag_refcount == 0:
            self.final_free(cpu, page)
        elif page.frag_refcount < 0 and self.safety is not None:
            self.safety.invariant(cpu, (page,), f"{page!r}: pt_frag_refcount went negative")

    def final_free(self, cpu: CPU, page: Page) -> None:
        """The last reference is gone: v6.6 frees at once unless ``PG_active`` was set."""
        if page.flags & PG_ACTIVE:
            page.flags &= ~PG_ACTIVE
            self._free_by_rcu(cpu, page)
        else:
            self._release(cpu, page, pending=False)

    def _free_by_rcu(self, cpu: CPU, page: Page) -> None:
        """``call_rcu(&page->rcu_head, pte_free_now)``: the whole page waits for a GP."""
        page.data.rcu_final = True
        acc = self.account
        acc.stranded -= self.page_size
        acc.pending += self.page_size
        self.m.counters["powerpc.rcu_page_frees"] += 1
        self.m.page_call_rcu(cpu, page, self._pte_free_now, page)

    @traced_as("pte_free_now")
    def _pte_free_now(self, cpu: CPU, page: Page) -> None:
        self._release(cpu, page, pending=True)

    def _release(self, cpu: CPU, page: Page, pending: bool) -> None:
        """Give the page back: every byte of it was stranded (or pending, after a GP)."""
        if pending:
            self.account.pending -= self.page_size
        else:
            self.account.stranded -= self.page_size
        for t in page.tables:
            if t.state == FREE:
                self.reusable(t)
        page.data = None
        self.release_table_page(cpu, page)

    def pte_free(self, cpu: CPU, mm: MM, table: PageTable):
        self.pte_fragment_free(cpu, table)
        return
        yield

    def pte_free_tlb(self, cpu: CPU, tlb, table: PageTable):
        self._to_pending(table)
        yield from tlb.remove_table(table)

    def tlb_table_free(self, cpu: CPU, table: PageTable) -> None:
        self.pte_fragment_free(cpu, table)

    def pte_free_defer(self, cpu: CPU, mm: MM, table: PageTable):
        table.page.flags |= PG_ACTIVE
        self.pte_fragment_free(cpu, table)
        return
        yield

    def mm_teardown(self, cpu: CPU, mm: MM):
        """``pte_frag_destroy``: drop the references of the fragments never handed out."""
        page = mm.arch.pop("pte_frag", None)
        if page is not None:
            st = page.data
            st.cached = None
            tail = self.nr - st.handed
            nbytes = tail * self.frag
            acc = self.account
            acc.spare -= nbytes
            acc.stranded += nbytes
            self.m.counters["powerpc.teardown_dropped"] += tail
            page.frag_refcount -= tail
            if page.frag_refcount == 0:
                if page.flags & PG_ACTIVE:
                    # v6.6 frees the page without TestClearPageActive and without a grace
                    # period: the page allocator's free check reports it (bad_page_state).
                    self.m.counters["powerpc.teardown_free_active"] += 1
                self._release(cpu, page, pending=False)
        return
        yield

    # -- checking ---------------------------------------------------------------------------------
    def audit(self) -> MemoryAccount:
        acc = MemoryAccount()
        f = self.frag
        for page in self.held_pages:
            st = page.data
            if st.rcu_final:
                acc.pending += self.page_size
                continue
            for t in page.tables:
                s = t.state
                if s in (LIVE, DETACHED):
                    acc.live += f
                elif s == PENDING:
                    acc.pending += f
                else:
                    acc.stranded += f
            tail = (self.nr - st.handed) * f
            if st.cached is not None:
                acc.spare += tail
            else:
                acc.stranded += tail
        return acc

    def expected_refcount(self, page: Page) -> int:
        """What ``pt_frag_refcount`` must be, recounted from the fragments' states."""
        st = page.data
        n = sum(1 for t in page.tables if t.state != FREE)
        if st.cached is not None:
            n += self.nr - st.handed
        return n

    def invariant_errors(self) -> list[str]:
        errs = []
        for page in self.held_pages:
            st = page.data
            if st is None:
                errs.append(f"{page!r}: held without fragment state")
                continue
            offsets = [t.offset for t in page.tables]
            if offsets != [i * self.frag for i in range(st.handed)]:
                errs.append(f"{page!r}: fragments {offsets} not handed out once each, in order")
            want = self.expected_refcount(page)
            if page.frag_refcount != want:
                errs.append(
                    f"{page!r}: pt_frag_refcount {page.frag_refcount:#x}, expected {want:#x}"
                )
            if st.rcu_final and not page.rcu_queued:
                errs.append(f"{page!r}: final free by RCU but its rcu_head is not queued")
            if st.cached is not None and st.cached.arch.get("pte_frag") is not page:
                errs.append(f"{page!r}: marked cached by {st.cached!r} which caches another page")
        return errs
