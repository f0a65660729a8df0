"""``unsafe-shared-rcuhead``: fragments share a page, and each deferral queues its ONE rcu_head.

A minimal powerpc-like fragment allocator (arch/powerpc/mm/pgtable-frag.c, 6.6): ``fragments``
tables per page, handed out in order from a per-mm cached page under ``mm->page_table_lock``;
a freed fragment is never reused and the page goes back when its last fragment is freed. What
makes it a control: ``pte_free_defer`` of each fragment calls ``call_rcu`` on the page's single
``rcu_head``. When two fragments of one page are retracted within one grace period the same
``rcu_head`` is queued twice, corrupting the callback list in a real kernel: the reason the
merged powerpc code marks the page instead and defers only the page's final free, and the
reason Hugh's v2 counted deferrals. The safety checker must catch it (rcu_head_reuse).

The free paths are ``generic``'s: ``pte_free_defer`` is generic's ``call_rcu`` on the table's
page, which is sound only while a page holds one table. What this design adds is the geometry:
a freed fragment is retired as generic retires a table, but the page goes back only with its
last fragment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from desim.allocators import ALLOCATORS
from desim.allocators.generic import Generic, GenericParams
from desim.fields import Int
from desim.model.hooks import traced_as
from desim.model.memory import DETACHED, LIVE, PENDING, MemoryAccount, PageTable

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.memory import MM, Page


class SharedParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    fragments: Int = Field(4, ge=2, le=256, description="page tables per page")


class _Frag:
    """Per-page state: the mm caching it (or None), fragments handed out, fragments freed."""

    __slots__ = ("cached_by", "handed", "freed")

    def __init__(self, mm: MM) -> None:
        self.cached_by: MM | None = mm
        self.handed = 0
        self.freed = 0


@ALLOCATORS.register("unsafe-shared-rcuhead")
class UnsafeSharedRcuHead(Generic):
    arch = "powerpc-hash"
    Params = SharedParams
    summary = "UNSAFE control: fragments share a page; each deferral queues the page's one rcu_head"

    @classmethod
    def check_config(cls, params, config) -> None:
        if config.machine.page_size % params.fragments:
            raise ValueError(
                f"allocator.params.fragments: {params.fragments} does not divide "
                f"the page size {config.machine.page_size}"
            )

    def __init__(self, machine, params: SharedParams) -> None:
        page_size = machine.config.machine.page_size
        n = params.fragments
        super().__init__(machine, GenericParams(table_size=page_size // n))
        self.params = params
        self.n = n
        self.fs = self.table_size  # one fragment

    # -- allocation ---------------------------------------------------------------------------
    def pte_alloc_one(self, cpu: CPU, mm: MM):
        lock = mm.page_table_lock
        yield from cpu.spin_lock(lock)
        page = mm.arch.get("frag_page")
        acc = self.account
        if page is None:
            page = self.new_table_page(cpu)
            if page is None:
                lock.release(cpu)
                return None
            page.data = _Frag(mm)
            acc.spare += self.page_size
            mm.arch["frag_page"] = page
        st: _Frag = page.data
        table = PageTable(page, st.handed * self.fs, self.fs, mm)
        page.tables.append(table)
        st.handed += 1
        page.frag_refcount += 1
        acc.spare -= self.fs
        acc.live += self.fs
        if st.handed == self.n:
            st.cached_by = None
            mm.arch["frag_page"] = None
        lock.release(cpu)
        return table

    # -- freeing: generic's paths, which end in _release ---------------------------------------
    @traced_as("pte_free_now (shared rcu_head)")
    def _free_fragment(self, cpu: CPU, table: PageTable) -> None:
        """``pte_fragment_free``: the page goes back with its last fragment."""
        self._retire(cpu, table)
        self.account.stranded += self.fs  # a freed fragment is never handed out again
        page = table.page
        st: _Frag = page.data
        st.freed += 1
        page.frag_refcount -= 1
        if page.frag_refcount == 0 and st.cached_by is None:
            self._free_page(cpu, page)

    _release = _free_fragment  # what generic's pte_free, pte_free_tlb, tlb_table_free call

    def _free_page(self, cpu: CPU, page: Page) -> None:
        st: _Frag = page.data
        self.account.stranded -= (st.freed + self.n - st.handed) * self.fs
        self.release_table_page(cpu, page)

    def pte_free_defer(self, cpu: CPU, mm: MM, table: PageTable):
        """Generic's, restated to show the bug (and to name the fragment callback in traces)."""
        self._to_pending(table)
        # The bug: one rcu_head per page, queued once per fragment.
        self.m.page_call_rcu(cpu, table.page, self._free_fragment, table)
        return
        yield

    def mm_teardown(self, cpu: CPU, mm: MM):
        """``pte_frag_destroy``: the cached page's untouched fragments are dropped."""
        page = mm.arch.get("frag_page")
        if page is None:
            return
        mm.arch["frag_page"] = None
        st: _Frag = page.data
        st.cached_by = None
        tail = (self.n - st.handed) * self.fs
        self.account.spare -= tail
        self.account.stranded += tail
        if page.frag_refcount == 0:
            self._free_page(cpu, page)
        return
        yield

    def audit(self) -> MemoryAccount:
        acc = MemoryAccount()
        for page in self.held_pages:
            st: _Frag = page.data
            for t in page.tables:
                if t.state in (LIVE, DETACHED):
                    acc.live += t.size
                elif t.state == PENDING:
                    acc.pending += t.size
            acc.stranded += st.freed * self.fs
            tail = (self.n - st.handed) * self.fs
            if st.cached_by is None:
                acc.stranded += tail
            else:
                acc.spare += tail
        return acc
