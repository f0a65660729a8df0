"""What every page-table allocator provides, and the helpers they share.

The operations mirror the kernel hooks a design implements. Each is a generator run by a task
that owns ``cpu``; it spends CPU time with ``yield cpu.compute(ns)`` (or ``cpu.charge(ns)``,
paid later) and takes locks with ``cpu.spin_lock`` (which pays what is owed first):

* ``pte_alloc_one(cpu, mm)`` → a ``PageTable`` or ``None`` when memory runs out;
* ``pte_free(cpu, mm, table)``: free a table no walker can have seen (a lost populate race);
* ``pte_free_tlb(cpu, tlb, table)``: the mmu_gather path of munmap and exit;
* ``tlb_table_free(cpu, table)``: ``__tlb_remove_table``, after the gather's grace period (or at
  once after an IPI); a plain call that may return a generator when it must take a lock;
* ``pte_free_defer(cpu, mm, table)``: free a retracted table after a grace period;
* ``mm_teardown(cpu, mm)``: what the design does to an exiting mm once its tables are gone;
* ``mm_free(cpu, mm, task)``: how the mm_struct itself is freed (designs whose RCU callbacks
  reach back to the mm choose a lifetime rule here).

Memory is kept in ``self.account`` (live / pending / stranded / spare / internal bytes), updated
at every transition; ``audit()`` recomputes the same split from the pages themselves so tests
can check the two agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict

from desim.model.memory import FREE, PG_TABLE, MemoryAccount, Page, PageTable

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.machine import Machine
    from desim.model.memory import MM
    from desim.model.mmu_gather import MMUGather


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Allocator:
    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    summary: ClassVar[str] = ""
    counters: ClassVar[tuple[str, ...]] = ()  # the design's own counters (desim.records)
    # Safety violation kinds the design, as the kernel merged it, is known to commit.
    known_violations: ClassVar[tuple[str, ...]] = ()
    # The machine (desim.model.arch) a config with no machine.arch models for this design.
    arch: ClassVar[str] = "x86-64"
    # The machine-wide mm_lifetime rules the design implements itself (rule -> its own), and
    # the one in force (desim.model.mm_lifetime sets it; s390-hh has them).
    LIFETIMES: ClassVar[dict[str, str]] = {}
    lifetime: str | None = None

    @classmethod
    def default_arch(cls, params: BaseModel) -> str:
        return cls.arch

    def __init__(self, machine: Machine, params: BaseModel) -> None:
        self.m = machine
        self.params = params
        self.env = machine.env
        self.costs = machine.costs
        self.safety = machine.safety
        self.page_size = machine.config.machine.page_size
        self.account = MemoryAccount()
        # The pages the design holds, in the order it took them (a dict as an ordered set): what
        # iterates them (audits, invariant reports) runs in the same order in every process,
        # which a set of objects hashed by address would not.
        self.held_pages: dict[Page, None] = {}

    # -- what the design needs of the machine, checked when a config is loaded -----------------
    @classmethod
    def page_sizes(cls, params: BaseModel) -> tuple[int, ...] | None:
        """The base page sizes the design runs on (None: any)."""
        return None

    @classmethod
    def check_config(cls, params: BaseModel, config) -> None:
        """Refuse a config the design cannot run: a ``ValueError`` whose message starts with
        the dotted field to blame. ``desim.config.Config`` calls it at load time, so
        ``desim validate`` and ``desim sweep --dry-run`` name the field without building a
        machine. Designs with more needs extend it."""
        sizes = cls.page_sizes(params)
        have = config.machine.page_size
        if sizes is not None and have not in sizes:
            want = " or ".join(f"{s // 1024}KiB" for s in sizes)
            what = " ".join([cls.name, *cls.geometry(params)])
            raise ValueError(f"machine.page_size: {what} needs {want} pages, got {have // 1024}KiB")

    @classmethod
    def geometry(cls, params: BaseModel) -> tuple[str, ...]:
        """Words naming the table geometry behind ``page_sizes``, for error messages."""
        return ()

    # -- helpers for designs ------------------------------------------------------------------
    def new_table_page(self, cpu: CPU) -> Page | None:
        """Allocate a page and construct it as a page-table page (ptl initialised)."""
        page = self.m.pages.alloc(cpu, "pgtable", zero=True)
        if page is None:
            return None
        page.flags |= PG_TABLE
        page.ptl = self.m.lock("ptl")
        cpu.charge(self.costs.table_ctor)
        self.held_pages[page] = None
        return page

    def release_table_page(self, cpu: CPU, page: Page) -> None:
        """Destruct a page-table page and give it back to the page allocator."""
        self.held_pages.pop(page, None)
        cpu.charge(self.costs.table_ctor)
        self.m.pages.free(cpu, page)

    def table_freed(self, cpu: CPU, table: PageTable) -> None:
        """Mark ``table`` free (checked for double frees)."""
        if self.safety is not None:
            self.safety.table_free(cpu, table)
        table.state = FREE

    def reusable(self, table: PageTable) -> None:
        """The memory of a freed ``table`` can serve a new allocation from now on."""
        self.m.record("free_to_reuse", self.env.now - table.t_freed)

    # -- the operations ---------------------------------------------------------------------
    def pte_alloc_one(self, cpu: CPU, mm: MM):
        raise NotImplementedError

    def pte_free(self, cpu: CPU, mm: MM, table: PageTable):
        raise NotImplementedError

    def pte_free_tlb(self, cpu: CPU, tlb: MMUGather, table: PageTable):
        raise NotImplementedError

    def tlb_table_free(self, cpu: CPU, table: PageTable):
        raise NotImplementedError

    def pte_free_defer(self, cpu: CPU, mm: MM, table: PageTable):
        raise NotImplementedError

    def mm_teardown(self, cpu: CPU, mm: MM):
        return
        yield

    def mm_free(self, cpu: CPU, mm: MM, task: object):
        self.m.free_mm(cpu, mm)
        return
        yield

    # -- checking -------------------------------------------------------------------------------
    def audit(self) -> MemoryAccount:
        """Recompute the memory split from the pages held (slow; for tests and validation)."""
        raise NotImplementedError

    def invariant_errors(self) -> list[str]:
        """Design invariants that do not hold right now (empty when all is well)."""
        return []
