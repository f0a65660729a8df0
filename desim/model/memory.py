"""Pages, page tables and mms.

``Page`` stands for ``struct page``/``struct ptdesc``: it has exactly ONE ``rcu_head`` (which, as
in the kernel, overlays the ``lru``/``pt_list`` links), a refcount, flags, a design-private
fragment count and an embedded split ``ptl``. Page objects are recycled by pfn, and ``gen``
counts reallocations, so a stale reference to a reused page can be told from a live one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from simpy.events import Event

from desim.model.lock import SpinLock
from desim.records import MEMORY_KINDS

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.machine import Machine

# page flags
PG_ACTIVE = 1 << 0  # powerpc/s390: a table in this page was freed by pte_free_defer
PG_TABLE = 1 << 1  # the page is a page-table page (pagetable_pte_ctor ran)

# page-table states
LIVE = 0  # allocated; attached to its mm or about to be
DETACHED = 1  # cleared from the PMD; a lockless walker may still hold it
PENDING = 2  # waiting for a grace period before it is freed
FREE = 3


class Page:
    __slots__ = (
        "pfn",
        "gen",
        "allocated",
        "kind",
        "refcount",
        "flags",
        "rcu_queued",
        "on_list",
        "frag_refcount",
        "ptl",
        "tables",
        "data",
        "history",
    )

    def __init__(self, pfn: int) -> None:
        self.pfn = pfn
        self.gen = 0
        self.allocated = False
        self.kind = ""
        self.refcount = 0
        self.flags = 0
        self.rcu_queued = False  # the page's single rcu_head is on a callback list
        self.on_list: deque | None = (
            None  # the list (pgtable_list, pool list...) the lru links sit on
        )
        self.frag_refcount = 0  # pt_frag_refcount (powerpc) or design-private count
        self.ptl: SpinLock | None = None
        self.tables: list = []
        self.data: Any = None  # design-private state (s390 AA/PP/HH bits, ...)
        self.history: deque | None = None

    def __repr__(self) -> str:
        return f"page#{self.pfn}.{self.gen}"


class PageTable:
    """A PTE table: ``size`` bytes at ``offset`` within ``page``, owned by ``mm``."""

    __slots__ = ("page", "offset", "size", "mm", "state", "gen", "shmem", "t_freed", "history")

    def __init__(self, page: Page, offset: int, size: int, mm: MM | None) -> None:
        self.page = page
        self.offset = offset
        self.size = size
        self.mm = mm
        self.state = LIVE
        self.gen = page.gen  # the page generation this table lives in
        self.shmem = False  # maps a shmem/file range that khugepaged may retract
        self.t_freed = 0
        self.history: deque | None = None

    def __repr__(self) -> str:
        return f"pt@page#{self.page.pfn}.{self.gen}+{self.offset}"  # stable once the page is reused


class RWSem:
    """``mmap_lock``: many readers (faults) or one writer (munmap, exit); writers preferred."""

    __slots__ = ("env", "readers", "writer", "rq", "wq")

    def __init__(self, env) -> None:
        self.env = env
        self.readers = 0
        self.writer = False
        self.rq: list[Event] = []
        self.wq: deque[Event] = deque()

    def down_read(self) -> Event | None:
        if not self.writer and not self.wq:
            self.readers += 1
            return None
        ev = Event(self.env)
        self.rq.append(ev)
        return ev

    def up_read(self) -> None:
        self.readers -= 1
        if self.readers == 0 and self.wq:
            self.writer = True
            self.wq.popleft().succeed()

    def down_write(self) -> Event | None:
        if not self.writer and not self.readers and not self.wq:
            self.writer = True
            return None
        ev = Event(self.env)
        self.wq.append(ev)
        return ev

    def up_write(self) -> None:
        if self.wq:
            self.wq.popleft().succeed()
            return
        self.writer = False
        if self.rq:
            self.readers += len(self.rq)
            for ev in self.rq:
                ev.succeed()
            self.rq = []


class MM:
    """An address space: its attached PTE tables, locks and design-private state."""

    __slots__ = (
        "id",
        "tables",
        "target_tables",
        "alive",
        "freed",
        "mmap_lock",
        "page_table_lock",
        "context_lock",
        "pmd_lock",
        "pgste",
        "arch",
        "t_created",
        "index",
        "history",
        "shmem_fraction",
    )

    def __init__(self, machine: Machine, mm_id: int, target_tables: int, pgste: bool = False):
        self.id = mm_id
        self.tables: list[PageTable] = []
        self.target_tables = target_tables
        self.alive = True  # still running (faults may reach it)
        self.freed = False  # struct mm_struct returned to its slab
        env = machine.env
        self.mmap_lock = RWSem(env)
        self.page_table_lock = machine.lock("page_table_lock")
        self.context_lock = machine.lock("context.lock")
        self.pmd_lock = machine.lock("pmd")
        self.pgste = pgste  # s390 KVM guest: full-page tables with guest state
        self.arch: dict = {}  # design-private per-mm state (powerpc frag cache, s390 list...)
        self.t_created = env.now
        self.index = -1
        self.history: deque | None = None
        self.shmem_fraction = 0.0  # share of its tables mapping the shmem file

    def __repr__(self) -> str:
        return f"mm#{self.id}"


KINDS = MEMORY_KINDS


def _kind(name: str) -> property:
    """A memory kind whose every increase is checked against its peak (and the totals')."""
    slot = "_" + name
    peak = "peak_" + name

    def get(self) -> int:
        return getattr(self, slot)

    def set(self, v: int) -> None:
        setattr(self, slot, v)
        if v > getattr(self, peak):
            setattr(self, peak, v)
        self._totals()

    return property(get, set)


class MemoryAccount:
    """Bytes of page-table pages, split the way DOMAIN.md section 4 asks.

    live: tables in use; pending: freed tables waiting on a GP; stranded: free but not reusable;
    spare: free and reusable; internal: bytes of a page no table can use. Designs keep these
    up to date at each transition; ``held`` is their sum and must equal the pages they hold.
    ``tlb_batch`` is the mmu_gather batch pages (mm/mmu_gather.c ``tlb_remove_table``: one page
    per batch, held until the batch's grace period ends): page-table overhead the design does
    not hold, kept apart so ``held`` still matches the design's pages.

    Peaks are exact: every assignment compares against the kind's peak, and against the peaks
    of ``held``, of ``total`` (held + tlb_batch) and of ``overhead`` (total - live), so a spike
    between two time-series samples is not missed. ``reset_peaks`` starts them afresh (warm-up).
    """

    __slots__ = (
        "_live",
        "_pending",
        "_stranded",
        "_spare",
        "_internal",
        "_tlb_batch",
        "peak_live",
        "peak_pending",
        "peak_stranded",
        "peak_spare",
        "peak_internal",
        "peak_tlb_batch",
        "peak_held",
        "peak_total",
        "peak_overhead",
    )

    live = _kind("live")
    pending = _kind("pending")
    stranded = _kind("stranded")
    spare = _kind("spare")
    internal = _kind("internal")
    tlb_batch = _kind("tlb_batch")

    def __init__(self) -> None:
        self._live = self._pending = self._stranded = self._spare = self._internal = 0
        self._tlb_batch = 0
        self.peak_held: int
        self.peak_total: int
        self.peak_overhead: int
        self.reset_peaks()

    def _totals(self) -> None:
        held = self._live + self._pending + self._stranded + self._spare + self._internal
        if held > self.peak_held:
            self.peak_held = held
        total = held + self._tlb_batch
        if total > self.peak_total:
            self.peak_total = total
        if total - self._live > self.peak_overhead:
            self.peak_overhead = total - self._live

    def reset_peaks(self) -> None:
        """Peaks from now on start at the current values (the end of warm-up)."""
        self.peak_live, self.peak_pending = self._live, self._pending
        self.peak_stranded, self.peak_spare = self._stranded, self._spare
        self.peak_internal, self.peak_tlb_batch = self._internal, self._tlb_batch
        self.peak_held = self.peak_total = self.peak_overhead = 0
        self._totals()

    @property
    def held(self) -> int:
        return self._live + self._pending + self._stranded + self._spare + self._internal

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return self._live, self._pending, self._stranded, self._spare, self._internal

    def peaks(self) -> dict[str, int]:
        """Exact peak bytes of each kind and of held, total and overhead."""
        return {
            k: getattr(self, "peak_" + k)
            for k in (*KINDS, "tlb_batch", "held", "total", "overhead")
        }


class PageAllocator:
    """The buddy allocator, reduced to what matters here: counts, a limit, and failures.

    ``limit`` caps pages held at once; ``fail_probability`` makes non-blocking allocations
    (GFP_NOWAIT, e.g. the mmu_gather batch page) fail at random, for memory-pressure studies.
    """

    def __init__(self, machine: Machine, page_size: int, limit: int | None) -> None:
        self.machine = machine
        self.page_size = page_size
        self.limit = limit
        self.free_pages: list[Page] = []
        self.next_pfn = 0
        self.held = 0
        self.held_by_kind: dict[str, int] = {}
        self.allocated = 0
        self.freed = 0
        self.failed = 0
        self.nowait_fail: Callable[[], bool] | None = (
            None  # callable () -> bool set by a memory-pressure workload
        )
        self.safety = machine.safety
        self.alloc_cost = machine.draw.page_alloc
        # clear_page over the whole page: page_zero is per 4 KiB
        self.zero_cost = machine.costs.page_zero * (page_size // 4096)

    def alloc(self, cpu: CPU, kind: str, nowait: bool = False, zero: bool = False) -> Page | None:
        """A page of ``kind``; ``zero``: allocated with ``__GFP_ZERO`` (page tables), which
        costs ``clear_page`` of the whole page, 16 times more for 64 KiB than for 4 KiB."""
        if self.limit is not None and self.held >= self.limit:
            self.failed += 1
            return None
        if nowait and self.nowait_fail is not None and self.nowait_fail():
            self.failed += 1
            return None
        if self.free_pages:
            page = self.free_pages.pop()
        else:
            page = Page(self.next_pfn)
            self.next_pfn += 1
        page.gen += 1
        page.allocated = True
        page.kind = kind
        page.refcount = 1
        page.flags = 0
        page.frag_refcount = 0
        page.data = None
        page.tables = []
        self.held += 1
        self.held_by_kind[kind] = self.held_by_kind.get(kind, 0) + 1
        self.allocated += 1
        cpu.charge(self.alloc_cost() + (self.zero_cost if zero else 0))
        if self.safety is not None:
            self.safety.page_alloc(cpu, page)
        return page

    def free(self, cpu: CPU, page: Page) -> None:
        if not page.allocated:
            if self.safety is not None:
                self.safety.violation("double_free", cpu, (page,), f"{page!r} freed twice")
            return
        if self.safety is not None:
            self.safety.page_free(cpu, page)
        page.allocated = False
        page.ptl = None
        self.held -= 1
        self.held_by_kind[page.kind] -= 1
        self.freed += 1
        cpu.charge(self.machine.costs.page_free)
        self.free_pages.append(page)

    def pages_held(self, kind: str) -> int:
        return self.held_by_kind.get(kind, 0)
