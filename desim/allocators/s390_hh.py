"""``s390-hh``: Hugh Dickins' v2 of "s390: add pte_free_defer() for pgtables sharing page".

Posted 20 June 2023 (v2 07/12), not merged. Its rule: a page is NOT on ``pgtable_list`` while
either half is pending free (so the ``rcu_head``, which overlays the list links, is free to use);
``__tlb_remove_table`` later either relinks the page (other half allocated) or frees it. New
bits ``HH`` (bit 2/3) mark a half pending through the page's single ``rcu_head``:

* ``pte_free_defer``: under the list lock flip the half A→H (and, as posted, P on as well);
  unlink the page if the other half is free and not pending; then queue the ``rcu_head`` unless
  the other half already holds it (its H bit is set).
* the callback ``pte_free_half``: clear H (as posted), or flip H→P (Gordeev's rule), run
  ``__tlb_remove_table`` for the half, and re-queue the ``rcu_head`` for the other half if its
  H bit came up meanwhile. A page thus takes one or two ``call_rcu``\\ s, never two at once.
* ``__tlb_remove_table``: if the other half is allocated, the page goes back on the list of
  ``page->pt_mm`` (set by ``page_table_alloc``): the callback reaches back to the mm. v2 takes
  a GLOBAL ``mm_pgtable_list_lock`` for that (lock class ``s390_global_list``), rechecking A
  under it, because nothing keeps the mm alive; ``list_lock: per_mm`` models the follow-up it
  announced (``pt_mm->context.lock``), which needs an mm-lifetime rule.
* ``page_table_free`` no longer needs the 6.6 two-step P dance; a freed page goes back at once
  (no PageActive here: deferred halves wait in their own callback).

``one_bit_at_a_time`` (Alexander Gordeev, reply to v2 07/12, seed 000): only single flips
A→P (free, free_rcu), A→H (defer), H→P (``pte_free_half``), so each half is in exactly one of
A, H, P (or none). The checker tests that rule on EVERY transition; with the rule off, v2's
defer sets H and P together and each such transition is reported as an ``invariant`` break
(the states are otherwise consistent: the structural invariants hold either way).

``mm_lifetime``: how ``mm_free`` keeps the mm alive for callbacks that may reach it:
``synchronize_rcu`` (the exit path sleeps a full grace period), ``rcu_barrier`` (waits for
every queued callback, then ``call_rcu`` frees the mm), ``mmdrop_async`` (v1: each deferral
holds an ``mmgrab`` reference that its callback drops with ``mmdrop_async``; the last drop
frees the mm from a kworker ``kworker_delay`` later; exit itself pays nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field
from simpy.events import Timeout

from desim.allocators import ALLOCATORS
from desim.allocators.s390_base import (
    HALF,
    PGSTE,
    HalfPageAllocator,
    S390PageState,
    a_bit,
    h_bit,
    p_bit,
)
from desim.fields import Duration
from desim.model.hooks import thread_kind, traced_as

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.memory import MM, Page, PageTable

KWORKER = thread_kind("kworker (mmdrop_async)")


class S390HHParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    one_bit_at_a_time: bool = Field(
        True,
        description="Gordeev's rule: each half in exactly one of A, H, P (false: v2 as posted)",
    )
    list_lock: Literal["global", "per_mm"] = Field(
        "global", description="global: v2's mm_pgtable_list_lock; per_mm: pt_mm->context.lock"
    )
    mm_lifetime: Literal["synchronize_rcu", "rcu_barrier", "mmdrop_async"] = Field(
        "mmdrop_async", description="how mm_free keeps the mm alive for RCU callbacks"
    )
    kworker_delay: Duration = Field(
        20_000, description="mmdrop_async: schedule_work until the kworker frees the mm"
    )


@traced_as("__mmdrop")
def _free_mm_cb(cpu: CPU, arg) -> None:
    machine, mm = arg
    machine.free_mm(cpu, mm)


@ALLOCATORS.register("s390-hh")
class S390HH(HalfPageAllocator):
    counters = (
        "s390.defer_call_rcu",
        "s390.defer_rides_other",
        "s390.mmdrop_async",
        "s390.rcu_requeue",
        "s390.relinked",
    )
    Params = S390HHParams
    params: S390HHParams
    summary = "s390 v2: HH bits, global list lock, pt_mm; Gordeev's rule; mm-lifetime choices"
    # The machine-wide mm_lifetime rules this design implements itself (desim.model.mm_lifetime
    # sets ``lifetime`` from them; under any other rule the design holds no mm references).
    LIFETIMES = {
        "synchronize_rcu_exit_mmap": "synchronize_rcu",
        "rcu_barrier": "rcu_barrier",
        "mmdrop_async": "mmdrop_async",
    }

    def __init__(self, machine, params: S390HHParams) -> None:
        super().__init__(machine, params)
        self.lifetime: str | None = params.mm_lifetime
        self.one_bit = params.one_bit_at_a_time
        self.per_mm = params.list_lock == "per_mm"
        self.global_lock = machine.lock("s390_global_list")
        self.running: set = set()  # pages whose rcu_head callback is running right now

    def list_lock(self, mm: MM):
        return mm.context_lock if self.per_mm else self.global_lock

    def busy(self, bits: int) -> int:
        return (bits | (bits >> 2) | (bits >> 4)) & 0x03

    def _pending(self, half: int) -> int:
        return p_bit(half) | h_bit(half)

    def _list_del(self, cpu: CPU, page: Page, where: str) -> None:
        """v2 uses plain ``list_del``: unlinking a page that is not linked corrupts the list."""
        if page.on_list is None:
            if self.safety is not None:
                self.safety.invariant(cpu, (page,), f"{where}: list_del of unlinked {page!r}")
            return
        self.list_del_init(cpu, page)

    def _unlink_if_idle(self, cpu: CPU, page: Page, half: int, where: str) -> None:
        """v2's rule once ``half`` is freed or pending: with the other half neither allocated nor
        pending, the page leaves the list (its rcu_head, under the links, may be needed)."""
        other = half ^ 1
        if not page.data.bits & (a_bit(other) | self._pending(other)):
            self._list_del(cpu, page, where)

    # -- page_table_free ----------------------------------------------------------------------
    def pte_free(self, cpu: CPU, mm: MM, table: PageTable):
        page = table.page
        st: S390PageState = page.data
        if st.bits & PGSTE:
            self._pte_free_pgste(cpu, page)
            return
        half = table.offset // HALF
        other = half ^ 1
        lock = self.list_lock(mm)
        yield from self.spin_lock(cpu, lock)
        old = self._split(page)
        st.bits ^= a_bit(half)
        self.free_slot(cpu, page, half)
        if st.bits & a_bit(other):
            self.list_add(cpu, mm, page)
        else:
            self._unlink_if_idle(cpu, page, half, "page_table_free")
        self.commit(page, old)
        self.check(cpu, page, "page_table_free")
        self.spin_unlock(cpu, lock)
        if not st.bits & 0x3F:
            self.release(cpu, page)

    # -- mmu_gather ---------------------------------------------------------------------------
    def list_after_free_rcu(self, cpu: CPU, mm: MM, page: Page, half: int) -> None:
        """``page_table_free_rcu`` (shared path in ``s390_base``) never lists a page: it only
        unlinks one left with no allocated or pending half."""
        self._unlink_if_idle(cpu, page, half, "page_table_free_rcu")

    def tlb_table_free(self, cpu: CPU, table: PageTable):
        """``__tlb_remove_table``; returns a generator when it must take the list lock."""
        page = table.page
        st: S390PageState = page.data
        if st.bits & PGSTE:
            self._pte_free_pgste(cpu, page)
            return None
        half = table.offset // HALF
        if st.bits & a_bit(half ^ 1):
            return self._relink(cpu, page, half)
        self.clear_p(cpu, page, half)
        self.check(cpu, page, "__tlb_remove_table")
        if not st.bits & 0x3F:
            self.release(cpu, page)
        return None

    def _relink(self, cpu: CPU, page: Page, half: int):
        """The other half looked allocated: relink the page on ``pt_mm``'s list under the lock."""
        st: S390PageState = page.data
        mm: MM = st.pt_mm  # type: ignore[assignment]  # a half-used page knows its pt_mm
        safety = self.safety
        cpu.rcu_read_lock()  # softirq context: bh disabled is an RCU read-side section
        if self.per_mm:
            if safety is not None:
                safety.mm_access(cpu, mm, "__tlb_remove_table: spin_lock(&pt_mm->context.lock)")
            lock = mm.context_lock
        else:
            lock = self.global_lock
        yield from self.spin_lock(cpu, lock, softirq=True)
        old = self._split(page)
        st.bits ^= p_bit(half)
        self.free_slot(cpu, page, half)
        if st.bits & 0x03:
            if safety is not None:
                safety.mm_access(cpu, mm, "__tlb_remove_table: list_add to pt_mm's pgtable_list")
            self.list_add(cpu, mm, page)
            self.m.counters["s390.relinked"] += 1
        self.commit(page, old)
        self.check(cpu, page, "__tlb_remove_table relink")
        self.spin_unlock(cpu, lock, softirq=True)
        cpu.rcu_read_unlock()
        if not st.bits & 0x3F:
            self.release(cpu, page)

    # -- pte_free_defer -----------------------------------------------------------------------
    def pte_free_defer(self, cpu: CPU, mm: MM, table: PageTable):
        page = table.page
        st: S390PageState = page.data
        if st.bits & PGSTE:
            self.pgste_to_pending(table)
            self.m.counters["s390.pgste_defer"] += 1
            self.m.page_call_rcu(cpu, page, self._pte_free_pgste, page)
            return
        half = table.offset // HALF
        other = half ^ 1
        lock = self.list_lock(mm)
        yield from self.spin_lock(cpu, lock)
        old = self._split(page)
        self.to_pending(table)
        flip = a_bit(half) | h_bit(half)
        if not self.one_bit:
            flip |= p_bit(half)  # v2 as posted: 0x15 << bit
        st.bits ^= flip
        self._unlink_if_idle(cpu, page, half, "pte_free_defer")
        self.commit(page, old)
        self.spin_unlock(cpu, lock)
        if self.lifetime == "mmdrop_async":
            mm.arch["mm_count"] = mm.arch.get("mm_count", 1) + 1  # mmgrab
        if not st.bits & h_bit(other):
            self.m.page_call_rcu(cpu, page, self._pte_free_half, (page, half, mm))
            self.m.counters["s390.defer_call_rcu"] += 1
        else:
            self.m.counters["s390.defer_rides_other"] += 1
        self.check(cpu, page, "pte_free_defer")  # after call_rcu: H implies a queued rcu_head

    @traced_as("pte_free_pgste")
    def _pte_free_pgste(self, cpu: CPU, page: Page) -> None:
        """A PGSTE table is freed whole (also the rcu_head callback of its deferral)."""
        self.free_pgste(cpu, page)
        self.release(cpu, page)

    @traced_as("pte_free_half")
    def _pte_free_half(self, cpu: CPU, arg):
        """The rcu_head callback for ``half``; may chain to the other half's deferral."""
        page, half, mm = arg
        st: S390PageState = page.data
        self.running.add(page)
        old = self._split(page)
        st.bits ^= h_bit(half) | (p_bit(half) if self.one_bit else 0)
        mask = st.bits
        self.commit(page, old)
        self.check(cpu, page, "pte_free_half")
        r = self.tlb_table_free(cpu, page.tables[half])
        if r is None:
            self._after_half(cpu, page, half, mask, mm)
            return None
        return self._then(r, cpu, page, half, mask, mm)

    def _then(self, r, cpu, page, half, mask, mm):
        yield from r
        self._after_half(cpu, page, half, mask, mm)

    def _after_half(self, cpu: CPU, page: Page, half: int, mask: int, mm: MM) -> None:
        other = half ^ 1
        self.running.discard(page)
        if mask & h_bit(other):
            # pte_free_defer() of the other half found the rcu_head busy: queue it now.
            self.m.page_call_rcu(cpu, page, self._pte_free_half, (page, other, page.data.pt_mm))
            self.m.counters["s390.rcu_requeue"] += 1
        if self.lifetime == "mmdrop_async":
            self._mmdrop_async(cpu, mm)

    # -- mm lifetime --------------------------------------------------------------------------
    def _mmdrop_async(self, cpu: CPU, mm: MM) -> None:
        n = mm.arch["mm_count"] = mm.arch["mm_count"] - 1
        if n == 0:
            self.m.counters["s390.mmdrop_async"] += 1
            self.env.process(self._kworker_free(cpu, mm))

    def _kworker_free(self, cpu: CPU, mm: MM):
        """``mmdrop_async``: schedule_work; a kworker on the same CPU frees the mm later."""
        yield Timeout(self.env, self.params.kworker_delay)
        task = KWORKER()
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        self.m.free_mm(cpu, mm)
        yield cpu.compute(0)
        cpu.release()

    def mm_free(self, cpu: CPU, mm: MM, task: object):
        rule = self.lifetime
        m = self.m
        if rule == "synchronize_rcu":
            yield from m.rcu.synchronize(cpu, task)
            m.free_mm(cpu, mm)
        elif rule == "rcu_barrier":
            yield from m.rcu.barrier(cpu, task)
            cpu.charge(self.costs.call_rcu)
            m.rcu.call_rcu(cpu, _free_mm_cb, (m, mm))
        else:
            n = mm.arch["mm_count"] = mm.arch.get("mm_count", 1) - 1  # exit's mmdrop
            if n == 0:
                m.free_mm(cpu, mm)

    # -- invariants ---------------------------------------------------------------------------
    def page_errors(self, page: Page) -> list[str]:
        errs = self.common_errors(page)
        st: S390PageState = page.data
        bits = st.bits
        if bits & PGSTE:
            return errs
        for half in (0, 1):
            n = bool(bits & a_bit(half)) + bool(bits & h_bit(half)) + bool(bits & p_bit(half))
            if n > 1:
                errs.append(f"half {half} in {n} of A/H/P at once ({st!r}): breaks one-bit rule")
        listable = any(
            bits & a_bit(h) and not bits & (a_bit(h ^ 1) | self._pending(h ^ 1)) for h in (0, 1)
        )
        if page.on_list is not None and not listable:
            errs.append(f"on pgtable_list but not (one half A, other free) ({st!r})")
        if page.on_list is None and listable and page not in self.in_transit:
            errs.append(f"has a free half but is not on pgtable_list ({st!r})")
        if bits & 0x0C and not page.rcu_queued and page not in self.running:
            # Between a callback's start and its re-queue the rcu_head is legitimately idle.
            errs.append(f"H set but rcu_head not queued ({st!r})")
        return errs
