"""``percpu-pool``: Jason Gunthorpe's global per-CPU fragment pool (seed 002, June 2023; not merged).

Proposed in the s390 ``pte_free_defer`` thread of Hugh Dickins' "mm: free retracted page table
by RCU" series (v6.6) as an alternative to per-mm fragment caches: PTE-table fragments are carved
from pages into a pool shared by all mms ("a special kind of kmemcache"), and freed fragments are
threaded with naked next pointers onto a *waterfall* of per-CPU lists

    RCU-free next cycle  →  RCU-free this cycle  →  free

advanced by ONE ``rcu_head`` and ONE ``call_rcu`` per CPU: its callback moves "this cycle" to
"free", "next cycle" to "this cycle", and queues itself again if anything is left waiting.
Nothing in the page (``struct ptdesc``) holds an ``rcu_head``, a callback pointer or an mm
back-reference, so callbacks never reach a freed mm and no page's single ``rcu_head`` is ever
shared. The price: a per-CPU pool lock (lock class ``percpu_pool``) on the alloc and free paths,
and page-table pages are no longer charged to the memcg of the mm using them (Hugh's objection:
the pool is global, so ``pagetable_pte_ctor``'s per-memcg/meminfo accounting is lost; desim
does not model memcg, so this costs nothing here and is noted only).

Decisions the proposal leaves open, made here (each a documented modelling choice):

* **Which list a free joins.** ``pte_free_defer`` puts the fragment on the *freeing* CPU's
  waterfall. If that CPU's ``rcu_head`` is idle the fragment joins "this cycle" and the head is
  queued; if it is already queued the GP it waits for may have begun before this free, so the
  fragment joins "next cycle" and waits for the following GP (up to two GPs in all).
* **Where a free fragment lives.** Each page has a *home* CPU (the pool that carved it) and its
  free fragments always go to the home CPU's free list (SLUB returns an object to its own slab
  in the same spirit). Fragments freed on another CPU graduate to their home list under the
  home CPU's lock, one acquisition per home CPU per callback: that is the cross-CPU traffic the
  "global per-cpu lock" costs. The callback never holds two pool locks at once.
* **When a page goes back to the page allocator.** Jason compares the pool to a kmemcache, and
  a kmemcache returns a slab once every object in it is free. A per-page count
  (``frag_refcount``: fragments handed out or waiting on RCU) is kept; when it drops to zero
  every fragment of the page is on its home free list, the fragments are unlinked (O(1) each:
  the page's space where the ``rcu_head`` was holds two pointers, enough for a doubly linked
  list) and the page is freed, unless the home CPU keeps fewer than ``keep_empty`` wholly free
  pages (SLUB's ``min_partial``, the page allocator's per-CPU ``high``). Default 0: a page
  returns the moment it is entirely free, so nothing is held that no table uses.
* **The mmu_gather path.** With ``MMU_GATHER_RCU_TABLE_FREE``, ``__tlb_remove_table`` runs after
  the batch's GP (or after ``tlb_remove_table_sync_one``'s IPIs when the batch page could not be
  had, where the unmapper's mmap_lock already kept faults out); either way no walker can still
  hold the table, so ``tlb_table_free`` puts the fragment straight on its home free list:
  running it through the waterfall would wait a second GP for nothing.
* **Allocation.** From the CPU's own free list first, most recently freed first (cache-hot);
  else the next never-used fragment of the CPU's carving page, in address order; else a new
  page (allocated with the pool lock dropped: ``GFP_KERNEL`` may sleep).

Memory split, kept at every transition and recomputed by ``audit``: live = fragments handed out;
pending = fragments waiting on a GP (on the waterfall or in a gather batch); spare = fragments
on free lists plus the never-used tail of carving pages; stranded = internal = 0.

Safety: besides the machine's checker, with safety on every fragment freed by
``pte_free_defer`` carries the RCU cookie of its free (``get_state_synchronize_rcu``); reaching
a free list before that GP completed is reported as an invariant violation. (The machine's
checker cannot see a fragment re-used while its page stays allocated.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field
from simpy.events import Timeout

from desim.allocators import ALLOCATORS
from desim.allocators.base import Allocator
from desim.fields import MAX_PAGES, Duration, Int, Size
from desim.model.hooks import traced_as
from desim.model.memory import DETACHED, FREE, LIVE, PENDING, MemoryAccount, PageTable

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.memory import MM, Page


class PercpuPoolParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    fragment_size: Size = Field(
        4096,
        description="bytes of one PTE table (4KiB: 512 x 8 B, 16 per 64KiB page as "
        "powerpc hash64k; 256B as radix64k; 2KiB as s390); a power of two <= the page size",
    )
    keep_empty: Int = Field(
        0, ge=0, le=MAX_PAGES, description="wholly free pages each CPU keeps for reuse"
    )
    list_op: Duration = Field(10, description="CPU time to link or unlink one fragment")


class _Pool:
    """One CPU's pool: its lock, the waterfall, the free list, the carving page, the rcu_head."""

    __slots__ = ("cpu", "lock", "nxt", "cur", "free", "carve", "fresh", "armed", "empty")

    def __init__(self, cpu: int, lock) -> None:
        self.cpu = cpu
        self.lock = lock
        self.nxt: list[PageTable] = []  # RCU-free next cycle
        self.cur: list[PageTable] = []  # RCU-free this cycle (the queued head's GP covers them)
        self.free: dict[PageTable, None] = {}  # insertion-ordered: popitem() is LIFO
        self.carve: Page | None = None  # the page new fragments are carved from
        self.fresh: Page | None = None  # a new page on its way in (allocated, lock not yet had)
        self.armed = False  # the CPU's one rcu_head is queued
        self.empty = 0  # home pages kept with every fragment free


class _PoolPage:
    """``page.data`` of a pool page: its home CPU and how many fragments were carved.

    ``page.tables[i]`` is the table last placed in fragment ``i`` (live, pending or free).
    """

    __slots__ = ("home", "carved")

    def __init__(self, home: int) -> None:
        self.home = home
        self.carved = 0


@ALLOCATORS.register("percpu-pool")
class PercpuPool(Allocator):
    counters = (
        "percpu_pool.call_rcu",
        "percpu_pool.pages_carved",
        "percpu_pool.pages_returned",
        "percpu_pool.reused",
    )
    arch = "arm64"  # a proposal for every MMU_GATHER_RCU_TABLE_FREE arch with fragments
    Params = PercpuPoolParams
    summary = "Jason's global per-CPU fragment pool: next/this-cycle/free waterfall, 1 call_rcu/CPU"

    @classmethod
    def check_config(cls, params, config) -> None:
        super().check_config(params, config)
        fs = params.fragment_size
        if fs & (fs - 1) or fs < 64 or fs > config.machine.page_size:
            raise ValueError(
                f"allocator.params.fragment_size: {fs} must be a power of two from "
                f"64 bytes up to the page size {config.machine.page_size}"
            )

    def __init__(self, machine, params: PercpuPoolParams) -> None:
        super().__init__(machine, params)
        self.fs = params.fragment_size
        self.per_page = self.page_size // self.fs
        self.keep_empty = params.keep_empty
        self.list_op = params.list_op
        self.pools = [_Pool(c.id, machine.lock("percpu_pool")) for c in machine.cpus]
        self.cookies: dict[PageTable, int] | None = {} if self.safety is not None else None
        self.call_rcus = 0

    # -- small helpers --------------------------------------------------------------------------
    @staticmethod
    def _lock(lock, cpu: CPU):
        return cpu.spin_lock(lock)

    def _softirq_work(self, cpu: CPU, ns: int):
        """CPU time spent in the RCU callback (softirq), stolen from whoever runs on ``cpu``."""
        yield Timeout(self.env, ns)
        cpu.steal(ns)
        cpu.softirq_ns += ns

    def _arm(self, cpu: CPU, pool: _Pool) -> None:
        """``call_rcu`` on the CPU's single rcu_head."""
        if pool.armed and self.safety is not None:
            self.safety.invariant(cpu, (), f"percpu_pool{pool.cpu}: rcu_head queued twice")
        pool.armed = True
        self.call_rcus += 1
        self.m.counters["percpu_pool.call_rcu"] += 1
        cpu.charge(self.costs.call_rcu)
        self.m.rcu.call_rcu(cpu, self._advance, pool)

    # -- allocation -----------------------------------------------------------------------------
    def _take(self, pool: _Pool, mm: MM, carve_only: bool = False) -> PageTable | None:
        """Hand out a fragment from ``pool`` (its lock held): free list first, then carving."""
        page: Page | None
        if pool.free and not carve_only:
            old, _ = pool.free.popitem()
            page = old.page
            idx = old.offset // self.fs
            self.m.counters["percpu_pool.reused"] += 1
        else:
            page = pool.carve
            if page is None:
                return None
            pp = page.data
            idx = pp.carved
            pp.carved += 1
            if pp.carved == self.per_page:
                pool.carve = None
        if page.frag_refcount == 0:
            pool.empty -= 1
        page.frag_refcount += 1
        table = PageTable(page, idx * self.fs, self.fs, mm)
        if idx < len(page.tables):
            page.tables[idx] = table
        else:
            page.tables.append(table)
        acc = self.account
        acc.spare -= self.fs
        acc.live += self.fs
        return table

    def pte_alloc_one(self, cpu: CPU, mm: MM):
        pool = self.pools[cpu.id]
        lock = pool.lock
        yield from self._lock(lock, cpu)
        table = self._take(pool, mm)
        if table is None:
            lock.release(cpu)
            page = self.new_table_page(cpu)  # with the lock dropped: the allocation may sleep
            if page is None:
                return None
            page.data = _PoolPage(cpu.id)
            self.account.spare += self.page_size
            pool.fresh = page
            yield cpu.compute(0)  # the page allocation's time, spent outside the lock
            yield from self._lock(lock, cpu)
            pool.fresh = None
            if pool.carve is None:
                pool.carve = page
                pool.empty += 1  # wholly free until _take carves its first fragment
                self.m.counters["percpu_pool.pages_carved"] += 1
                table = self._take(pool, mm, carve_only=True)
            else:  # another path installed a carving page meanwhile: ours is not needed
                self.account.spare -= self.page_size
                self.release_table_page(cpu, page)
                table = self._take(pool, mm)
        yield cpu.compute(self.list_op)
        lock.release(cpu)
        return table

    # -- the free list --------------------------------------------------------------------------
    def _to_free(self, cpu: CPU, pool: _Pool, table: PageTable) -> None:
        """``table``'s fragment joins its home ``pool``'s free list (that pool's lock held)."""
        was = table.state
        if was == PENDING:
            if self.cookies is not None:
                cookie = self.cookies.pop(table, 0)
                if cookie > self.m.rcu.completed:
                    self.safety.invariant(  # type: ignore[union-attr]  # cookies only with safety
                        cpu,
                        (table,),
                        f"{table!r} made reusable before the "
                        f"grace period it needs (GP {cookie}) completed",
                    )
            self.reusable(table)
        self.table_freed(cpu, table)
        acc = self.account
        if was == PENDING:
            acc.pending -= self.fs
        else:
            acc.live -= self.fs
        acc.spare += self.fs
        pool.free[table] = None
        page = table.page
        page.frag_refcount -= 1
        if page.frag_refcount == 0:
            if pool.empty < self.keep_empty:
                pool.empty += 1
            else:
                self._release_page(cpu, pool, page)

    def _release_page(self, cpu: CPU, pool: _Pool, page: Page) -> None:
        """Every fragment of ``page`` is free: unlink them all and free the page."""
        free = pool.free
        for t in page.tables:
            del free[t]
        cpu.steal(self.list_op * len(page.tables))
        if pool.carve is page:
            pool.carve = None
        self.account.spare -= self.page_size
        self.m.counters["percpu_pool.pages_returned"] += 1
        self.release_table_page(cpu, page)

    def _free_now(self, cpu: CPU, table: PageTable, softirq: bool):
        """Put one fragment straight on its home free list (no grace period needed)."""
        pool = self.pools[table.page.data.home]
        yield from self._lock(pool.lock, cpu)
        self._to_free(cpu, pool, table)
        if softirq:
            yield from self._softirq_work(cpu, self.list_op)
        else:
            yield cpu.compute(self.list_op)
        pool.lock.release(cpu)

    # -- the four ways a table is freed ---------------------------------------------------------
    def pte_free(self, cpu: CPU, mm: MM, table: PageTable):
        """A table no walker saw (lost populate race): free at once."""
        yield from self._free_now(cpu, table, softirq=False)

    def _to_pending(self, table: PageTable) -> None:
        table.state = PENDING
        table.t_freed = self.env.now
        self.account.live -= self.fs
        self.account.pending += self.fs

    def pte_free_tlb(self, cpu: CPU, tlb, table: PageTable):
        self._to_pending(table)
        yield from tlb.remove_table(table)

    def tlb_table_free(self, cpu: CPU, table: PageTable):
        """After the gather's GP (or its IPIs): no walker holds it, straight to the free list."""
        return self._free_now(cpu, table, softirq=True)

    def pte_free_defer(self, cpu: CPU, mm: MM, table: PageTable):
        pool = self.pools[cpu.id]
        lock = pool.lock
        yield from self._lock(lock, cpu)
        self._to_pending(table)
        if self.cookies is not None:
            rcu = self.m.rcu
            self.cookies[table] = rcu.completed + (2 if rcu.gp_active else 1)
        if pool.armed:
            pool.nxt.append(table)  # the queued head's GP may predate this free
        else:
            pool.cur.append(table)
            self._arm(cpu, pool)
        yield cpu.compute(self.list_op)
        lock.release(cpu)

    # -- the waterfall callback -----------------------------------------------------------------
    @traced_as("percpu pool: advance cycle")
    def _advance(self, cpu: CPU, pool: _Pool):
        return self._advance_gen(cpu, pool)

    def _advance_gen(self, cpu: CPU, pool: _Pool):
        """The one callback per CPU: this cycle → free, next cycle → this cycle, re-arm."""
        lock = pool.lock
        yield from self._lock(lock, cpu)
        done = pool.cur
        pool.cur = pool.nxt
        pool.nxt = []
        pool.armed = False
        if pool.cur:
            self._arm(cpu, pool)
        yield from self._softirq_work(cpu, 2 * self.list_op)  # two list splices
        lock.release(cpu)
        by_home: dict[int, list[PageTable]] = {}
        for t in done:
            by_home.setdefault(t.page.data.home, []).append(t)
        for home, tables in sorted(by_home.items()):
            hp = self.pools[home]
            yield from self._lock(hp.lock, cpu)
            for t in tables:
                self._to_free(cpu, hp, t)
            yield from self._softirq_work(cpu, self.list_op * len(tables))
            hp.lock.release(cpu)

    # -- checking -------------------------------------------------------------------------------
    def audit(self) -> MemoryAccount:
        acc = MemoryAccount()
        fs = self.fs
        for page in self.held_pages:
            pp = page.data
            for t in page.tables:
                if t.state == LIVE or t.state == DETACHED:
                    acc.live += fs
                elif t.state == PENDING:
                    acc.pending += fs
            acc.spare += (self.per_page - pp.carved) * fs
        for pool in self.pools:
            acc.spare += len(pool.free) * fs
        return acc

    def invariant_errors(self) -> list[str]:
        errs: list[str] = []
        seen: dict[PageTable, str] = {}
        for pool in self.pools:
            name = f"pool{pool.cpu}"
            if pool.armed != bool(pool.cur):
                errs.append(f"{name}: rcu_head armed={pool.armed} with {len(pool.cur)} this-cycle")
            if pool.nxt and not pool.armed:
                errs.append(f"{name}: next-cycle fragments wait with no rcu_head queued")
            for lname, items, want in (
                ("next", pool.nxt, PENDING),
                ("this", pool.cur, PENDING),
                ("free", pool.free, FREE),
            ):
                for t in items:
                    where = f"{name}.{lname}"
                    if t in seen:
                        errs.append(f"{t!r} on {seen[t]} and {where}")
                    seen[t] = where
                    if t.state != want:
                        errs.append(f"{t!r} on {where} in state {t.state}")
                    if t.page not in self.held_pages:
                        errs.append(f"{t!r} on {where}: its page is not held")
                    elif lname == "free" and t.page.data.home != pool.cpu:
                        errs.append(f"{t!r} on {where}: home is pool{t.page.data.home}")
            if pool.carve is not None and pool.carve.data.carved >= self.per_page:
                errs.append(f"{name}: carving page {pool.carve!r} has nothing left to carve")
            if not 0 <= pool.empty <= self.keep_empty:
                errs.append(f"{name}: {pool.empty} empty pages kept (limit {self.keep_empty})")
        empty = [0] * len(self.pools)
        for page in self.held_pages:
            pp = page.data
            if not page.allocated:
                errs.append(f"{page!r} held but freed")
            busy = 0
            if len(page.tables) != pp.carved:
                errs.append(f"{page!r}: {len(page.tables)} tables, {pp.carved} carved")
            for i, t in enumerate(page.tables):
                if t.page is not page or t.offset != i * self.fs:
                    errs.append(f"{page!r} slot {i} holds {t!r}")
                    continue
                if t.state != FREE:
                    busy += 1
                elif seen.get(t) != f"pool{pp.home}.free":
                    errs.append(f"{t!r} is free but not on pool{pp.home}'s free list")
            if busy != page.frag_refcount:
                errs.append(f"{page!r} frag_refcount {page.frag_refcount}, {busy} fragments busy")
            if busy == 0 and page is not self.pools[pp.home].fresh:
                empty[pp.home] += 1
        for pool, n in zip(self.pools, empty, strict=True):
            if n != pool.empty:
                errs.append(f"pool{pool.cpu}: counts {pool.empty} empty pages, holds {n}")
        return errs
