"""What the two s390 half-page allocators (6.6 ``s390`` and Hugh's v2 ``s390-hh``) share.

arch/s390/mm/pgalloc.c up to v6.6 fits two 2 KiB PTE tables (256 entries of 8 B) in one 4 KiB
page. The state of each half lives in the upper byte of the page's ``_refcount``, modelled here
as real bit fields in ``S390PageState.bits`` with the kernel's layout:

* bit 0/1 (``A``): the lower/upper half is allocated;
* bit 2/3 (``H``, v2 only): the half is pending free through the page's ``rcu_head``;
* bit 4/5 (``P``): the half is pending free (6.6: by mmu_gather; v2: by any method).

A page with a free half is linked on its mm's ``pgtable_list`` (``mm.arch["pgtable_list"]``);
``page_table_alloc`` looks at the FIRST page of that list only and takes its free half if the
half is neither allocated nor pending, otherwise it allocates a fresh page and puts it at the
head. The list links overlay the page's ``rcu_head``: every list operation goes through
``list_add``/``list_del_init`` here, which tell the safety checker (``list_use``).

KVM guests (``mm.pgste``) get a full page per table: the lower 2 KiB hold PTEs, the upper
2 KiB the guest's PGSTEs; both A bits are set and the page never sees the list. The PGSTE half
is in use, so it counts as live.

Memory is classified per half from this state (``_split``), and ``self.account`` is updated by
the difference before/after every transition; ``audit`` re-runs the classifier over all pages:

* A set → live; P or H set → pending; a page whose last half went to ``call_rcu`` → pending
  (``FREEING``, a model-only marker outside the kernel's byte);
* a free half of an Active page (6.6 ``pte_free_defer``) → stranded;
* a free half of a page on ``pgtable_list`` → spare (reusable); any other free half → stranded
  (it goes back with the page once the other half's grace period ends).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, ClassVar

from desim.allocators.base import Allocator
from desim.model.memory import DETACHED, LIVE, PENDING, PG_ACTIVE, MemoryAccount, PageTable

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.memory import MM, Page

HALF = 2048  # bytes of a 2 KiB PTE table (PTRS_PER_PTE 256 x 8 B)
AA = 0x03  # both allocated bits: a PGSTE full-page table
PGSTE = 0x100  # model-only marker: the page holds a full-page PGSTE table
FREEING = 0x200  # model-only marker: every half is gone and the page waits in call_rcu


def a_bit(half: int) -> int:
    return 0x01 << half


def h_bit(half: int) -> int:
    return 0x04 << half


def p_bit(half: int) -> int:
    return 0x10 << half


# classification of a half
LIVE_B, PEND_B, SPARE_B, STRAND_B = 0, 1, 2, 3


class S390PageState:
    """The page-table fields of an s390 ``struct page`` the designs use."""

    __slots__ = ("bits", "pt_mm", "t_freed")

    def __init__(self, bits: int, pt_mm: MM | None) -> None:
        self.bits = bits  # the upper byte of _refcount (plus the PGSTE marker)
        self.pt_mm = pt_mm  # v2: page->pt_mm, the mm whose list the page belongs on
        self.t_freed = [-1, -1]  # when each half was last freed (for free-to-reuse delay)

    def __repr__(self) -> str:
        return f"bits={self.bits:#04x}"


class HalfPageAllocator(Allocator):
    counters: ClassVar[tuple[str, ...]] = (
        "s390.fresh_pages",
        "s390.list_hits",
        "s390.pages_freed",
        "s390.pgste_pages",
        "s390.pgste_defer",
    )
    arch = "s390"
    """Shared half-page machinery: ``page_table_alloc``, the per-mm list, the accounting, and
    ``page_table_free_rcu``. Subclasses give the list lock, the other free paths, and where a
    gathered half leaves its page on the list (``list_after_free_rcu``)."""

    @classmethod
    def geometry(cls, params) -> tuple[str, ...]:
        return ("(2 KiB tables, two per page)",)

    @classmethod
    def page_sizes(cls, params) -> tuple[int, ...]:
        return (2 * HALF,)  # 2 KiB tables, two per 4 KiB page

    def __init__(self, machine, params) -> None:
        super().__init__(machine, params)
        self.in_transit: set = set()  # fresh pages not yet on their list (see pte_alloc_one)

    # -- hooks ----------------------------------------------------------------------------
    def list_lock(self, mm: MM):
        """The lock guarding ``mm``'s pgtable_list (6.6: ``mm->context.lock``)."""
        raise NotImplementedError

    def busy(self, bits: int) -> int:
        """Halves ``page_table_alloc`` must not hand out: allocated or pending."""
        return (bits | (bits >> 4)) & 0x03

    def list_after_free_rcu(self, cpu: CPU, mm: MM, page: Page, half: int) -> None:
        """Where ``page_table_free_rcu`` leaves ``page`` once ``half`` went A→P (lock held)."""
        raise NotImplementedError

    def check(self, cpu: CPU | None, page: Page, where: str) -> None:
        """Run the design's invariants on ``page`` after a transition; report breaks."""
        if self.safety is None:
            return
        for msg in self.page_errors(page):
            self.safety.invariant(cpu, (page,), f"{where}: {page!r} {msg}")

    def page_errors(self, page: Page) -> list[str]:
        return self.common_errors(page)

    # -- the per-mm list, whose links overlay the rcu_head --------------------------------
    def pgtable_list(self, mm: MM) -> deque:
        lst = mm.arch.get("pgtable_list")
        if lst is None:
            lst = mm.arch["pgtable_list"] = deque()
        return lst

    def list_add(self, cpu: CPU, mm: MM, page: Page, tail: bool = False) -> None:
        """``list_add``/``list_add_tail`` (the page is not on a list when this is called)."""
        if self.safety is not None:
            self.safety.list_use(cpu, page, "list_add")
        lst = self.pgtable_list(mm)
        if page.on_list is not None:
            page.on_list.remove(page)
        if tail:
            lst.append(page)
        else:
            lst.appendleft(page)
        page.on_list = lst

    def list_del_init(self, cpu: CPU, page: Page) -> None:
        """``list_del_init``: unlink if linked (cheap when not: the kernel calls it blindly)."""
        lst = page.on_list
        if lst is None:
            return
        if self.safety is not None:
            self.safety.list_use(cpu, page, "list_del")
        lst.remove(page)
        page.on_list = None

    # -- accounting -----------------------------------------------------------------------
    def _split(self, page: Page) -> tuple[int, int]:
        """The class of each half, from the page's bits, flags and list membership."""
        st: S390PageState = page.data
        bits = st.bits
        if bits & FREEING:
            return PEND_B, PEND_B
        if bits & PGSTE:
            t = page.tables[0]
            c = PEND_B if t is None or t.state == PENDING else LIVE_B
            return c, c
        out = []
        for half in (0, 1):
            if bits & a_bit(half):
                out.append(LIVE_B)
            elif bits & (p_bit(half) | h_bit(half)):
                out.append(PEND_B)
            elif page.flags & PG_ACTIVE or page.on_list is None:
                out.append(STRAND_B)
            else:
                out.append(SPARE_B)
        return out[0], out[1]

    def _apply(self, cls: tuple[int, int], sign: int) -> None:
        acc = self.account
        for c in cls:
            if c == LIVE_B:
                acc.live += sign * HALF
            elif c == PEND_B:
                acc.pending += sign * HALF
            elif c == SPARE_B:
                acc.spare += sign * HALF
            else:
                acc.stranded += sign * HALF

    def commit(self, page: Page, old: tuple[int, int] | None) -> None:
        """Move ``page``'s bytes from class ``old`` to what its state says now."""
        new = self._split(page)
        if new == old:
            return
        if old is not None:
            self._apply(old, -1)
        self._apply(new, +1)
        if old is not None:
            st = page.data
            for half in (0, 1):
                if new[half] == SPARE_B and old[half] != SPARE_B:
                    self._reused(st, half)

    def _reused(self, st: S390PageState, half: int) -> None:
        t = st.t_freed[half]
        if t >= 0:
            self.m.record("free_to_reuse", self.env.now - t)
            st.t_freed[half] = -1

    # -- pages ------------------------------------------------------------------------------
    def fresh_page(self, cpu: CPU, mm: MM) -> Page | None:
        page = self.new_table_page(cpu)
        if page is None:
            return None
        page.data = S390PageState(0, mm)
        page.tables = [None, None]
        return page

    def release(self, cpu: CPU, page: Page) -> None:
        """``pte_free_now``: destruct the page and give it back (its bytes leave the books)."""
        self._apply(self._split(page), -1)
        st: S390PageState = page.data
        for half in (0, 1):
            self._reused(st, half)
        if page.on_list is not None:
            self.list_del_init(cpu, page)
            if self.safety is not None:
                self.safety.invariant(cpu, (page,), f"{page!r} freed while on pgtable_list")
        self.release_table_page(cpu, page)
        self.m.counters["s390.pages_freed"] += 1

    def free_slot(self, cpu: CPU, page: Page, half: int) -> None:
        """The table in ``half`` is gone for good (checked for double frees)."""
        table = page.tables[half]
        if table is None:
            if self.safety is not None:
                self.safety.violation(
                    "double_free", cpu, (page,), f"{page!r} half {half} freed twice"
                )
            return
        # The free-to-reuse clock starts when the unmapper freed the table (pte_free_tlb or
        # pte_free_defer: ``to_pending``), not here: ``__tlb_remove_table`` runs after the
        # grace period, and while the half was P (or H) nobody could reuse it.
        t = table.t_freed if table.state == PENDING else self.env.now
        self.table_freed(cpu, table)
        page.tables[half] = None
        page.data.t_freed[half] = t

    def spin_lock(self, cpu: CPU, lock, softirq: bool = False):
        """``spin_lock_bh(lock)`` (a generator): time owed for earlier work (a page allocation)
        is paid before, the lock's own cost and any hand-off while holding it; softirqs stay off
        until ``spin_unlock``. From a callback (``softirq``), bh is already off and the time
        owed is the interrupted task's, not ours."""
        if softirq:
            ev = lock.acquire(cpu)
            if ev is not None:
                yield ev
            return
        yield from cpu.spin_lock(lock, bh=True)
        yield cpu.compute(0)

    def spin_unlock(self, cpu: CPU, lock, softirq: bool = False) -> None:
        cpu.spin_unlock(lock, bh=not softirq)

    # -- transitions the free paths share ---------------------------------------------------
    def to_pending(self, table: PageTable) -> None:
        table.state = PENDING
        table.t_freed = self.env.now

    def pgste_to_pending(self, table: PageTable) -> None:
        """A PGSTE table waits for a grace period: no bits move, its page's class follows it."""
        page = table.page
        old = self._split(page)
        self.to_pending(table)
        self.commit(page, old)

    def free_pgste(self, cpu: CPU, page: Page) -> None:
        """A PGSTE full-page table is gone: clear both A bits and free its slot."""
        old = self._split(page)
        page.data.bits ^= AA
        self.free_slot(cpu, page, 0)
        self.commit(page, old)

    def clear_p(self, cpu: CPU, page: Page, half: int) -> None:
        """``__tlb_remove_table``'s atomic xor: the gathered ``half`` leaves P, its table is freed."""
        old = self._split(page)
        page.data.bits ^= p_bit(half)
        self.free_slot(cpu, page, half)
        self.commit(page, old)

    # -- page_table_alloc ---------------------------------------------------------------------
    def pte_alloc_one(self, cpu: CPU, mm: MM):
        """``page_table_alloc``: reuse the free half of the list's first page, else a fresh page."""
        if not mm.pgste:
            lock = self.list_lock(mm)
            yield from self.spin_lock(cpu, lock)
            table = None
            lst = self.pgtable_list(mm)
            if lst:
                page = lst[0]
                st = page.data
                mask = self.busy(st.bits)
                if mask != 0x03:
                    old = self._split(page)
                    half = mask & 0x01  # lower busy -> hand out the upper half
                    st.bits ^= a_bit(half)
                    self.list_del_init(cpu, page)
                    table = page.tables[half] = PageTable(page, half * HALF, HALF, mm)
                    self.commit(page, old)
                    self.check(cpu, page, "page_table_alloc reuse")
            self.spin_unlock(cpu, lock)
            if table is not None:
                self.m.counters["s390.list_hits"] += 1
                return table
        page = self.fresh_page(cpu, mm)
        if page is None:
            return None
        st = page.data
        if mm.pgste:
            # page_table_alloc_pgste-style full page: PTEs below, PGSTEs above, never listed.
            st.bits = AA | PGSTE
            table = page.tables[0] = PageTable(page, 0, self.page_size, mm)
            self.commit(page, None)
            self.m.counters["s390.pgste_pages"] += 1
            return table
        st.bits = a_bit(0)
        table = page.tables[0] = PageTable(page, 0, HALF, mm)
        self.commit(page, None)  # the free upper half: stranded until listed
        # Until list_add, the page has a free half but is on no list (a real kernel window,
        # while this CPU waits for the list lock): invariants allow it only for such pages.
        self.in_transit.add(page)
        lock = self.list_lock(mm)
        yield from self.spin_lock(cpu, lock)
        old = self._split(page)
        self.list_add(cpu, mm, page)
        self.in_transit.discard(page)
        self.commit(page, old)
        self.check(cpu, page, "page_table_alloc fresh")
        self.spin_unlock(cpu, lock)
        self.m.counters["s390.fresh_pages"] += 1
        return table

    # -- page_table_free_rcu -------------------------------------------------------------------
    def pte_free_tlb(self, cpu: CPU, tlb, table: PageTable):
        """``page_table_free_rcu``: under the list lock flip the half A→P and let the design place
        the page on (or off) the list; then the table joins the gather batch. A PGSTE table just
        joins the batch."""
        page = table.page
        st: S390PageState = page.data
        if st.bits & PGSTE:
            self.pgste_to_pending(table)
        else:
            half = table.offset // HALF
            mm = tlb.mm
            lock = self.list_lock(mm)
            yield from self.spin_lock(cpu, lock)
            old = self._split(page)
            self.to_pending(table)
            st.bits ^= a_bit(half) | p_bit(half)
            self.list_after_free_rcu(cpu, mm, page, half)
            self.commit(page, old)
            self.check(cpu, page, "page_table_free_rcu")
            self.spin_unlock(cpu, lock)
        yield from tlb.remove_table(table)

    # -- checking -----------------------------------------------------------------------------
    def audit(self) -> MemoryAccount:
        acc = MemoryAccount()
        keep, self.account = self.account, acc
        try:
            for page in self.held_pages:
                self._apply(self._split(page), +1)
        finally:
            self.account = keep
        return acc

    def common_errors(self, page: Page) -> list[str]:
        """Invariants both designs keep: bits agree with the tables, A excludes pending."""
        st: S390PageState = page.data
        bits = st.bits
        errs: list[str] = []
        if bits & PGSTE:
            if page.on_list is not None:
                errs.append("PGSTE page on pgtable_list")
            return errs
        for half in (0, 1):
            t = page.tables[half]
            a = bits & a_bit(half)
            pend = bits & (p_bit(half) | h_bit(half))
            if a and pend:
                errs.append(f"half {half} both allocated and pending ({st!r})")
            if a and (t is None or t.state not in (LIVE, DETACHED)):
                errs.append(f"half {half} marked allocated but its table is {t!r}")
            if t is not None and not a and not pend:
                errs.append(f"half {half} unmarked but holds {t!r}")
        return errs

    def invariant_errors(self) -> list[str]:
        out: list[str] = []
        for page in self.held_pages:
            out.extend(f"{page!r}: {e}" for e in self.page_errors(page))
        for mm in self.m.mms:
            for page in mm.arch.get("pgtable_list", ()):
                if page.on_list is not mm.arch["pgtable_list"] or not page.allocated:
                    out.append(f"{mm!r}: list holds {page!r} (on_list mismatch or freed)")
        return out
