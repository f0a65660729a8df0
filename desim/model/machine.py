"""The simulated machine: the one object every model part hangs off.

It owns the SimPy environment, the config, the run's random streams, the CPUs, lock classes,
page allocator, RCU, the allocator under study, the live mms and the statistics. Nothing here
imports pandas: results leave as plain Python structures (``desim.engine``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from simpy.events import AllOf, Event

from desim.model.arch import ARCHES
from desim.model.costs import Draws, per_cpu_fault_work
from desim.model.cpu import CPU
from desim.model.hooks import wraps_callback
from desim.model.lock import SpinLock
from desim.model.memory import MM, Page, PageAllocator, RWSem
from desim.model.mm_lifetime import COUNTERS as LIFETIME_COUNTERS
from desim.model.mm_lifetime import MMLifetime
from desim.model.rcu import RCU
from desim.model.safety import SafetyChecker
from desim.model.simcore import Environment, seq_counter
from desim.model.stats import LockClassStats, LogHistogram
from desim.records import CORE_COUNTERS, LATENCY_OPS, counter_table, declared_counters
from desim.rng import Streams

if TYPE_CHECKING:
    from desim.config import Config


def _no_record(ns: int) -> None:
    pass


def _both(add, append):
    def record(ns: int) -> None:
        add(ns)
        append(ns)

    return record


@wraps_callback(lambda arg: arg[1])  # (page, the design's callback, its argument)
def _rcu_head_cb(cpu: CPU, arg):
    page, func, farg = arg
    page.rcu_queued = False
    if cpu.machine.safety is not None:
        cpu.machine.safety.note(page, cpu, "rcu_head callback runs")
    return func(cpu, farg)


class Machine:
    def __init__(self, config: Config, streams: Streams | None = None) -> None:
        self.config = config
        self.costs = config.costs
        self.env = Environment()
        self.streams = streams or Streams.from_seed(config.seed)
        sc = config.safety
        self.safety = (
            SafetyChecker(self, sc.history, sc.stop_on_first, sc.audit_interval)
            if sc.enabled
            else None
        )
        self.lock_classes: dict[str, LockClassStats] = {}
        self.cpus = [CPU(self, i) for i in range(config.machine.cpus)]
        # samplers of the costs that vary (desim.model.costs), before anything draws one
        self.draw = Draws(config.costs, self.streams)
        for c in self.cpus:
            c.fault_work = per_cpu_fault_work(config.costs, self.streams, c.id)
        # The fault lookahead may let other events run during a walk only before this time:
        # the engine sets it to its next checkpoint or statistics reset (0: never).
        self.fence = 0
        self.next_seq = seq_counter(self.env)  # scheduling numbers (the fault lookahead's)
        self.stats_reset_at = -1  # when the engine's warm-up clears the statistics, if it does
        arch = ARCHES[config.machine.arch_name]
        # zap_pte_range of one table at munmap and exit: every PTE it holds
        self.zap_table = config.costs.zap_page * arch.ptes(config.machine.page_size)
        self.pages = PageAllocator(self, config.machine.page_size, config.machine.page_limit)
        self.rcu = RCU(self)
        self.ipis_sent = 0
        self.irqs_off: dict[CPU, Event] = {}  # CPUs with IRQs disabled -> fires on re-enable
        # declared counters only (desim.records): a misspelt name fails at its first use
        self.counters: dict[str, int] = counter_table(
            CORE_COUNTERS,
            LIFETIME_COUNTERS,
            declared_counters(config.allocator.design),
        )
        self.latency = {op: LogHistogram() for op in LATENCY_OPS}
        self.samples: dict[str, list] | None = (
            {op: [] for op in LATENCY_OPS} if config.record.latency_samples else None
        )
        # op -> the one-argument callable that records a latency of that op (hot paths hold it)
        self.recorders: dict[str, Callable[[int], None]]
        if not config.record.enabled:
            self.recorders = dict.fromkeys(LATENCY_OPS, _no_record)
        elif self.samples is None:
            self.recorders = {op: h.add for op, h in self.latency.items()}
        else:
            self.recorders = {
                op: _both(h.add, self.samples[op].append) for op, h in self.latency.items()
            }
        self.mms: list[MM] = []
        self.i_mmap_lock = RWSem(self.env)  # the shared file's i_mmap_rwsem
        self.next_mm_id = 0
        self.mms_alive_peak = 0
        # Parts made on demand (the scheduler) add their results and their warm-up reset here.
        # What each component contributes to summary.json, in this order: ``hook(now)`` returns
        # flat {metric: number}. Elements and the scheduler append theirs when they start; the
        # engine adds the memory books' (they need its time series).
        self.result_hooks: list[Callable[[int], dict[str, float]]] = [
            self.latency_results,
            self.rcu.results,
            self.lock_results,
            self.activity_results,
        ]
        self.clear_hooks: list[Callable[[], None]] = []
        # the design the config names, resolved by the config (the model never looks plugins up)
        self.allocator = config.allocator.design(self, config.allocator.params)
        # how mmu_gather frees tables on this machine (desim.model.arch): "rcu" or "flush"
        self.tlb_table_free = config.machine.table_free
        # a fault on a collapsed (PMD-mapped) range still allocates a PTE table to deposit
        self.deposits_pgtable = ARCHES[config.machine.arch_name].deposits_pgtable
        self.mm_life = MMLifetime(self)

    # -- building blocks ----------------------------------------------------------------------
    def lock_class(self, name: str) -> LockClassStats:
        st = self.lock_classes.get(name)
        if st is None:
            st = self.lock_classes[name] = LockClassStats(name)
        return st

    def lock(self, class_name: str) -> SpinLock:
        c = self.costs
        return SpinLock(self.env, self.lock_class(class_name), c.lock_uncontended, c.lock_handoff)

    def record(self, op: str, ns: int) -> None:
        self.recorders[op](ns)

    def flush_stats(self, min_batch: int = 1) -> None:
        """Bin the latency samples pending in each histogram, if at least ``min_batch``.

        The engine calls this at its checkpoints to bound the memory of pending samples; a
        histogram is binned whenever it is read in any case.
        """
        for h in self.histograms():
            h.flush(min_batch)

    def histograms(self) -> list[LogHistogram]:
        hs = list(self.latency.values())
        for st in self.lock_classes.values():
            hs.append(st.wait)
        return hs + list(self.rcu.histograms())

    # -- what the machine's own parts contribute to summary.json --------------------------------
    def latency_results(self, now: int) -> dict[str, float]:
        s: dict[str, float] = {}
        for op, h in self.latency.items():
            s.update(h.summary(op))
        s["ipi.sent"] = self.ipis_sent
        return s

    def lock_results(self, now: int) -> dict[str, float]:
        s: dict[str, float] = {}
        for st in self.lock_classes.values():
            if st.acquisitions:
                s.update(st.summary())
        return s

    def activity_results(self, now: int) -> dict[str, float]:
        """The page allocator, the counters, the mms and the CPUs."""
        pages = self.pages
        s: dict[str, float] = {
            "pages.allocated": pages.allocated,
            "pages.freed": pages.freed,
            "pages.held_end": pages.held,
            "pages.pgtable_held_end": pages.pages_held("pgtable"),
            "pages.alloc_failed": pages.failed,
        }
        c = self.counters
        for k, v in sorted(c.items()):
            if v:  # a counter never incremented is left out
                s[f"count.{k}"] = v
        # which share of page-table frees went through pte_free_defer (retraction), as against
        # mmu_gather (munmap, exit) and pte_free (a lost populate race)
        deferred = c.get("tables.deferred", 0)
        frees = deferred + c.get("tables.gathered", 0) + c.get("alloc.lost_race", 0)
        s["tables.freed"] = frees
        s["tables.defer_share"] = deferred / frees if frees else 0.0
        s["mm.alive_end"] = len(self.mms)
        s["mm.alive_peak"] = self.mms_alive_peak
        s["cpu.busy_fraction"] = sum(cpu.busy_fraction(now) for cpu in self.cpus) / len(self.cpus)
        s["cpu.softirq_ns"] = sum(cpu.softirq_ns for cpu in self.cpus)
        return s

    def clear_stats(self) -> None:
        """End of warm-up: forget what was measured so far (state is kept)."""
        for h in self.latency.values():
            h.clear()
        if self.samples is not None:
            for v in self.samples.values():
                v.clear()
        for st in self.lock_classes.values():
            st.clear()
        self.rcu.clear_stats()
        self.allocator.account.reset_peaks()
        for k in self.counters:
            self.counters[k] = 0
        self.ipis_sent = 0
        for hook in self.clear_hooks:
            hook()

    # -- mms ----------------------------------------------------------------------------------
    def new_mm(self, target_tables: int, pgste: bool = False) -> MM:
        mm = MM(self, self.next_mm_id, target_tables, pgste)
        self.next_mm_id += 1
        mm.index = len(self.mms)
        self.mms.append(mm)
        if len(self.mms) > self.mms_alive_peak:
            self.mms_alive_peak = len(self.mms)
        self.counters["mm.created"] += 1
        if self.safety is not None:
            self.safety.note(mm, None, "created")
        return mm

    def unlink_mm(self, mm: MM) -> None:
        """The mm stops being reachable by new faults and scans (exit has begun)."""
        mm.alive = False
        last = self.mms.pop()
        if last is not mm:
            self.mms[mm.index] = last
            last.index = mm.index
        mm.index = -1

    def free_mm(self, cpu: CPU, mm: MM) -> None:
        """``free_mm``: the mm_struct goes back to its slab; any later use is a bug."""
        if self.safety is not None:
            self.safety.mm_freed(cpu, mm)  # poisons the mm's locks and lists
        mm.freed = True
        cpu.charge(self.costs.mm_free)
        self.counters["mm.freed"] += 1

    # -- the page's single rcu_head -------------------------------------------------------------
    def page_call_rcu(self, cpu: CPU, page: Page, func, arg, cost: int = 0) -> None:
        """``call_rcu(&page->rcu_head, ...)``: the page has one rcu_head, so one use at a time."""
        if self.safety is not None:
            self.safety.rcu_queue(cpu, page)
        page.rcu_queued = True
        cpu.charge(self.costs.call_rcu)
        self.rcu.call_rcu(cpu, _rcu_head_cb, (page, func, arg), cost)

    # -- CPUs -----------------------------------------------------------------------------------
    def sleep(self, cpu: CPU, task: object, ev):
        """Block ``task`` on ``ev`` (a sleeping lock, a wait): its CPU runs others meanwhile."""
        cpu.release()
        yield ev
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev

    def local_irq_disable(self, cpu: CPU) -> None:
        """IRQs off on ``cpu`` (GUP-fast's walk): IPIs to it wait for ``local_irq_enable``."""
        self.irqs_off[cpu] = Event(self.env)

    def local_irq_enable(self, cpu: CPU) -> None:
        self.irqs_off.pop(cpu).succeed()
        if cpu.softirq_deferred and not cpu.bh:
            # A softirq raised while IRQs were off runs now.
            cpu.softirq_deferred = False
            self.rcu.raise_softirq(cpu)

    def ipi_all(self, cpu: CPU):
        """``smp_call_function(..., wait=1)`` to every other CPU: wait for all handlers.

        A target with IRQs disabled takes the IPI only once it re-enables them, so the sender
        (spinning) waits for the last such CPU; this is how GUP-fast's IRQs-off walk holds off
        ``tlb_remove_table_sync_one``. With no CPU in that state it costs one dict test.
        """
        others = len(self.cpus) - 1
        if others <= 0:
            return
        self.ipis_sent += others
        h = self.costs.ipi_handler
        for c in self.cpus:
            if c is not cpu:
                c.steal(h)
        latency = self.draw.ipi_latency()
        if self.irqs_off:
            t0 = self.env.now
            yield from self.wait_irqs_on(cpu)
            latency = max(0, latency - (self.env.now - t0))
        yield cpu.compute(latency + h)

    def wait_irqs_on(self, cpu: CPU):
        """Wait until every other CPU with IRQs disabled has re-enabled them (generator): an
        IPI ``cpu`` sent is handled only then."""
        waits = [ev for c, ev in self.irqs_off.items() if c is not cpu]
        if waits:
            self.counters["ipi.waited_irqs_off"] += 1
            yield AllOf(self.env, waits)
