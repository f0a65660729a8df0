"""Tree RCU as Linux v6.6 runs it, at the level of detail page-table freeing needs.

Two flavours (``rcu.flavor``): ``non-preemptible`` (``!PREEMPT_RCU``: PREEMPT_NONE/VOLUNTARY
builds, the s390 and powerpc defconfigs) and ``preemptible`` (``PREEMPT_RCU``, selected by every
PREEMPTION build, so by the PREEMPT_DYNAMIC kernels x86 distributions ship). What is modelled,
and after which kernel code (kernel/rcu/tree.c, tree_plugin.h, tree_nocb.h, tree.h of v6.6):

* **Grace-period state.** ``seq`` is ``rcu_state.gp_seq`` (2 x completed, +1 while a GP runs;
  one rcu_node, so the leaf's copy is the same). ``rcu_gp_init`` marks every CPU as owing a
  quiescent state (QS, its ``qsmask`` bit); the GP kthread's own CPU notices the new GP there
  (``__note_gp_changes``). Any other CPU notices it only when ``rcu_core`` runs on it
  (``note_gp_changes``), and a QS it passed before noticing does not count: noticing sets
  ``cpu_no_qs.b.norm`` again.
* **The tick** (``rcu_sched_clock_irq``), one jiffy apart, on every CPU that is not NO_HZ idle
  (an idle CPU ticks only while it holds non-offloaded callbacks, ``rcu_needs_cpu``). First the
  flavour's rule notes a QS (``rcu_flavor_sched_clock_irq``): on both flavours a tick that
  interrupts user mode or idle; on ``preemptible`` also one in kernel code outside a reader;
  on ``non-preemptible`` kernel code counts only with ``tick_qs_in_kernel`` (the later fix
  that counts a tick finding no preempt count held, ``CONFIG_PREEMPT_COUNT=y``) or once the
  GP is older than ``jiffies_to_sched_qs`` (``rcu_urgent_qs``: the tick only sets
  need_resched; the task's next ``cond_resched`` is a context switch, ``rcu_all_qs``, which we
  place right after the tick, so the next tick reports it). Then ``rcu_pending`` decides
  whether ``rcu_core`` must run: a QS to report, callbacks ready, a GP to request, or a GP
  state not yet noticed.
* **rcu_core** (RCU_SOFTIRQ, on irq exit; ``rcu_check_quiescent_state``,
  ``rcu_report_qs_rdp``, ``rcu_do_batch``): notices GP ends and starts, advancing and
  accelerating the callbacks only then (``rcu_advance_cbs`` / ``rcu_accelerate_cbs``); reports
  a noted QS; with no GP running, accelerates new callbacks and so requests a GP; invokes ready
  callbacks. A softirq raised while its CPU is in a ``_bh`` or IRQs-off section runs when the
  section ends (``local_bh_enable``).
* **A context switch** is a QS (``rcu_note_context_switch`` → ``rcu_qs``), reported at the
  CPU's next ``rcu_core``. Returning from a fault to user mode is not a context switch.
* **Force-quiescent-state scans** (``rcu_gp_fqs_loop``): the GP kthread sleeps
  ``jiffies_till_first_fqs`` (then ``jiffies_till_next_fqs``) jiffies and wakes on a tick. The
  first scan snapshots each owing CPU's dynticks counter and reports the CPUs in an extended
  QS at that instant (``dyntick_save_progress_counter``); later scans report the CPUs that
  passed through one since (``rcu_implicit_dynticks_qs``), and past ``jiffies_to_sched_qs``
  set ``rcu_urgent_qs``. The kthread itself runs on a CPU (its last one, or an idle one when
  that one is busy: ``select_task_rq``'s idle-sibling choice): that CPU is not in an EQS while
  a scan runs, which is why an idle machine waits two scans for the kthread's own CPU.
* **Preemptible readers**: a reader preempted (``CPU.preempt``, or the scheduler under
  ``sched.preempt: full``, ``desim.model.sched``) goes on the blocked-tasks list
  (``rcu_preempt_ctxt_queue``); it blocks the current GP if its CPU had not yet reported, and
  every GP that starts while it is listed (``rcu_gp_init`` sets ``gp_tasks``). Its outermost
  ``rcu_read_unlock`` takes it off (``rcu_read_unlock_special``), which may end the GP.
* **Callbacks** (``rcu_segcblist``): four segments DONE / WAIT / NEXT_READY / NEXT, tagged
  with the GP number that must complete (``rcu_seq_snap``). ``rcu_do_batch`` invokes at least
  ``max(blimit, pending >> rcu_divisor)`` per batch and more while its CPU is idle; a batch
  above 100 is cut after ``rcu_resched_ns`` (``batch_time``); ``__call_rcu_core`` raises a
  CPU's ``blimit`` to ``DEFAULT_MAX_RCU_BLIMIT`` when its queue grows by ``qhimark`` during a
  GP, ``rcu_do_batch`` restores it below ``qlowmark``. Callbacks run on the CPU that queued
  them, so callbacks queued on different CPUs run in no guaranteed order. On a machine with
  a scheduler, a softirq past ``__do_softirq``'s budget (10 runs, 2 ms, ``need_resched``)
  leaves the rest to the CPU's ksoftirqd task (``_invoke``, ``run_ksoftirqd``).
  ``rcutree.use_softirq=0`` (callbacks in the per-CPU rcuc kthread) is not modelled.
* **Offloaded CPUs and lazy RCU** (``rcu.nocb_cpus``, ``rcu.lazy``; tree_nocb.h): an offloaded
  CPU's callbacks are handled by its rcuog/rcuo kthreads: queued callbacks request their GP at
  once (``wake_nocb_gp``), are advanced at GP end (``rcu_nocb_gp_cleanup``) and invoked by the
  rcuo kthread, whose CPU time is taken from that CPU; its ticks do nothing for callbacks, so
  an idle offloaded CPU sleeps. With ``CONFIG_RCU_LAZY`` a plain ``call_rcu`` there goes to the
  bypass list (``rcu_nocb_try_bypass``), flushed after ``jiffies_lazy_flush``, when it reaches
  ``qhimark``, by a non-lazy request (``call_rcu_hurry``, ``synchronize_rcu``) on that CPU, or
  by ``rcu_barrier``. The memory-pressure shrinker (``lazy_rcu_shrink_scan``) is not modelled.
* ``synchronize_rcu`` is ``call_rcu_hurry`` of a wake-up (``wait_rcu_gp``);
  ``synchronize_rcu_expedited`` IPIs every non-idle CPU (``sync_rcu_exp_select_cpus``); the
  handler (``rcu_exp_handler``) reports user mode at once; kernel code at once on a
  preemptible kernel outside a reader, else at the outermost ``rcu_read_unlock``; on a
  non-preemptible kernel at the CPU's next context switch or return to user mode.
  ``rcu_barrier`` entrains a callback behind every CPU's list (flushing bypass lists) and
  waits for all of them, serialised by a mutex.

Simplified on purpose (each only matters outside what desim measures, see README):

* A preemptible kernel's tick and expedited IPI also find no QS inside a spinlock or ``_bh``
  section (``preempt_count() & (PREEMPT_MASK | SOFTIRQ_MASK)``); desim looks at the reader
  depth only. A fault's ptl section lies inside its RCU reader, so the common case is covered;
  the other spinlocks (PMD lock, allocator locks) are held for tens of ns per operation.
* Callback floods: ``__call_rcu_core``'s ``rcu_force_quiescent_state`` for a queue grown by
  ``qhimark``, callback overload (``qovld``: FQS waits shortened, ``rcu_need_heavy_qs``) and the
  nocb per-jiffy limit that sends non-lazy callbacks to the bypass are not modelled: they need
  thousands of callbacks queued on one CPU.
* The GP kthread woken onto a busy CPU (no idle one left) forces no context switch there.
* A tick due while its CPU has IRQs off fires on time instead of when they come back on.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from simpy.events import Event, Timeout

from desim.model.hooks import traced_as
from desim.model.lock import Mutex
from desim.model.stats import LogHistogram

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.hooks import TraceHooks
    from desim.model.machine import Machine

MAX_GP_SPANS = 100_000
DEFAULT_MAX_RCU_BLIMIT = 10_000  # kernel/rcu/tree.c
QLOWMARK = 100  # qlowmark: blimit comes back below this many queued
RCU_DIVISOR = 7  # rcu_divisor: a batch is at least pending >> 7
BIG_BATCH = 100  # rcu_do_batch applies its time limit above this batch
MAX_SOFTIRQ_RESTART = 10  # kernel/softirq.c: __do_softirq's runs before ksoftirqd takes over
MAX_SOFTIRQ_MS = 2  # kernel/softirq.c MAX_SOFTIRQ_TIME, msecs_to_jiffies(2)

# Tests only: the tick visits every CPU and the GP kthread's placement scans every CPU, as
# before they were made incremental (the lazy paths must give the same run).
EAGER_SCANS = False


class SegCBList:
    """A CPU's callbacks in four segments: DONE, WAIT (tagged), NEXT_READY (tagged), NEXT.

    A callback is a tuple ``(func, arg, cost_ns, t_queued)``; ``func(cpu, arg)`` returns None or
    a generator to run (when the callback must take a lock).
    """

    __slots__ = ("done", "wait", "wait_gp", "ready", "ready_gp", "next", "n")

    def __init__(self) -> None:
        self.done: deque = deque()
        self.wait: list = []
        self.wait_gp = 0
        self.ready: list = []
        self.ready_gp = 0
        self.next: list = []
        self.n = 0

    def advance(self, completed: int) -> None:
        """Move callbacks whose GP has completed to DONE, and NEXT_READY up into WAIT."""
        if self.wait and self.wait_gp <= completed:
            self.done.extend(self.wait)
            self.wait = []
            if self.ready and self.ready_gp <= completed:
                self.done.extend(self.ready)
                self.ready = []
        if not self.wait and self.ready:
            self.wait, self.wait_gp = self.ready, self.ready_gp
            self.ready = []

    def accelerate(self, snap: int) -> int:
        """``rcu_segcblist_accelerate``: give the callbacks not yet tagged GP ``snap``.

        As the kernel does (kernel/rcu/rcu_segcblist.c, v6.6): find the newest of WAIT and
        NEXT_READY that waits for a GP earlier than ``snap``; every later segment, NEXT
        included, merges into the one after it, tagged ``snap`` (so a segment tagged ``snap``
        or later is pulled forward to ``snap``). When NEXT_READY itself waits for an earlier
        GP there is no free segment: NEXT stays untagged until an advance frees one.

        Returns the latest GP number any waiting callback needs (0 if none).
        """
        nxt = self.next
        if self.ready and self.ready_gp < snap:
            pass  # no segment free: NEXT waits
        elif self.wait and self.wait_gp < snap:
            if nxt or self.ready:  # NEXT_READY := NEXT_READY + NEXT, @snap
                if nxt:
                    self.ready.extend(nxt)
                    self.next = []
                self.ready_gp = snap
        elif nxt or self.wait or self.ready:  # WAIT := everything pending, @snap
            merged = self.wait
            merged.extend(self.ready)
            merged.extend(nxt)
            self.wait, self.wait_gp = merged, snap
            self.ready = []
            self.next = []
        if self.ready:
            return self.ready_gp
        return self.wait_gp if self.wait else 0


class Expedited:
    """``synchronize_rcu_expedited``: IPIs force quiescent states within microseconds."""

    def __init__(self, rcu: RCU) -> None:
        self.rcu = rcu
        self.mutex = Mutex(rcu.env)
        self.left = 0
        self.done: Event | None = None
        self.count = 0

    def synchronize(self, cpu: CPU, task: object):
        rcu = self.rcu
        env = rcu.env
        m = rcu.machine
        costs = m.config.costs
        t0 = env.now
        cpu.release()  # the caller sleeps while the expedited GP runs
        ev = self.mutex.acquire()
        if ev is not None:
            yield ev
        yield Timeout(env, costs.exp_gp_overhead)  # kworker wake-up and setup
        targets = [c for c in m.cpus if not c.idle]  # idle CPUs are in an extended QS
        self.left = len(targets)
        if targets:
            m.ipis_sent += len(targets)
            self.done = Event(env)
            yield Timeout(env, m.draw.ipi_latency())
            preemptible = rcu.preemptible
            for c in targets:
                c.steal(costs.ipi_handler)
                # rcu_exp_handler (tree_exp.h): user mode reports at once (on !PREEMPT via
                # the reschedule on the way back to user mode, microseconds). Kernel code
                # reports at once on a preemptible kernel outside a reader, else at the
                # reader's outermost rcu_read_unlock; on a non-preemptible kernel it only gets
                # need_resched and reports at its next context switch or return to user.
                if c.owner is None or (preemptible and c.nesting == 0):
                    self.left -= 1
                else:
                    c.exp_need_qs = True
            if self.left:
                yield self.done
            self.done = None
        self.count += 1
        self.mutex.release()
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        rcu.exp_latency.add(env.now - t0)

    def report(self, cpu: CPU) -> None:
        cpu.exp_need_qs = False
        self.left -= 1
        if self.left == 0 and self.done is not None:
            self.done.succeed()


@traced_as("wakeme_after_rcu")
def _wake(cpu: CPU, ev: Event) -> None:
    ev.succeed()


class RCU:
    """The grace-period machinery shared by all CPUs of a machine."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.env = env = machine.env
        cfg = machine.config
        rc = cfg.rcu
        hz = cfg.machine.tick_hz
        ncpus = cfg.machine.cpus
        self.cpus = machine.cpus
        self.jiffy = cfg.machine.jiffy_ns
        self.first_fqs = rc.effective_fqs_jiffies(hz, ncpus)
        self.next_fqs = rc.effective_next_fqs_jiffies(hz, ncpus)
        self.sched_qs = rc.effective_sched_qs_jiffies(hz, ncpus) * self.jiffy
        self.preemptible = rc.flavor == "preemptible"
        # A tick in kernel code outside a reader reports a QS (flavour rule, or the fix).
        self.kernel_tick_qs = self.preemptible or rc.tick_qs_in_kernel
        self.blimit = rc.blimit
        self.qhimark = rc.qhimark
        self.batch_time = rc.batch_time
        self.lazy = rc.lazy
        self.lazy_flush = rc.lazy_flush
        self.cb_overhead = cfg.costs.rcu_callback
        offloaded = rc.offloaded_cpus(ncpus)
        for c in self.cpus:
            c.rcu = self
            c.cbs = SegCBList()
            c.blimit = self.blimit
            c.offloaded = c.id in offloaded
        self.completed = 0  # number of GPs completed
        self.gp_active = False
        self.seq = 0  # rcu_state.gp_seq: 2 * completed + gp_active
        self.requested = 0  # highest GP number some callback needs
        self.qs_left = 0  # CPUs and blocked readers the current GP still waits for
        self.gp_start = 0
        self.pending = 0  # callbacks queued and not yet invoked (bypass included)
        self.tick_cbs = 0  # of which on non-offloaded CPUs: they keep ticks running
        self.blocked: dict[object, bool] = {}  # preempted readers -> they block the current GP
        # Ids of the CPUs that take a tick: the ones not idle (kept by CPU) and the ones holding
        # non-offloaded callbacks (added by call_rcu, dropped when their queue empties).
        self.awake: set[int] = set()
        self.cb_cpus: set[int] = set()
        self.kthread_cpu = self.cpus[-1]  # where the GP kthread last ran
        self._gp_wake: Event | None = None
        self._tick_wake: Event | None = None
        self.barrier_mutex = Mutex(env)
        self.barrier_seq = 0  # rcu_state.barrier_sequence: odd while a barrier runs
        self.exp = Expedited(self)
        self.trace: TraceHooks | None = None  # a desim.trace.Tracer when one is recording
        # statistics
        self.gp_length = LogHistogram()
        self.gp_spans: list[tuple[int, int]] = []
        self.sync_latency = LogHistogram()
        self.exp_latency = LogHistogram()
        self.barrier_latency = LogHistogram()
        self.queued = 0
        self.invoked = 0
        self.max_pending = 0
        self.lazy_flushes = 0
        self.ksoftirqd_wakeups = 0
        self.ksoftirqd_callbacks = 0
        # msecs_to_jiffies(MAX_SOFTIRQ_MS), rounded up as the kernel does
        self.softirq_jiffies = -(-MAX_SOFTIRQ_MS * 1_000_000 // self.jiffy)
        env.process(self._gp_kthread())
        env.process(self._ticker())

    def histograms(self) -> tuple[LogHistogram, ...]:
        return self.gp_length, self.sync_latency, self.exp_latency, self.barrier_latency

    def results(self, now: int) -> dict[str, float]:
        """What RCU contributes to summary.json: GP lengths, the callers' waits, callbacks."""
        s: dict[str, float] = {}
        s.update(self.gp_length.summary("rcu.gp"))
        s.update(self.sync_latency.summary("rcu.synchronize"))
        s.update(self.exp_latency.summary("rcu.expedited"))
        s.update(self.barrier_latency.summary("rcu.barrier"))
        s["rcu.gps_completed"] = self.completed
        s["rcu.callbacks_queued"] = self.queued
        s["rcu.callbacks_invoked"] = self.invoked
        s["rcu.callbacks_pending_end"] = self.pending
        s["rcu.callbacks_pending_max"] = self.max_pending
        s["rcu.ksoftirqd_wakeups"] = self.ksoftirqd_wakeups
        s["rcu.ksoftirqd_callbacks"] = self.ksoftirqd_callbacks
        return s

    def clear_stats(self) -> None:
        for h in self.histograms():
            h.clear()
        self.gp_spans.clear()
        self.queued = self.invoked = self.lazy_flushes = 0
        self.ksoftirqd_wakeups = self.ksoftirqd_callbacks = 0
        self.max_pending = self.pending

    # -- update side --------------------------------------------------------------------------
    def call_rcu(self, cpu: CPU, func, arg, cost: int = 0, lazy: bool = True) -> None:
        """Queue ``func(cpu, arg)`` to run after a grace period, on ``cpu``.

        ``lazy=True`` is ``call_rcu`` (lazy on an offloaded CPU of a ``CONFIG_RCU_LAZY``
        kernel), ``lazy=False`` is ``call_rcu_hurry``.
        """
        cb = (func, arg, cost, self.env.now)
        if cpu.trace is not None:
            cpu.trace.call_rcu(cpu)
        self.queued += 1
        p = self.pending = self.pending + 1
        if p > self.max_pending:
            self.max_pending = p
        if cpu.offloaded:
            self._nocb_enqueue(cpu, cb, lazy and self.lazy)
            return
        cbs = cpu.cbs
        cbs.next.append(cb)
        n = cbs.n = cbs.n + 1
        self.tick_cbs += 1
        if n == 1:
            self.cb_cpus.add(cpu.id)
        if n > cpu.qlen_last_fqs_check + self.qhimark:
            # __call_rcu_core: a queue grown by qhimark notices GP changes and, with no GP
            # running, requests one at once; during a GP, lifts the CPU's batch limit.
            self._note(cpu)
            if not self.gp_active:
                self._accelerate(cpu)
            else:
                cpu.blimit = DEFAULT_MAX_RCU_BLIMIT
                cpu.qlen_last_fqs_check = n
        if self._tick_wake is not None:
            self._tick_wake.succeed()
            self._tick_wake = None

    def synchronize(self, cpu: CPU, task: object):
        """``synchronize_rcu``: the calling task sleeps (its CPU is freed) for a full GP."""
        t0 = self.env.now
        ev = Event(self.env)
        self.call_rcu(cpu, _wake, ev, lazy=False)  # wait_rcu_gp(call_rcu_hurry)
        cpu.release()
        yield ev
        turn = cpu.acquire(task)
        if turn is not None:
            yield turn
        self.sync_latency.add(self.env.now - t0)

    def synchronize_expedited(self, cpu: CPU, task: object):
        return self.exp.synchronize(cpu, task)

    def barrier(self, cpu: CPU, task: object):
        """``rcu_barrier``: wait until every callback queued before the call has run."""
        env = self.env
        t0 = env.now
        # rcu_seq_snap(): the barrier that must END for us: the next one to START from now.
        need = (self.barrier_seq + 3) & ~1
        cpu.release()
        ev = self.barrier_mutex.acquire()
        if ev is not None:
            yield ev
        if self.barrier_seq >= need:
            # rcu_seq_done(): a barrier that began after our call has ended; it did our work
            # (concurrent callers share one barrier, as in the kernel).
            self.barrier_mutex.release()
            ev = cpu.acquire(task)
            if ev is not None:
                yield ev
            self.barrier_latency.add(env.now - t0)
            return
        self.barrier_seq += 1
        state: list[Any] = [0, Event(env)]  # callbacks still to run, the event they fire
        for c in self.cpus:
            if c.bypass:
                self._flush_bypass(c)  # rcu_barrier_entrain flushes the bypass first
            if c.cbs.n:
                state[0] += 1
                self.call_rcu(c, _barrier_cb, state, lazy=False)
        if state[0]:
            self.machine.ipis_sent += state[0]
            yield state[1]
        self.barrier_seq += 1
        self.barrier_mutex.release()
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        self.barrier_latency.add(env.now - t0)

    # -- offloaded (nocb) CPUs and lazy callbacks ------------------------------------------------
    def _nocb_enqueue(self, cpu: CPU, cb: tuple, lazy: bool) -> None:
        """``call_rcu`` on an offloaded CPU (``rcu_nocb_try_bypass``, ``__call_rcu_nocb_wake``)."""
        if lazy:
            bp = cpu.bypass
            # A bypass list already qhimark long is flushed, the new callback with it
            # (rcu_nocb_try_bypass checks the length before enqueueing).
            full = len(bp) >= self.qhimark
            bp.append(cb)
            if full:
                self._flush_bypass(cpu)
            elif len(bp) == 1:
                # The rcuog kthread's lazy timer: flush after jiffies_lazy_flush.
                gen = cpu.bypass_gen
                Timeout(self.env, self.lazy_flush).callbacks.append(
                    lambda _e: self._lazy_timer(cpu, gen)
                )
            return
        if cpu.bypass:
            self._flush_bypass(cpu)  # a non-lazy callback flushes the lazy ones with it
        cbs = cpu.cbs
        cbs.next.append(cb)
        cbs.n += 1
        self._nocb_kick(cpu)

    def _lazy_timer(self, cpu: CPU, gen: int) -> None:
        if cpu.bypass_gen == gen and cpu.bypass:
            self._flush_bypass(cpu)

    def _flush_bypass(self, cpu: CPU) -> None:
        """``rcu_nocb_flush_bypass``: the bypass list joins the CPU's callbacks, and rcuog is
        woken to get them a grace period."""
        cbs = cpu.cbs
        cbs.next.extend(cpu.bypass)
        cbs.n += len(cpu.bypass)
        cpu.bypass = []
        cpu.bypass_gen += 1
        self.lazy_flushes += 1
        self._nocb_kick(cpu)

    def _nocb_kick(self, cpu: CPU) -> None:
        """rcuog (``nocb_gp_wait``): accelerate the offloaded CPU's callbacks, request their GP."""
        need = cpu.cbs.accelerate(self._snap())
        if need > self.completed:
            self._request(need, cpu)

    # -- grace periods ------------------------------------------------------------------------
    def _snap(self) -> int:
        """The GP number that must complete for a callback queued now (``rcu_seq_snap``)."""
        return self.completed + (2 if self.gp_active else 1)

    def _request(self, gp: int, cpu: CPU) -> None:
        """``rcu_start_this_gp``: note the need; wake the GP kthread if no GP is running."""
        if gp > self.requested:
            self.requested = gp
            if self._gp_wake is not None and not self.gp_active:
                self._place_kthread()
                self._gp_wake.succeed()
                self._gp_wake = None

    def _accelerate(self, cpu: CPU) -> None:
        need = cpu.cbs.accelerate(self._snap())
        if need > self.completed:
            self._request(need, cpu)

    def _note(self, cpu: CPU) -> None:
        """``__note_gp_changes``: ``cpu`` notices GP ends and starts since it last looked."""
        old = cpu.gp_seq
        new = self.seq
        if old == new:
            return
        ended = (new >> 1) > (old >> 1)  # rcu_seq_completed_gp
        if not cpu.offloaded and cpu.cbs.n:
            if ended:
                cpu.cbs.advance(self.completed)
            self._accelerate(cpu)
        if ended:
            cpu.core_needs_qs = False
        if new & 1 and ((old + 1) & ~1) < new:  # rcu_seq_new_gp: a GP this CPU has not seen
            need = cpu.qs_pending
            cpu.no_qs = need
            cpu.core_needs_qs = need
        cpu.gp_seq = new

    def context_switch(self, cpu: CPU) -> None:
        """``rcu_note_context_switch`` → ``rcu_qs``: a QS, reported at the next ``rcu_core``.

        On a non-preemptible kernel ``rcu_qs`` also reports a pending expedited QS
        (``rcu_report_exp_rdp``); a preemptible one reports it at the reader's unlock.
        """
        cpu.no_qs = False
        if cpu.exp_need_qs and not self.preemptible:
            self.exp.report(cpu)

    def report_qs(self, cpu: CPU) -> None:
        """``rcu_report_qs_rnp``: the GP no longer waits for ``cpu``."""
        if cpu.trace is not None:
            cpu.trace.qs(cpu)
        cpu.qs_pending = False
        cpu.urgent_qs = False
        self._qs_done()

    def _qs_done(self) -> None:
        self.qs_left -= 1
        if self.qs_left == 0 and self._gp_wake is not None:
            self._gp_wake.succeed()
            self._gp_wake = None

    # -- preemptible readers ----------------------------------------------------------------------
    def preempt_task(self, cpu: CPU, task: object, nesting: int) -> None:
        """``rcu_preempt_ctxt_queue``: a reader preempted joins the blocked-tasks list."""
        if not nesting:
            return
        if not self.preemptible:
            raise RuntimeError(f"{cpu!r}: a reader preempted on a non-preemptible kernel")
        # It blocks the current GP if its CPU had not reported yet (rnp->qsmask bit set).
        blocks = self.gp_active and cpu.qs_pending
        self.blocked[task] = blocks
        if blocks:
            self.qs_left += 1

    def read_unlock_special(self, cpu: CPU, task: object) -> None:
        """``rcu_read_unlock_special``: the outermost unlock of a reader that was preempted."""
        if self.blocked.pop(task):
            self._qs_done()  # rcu_report_unblock_qs_rnp

    # -- the GP kthread ---------------------------------------------------------------------------
    def _place_kthread(self) -> None:
        """Where the woken GP kthread runs: its last CPU if idle, else an idle one if any."""
        k = self.kthread_cpu
        if k.idle:
            return
        cpus = self.cpus
        n = len(cpus)
        if len(self.awake) == n and not EAGER_SCANS:
            return  # no CPU is idle: the scan would find none
        for j in range(1, n):
            c = cpus[(k.id + j) % n]
            if c.idle:
                self.kthread_cpu = c
                return

    def _kthread_ran(self) -> None:
        """The kthread ran on its CPU and sleeps again: two context switches there; an idle
        CPU left its extended QS for that while (its dynticks counter moves)."""
        k = self.kthread_cpu
        if k.idle:
            k.eqs += 1
        if k.owner is None:
            k.no_qs = False

    def _fqs_timer(self, ev: Event):
        def fire(_):
            if not ev.triggered:
                ev.succeed()
                if self._gp_wake is ev:
                    self._gp_wake = None

        return fire

    def _gp_kthread(self):
        env = self.env
        cpus = self.cpus
        jiffy = self.jiffy
        while True:
            if self.requested <= self.completed:
                self._gp_wake = Event(env)
                yield self._gp_wake
                continue
            # rcu_gp_init: every CPU owes a QS from now on, and so does every reader on the
            # blocked-tasks list; the kthread's own CPU notices the GP at once.
            self.gp_active = True
            self.seq += 1
            self.gp_start = start = env.now
            if self._tick_wake is not None:
                # The ticker slept with nothing to do (every callback offloaded): the CPUs
                # that must report this GP from their ticks need them again.
                self._tick_wake.succeed()
                self._tick_wake = None
            for c in cpus:
                c.qs_pending = True
                c.urgent_qs = False
            blocked = self.blocked
            for t in blocked:
                blocked[t] = True
            self.qs_left = len(cpus) + len(blocked)
            self._note(self.kthread_cpu)
            self._kthread_ran()
            first = True
            wait = self.first_fqs
            while self.qs_left:
                ev = self._gp_wake = Event(env)
                now = env.now
                # schedule_timeout(j): the timer fires at the j-th jiffy boundary from now.
                t_fqs = (now // jiffy + wait) * jiffy
                Timeout(env, t_fqs - now).callbacks.append(self._fqs_timer(ev))
                yield ev
                if not self.qs_left:
                    break
                if env.now < t_fqs:
                    continue  # woken by a QS that did not finish the GP: wait out the timer
                self._place_kthread()
                if self.trace is not None:
                    self.trace.fqs()
                k = self.kthread_cpu
                urgent = env.now - start > self.sched_qs
                for c in cpus:
                    if not c.qs_pending:
                        continue
                    in_eqs = c.idle and c is not k
                    if first:
                        # dyntick_save_progress_counter
                        c.dyn_snap = c.eqs
                        if in_eqs:
                            self.report_qs(c)
                    elif in_eqs or c.eqs != c.dyn_snap:
                        # rcu_implicit_dynticks_qs
                        self.report_qs(c)
                    elif urgent:
                        c.urgent_qs = True
                self._kthread_ran()
                first = False
                wait = self.next_fqs
            # rcu_gp_cleanup
            self.completed += 1
            self.gp_active = False
            self.seq += 1
            self._gp_wake = None
            length = env.now - start
            self.gp_length.add(length)
            if len(self.gp_spans) < MAX_GP_SPANS:
                self.gp_spans.append((start, env.now))
            if self.trace is not None:
                self.trace.gp(self.completed, start, env.now)
            self._place_kthread()
            self._note(self.kthread_cpu)
            for c in cpus:
                if c.offloaded and c.cbs.n:
                    self._nocb_gp_cleanup(c)

    def _nocb_gp_cleanup(self, cpu: CPU) -> None:
        """rcuog woken at GP end: advance; rcuo invokes what is ready (``nocb_cb_wait``)."""
        cbs = cpu.cbs
        cbs.advance(self.completed)
        need = cbs.accelerate(self._snap())
        if need > self.completed:
            self._request(need, cpu)
        if cbs.done and not cpu.softirq_running:
            cpu.softirq_running = True
            self.env.process(self._invoke(cpu))

    # -- the scheduler tick -------------------------------------------------------------------
    def _ticker(self):
        """One process ticks every CPU at each jiffy, and sleeps while RCU has nothing to do."""
        env = self.env
        jiffy = self.jiffy
        while True:
            if not (self.gp_active or self.tick_cbs):
                self._tick_wake = Event(env)
                yield self._tick_wake
            now = env.now
            yield Timeout(env, (now // jiffy + 1) * jiffy - now)
            self._tick()

    def _tick(self) -> None:
        """``rcu_sched_clock_irq`` on every CPU that takes the tick."""
        seq = self.seq
        active = self.gp_active
        kernel_qs = self.kernel_tick_qs
        if self.trace is not None:
            self.trace.backlog(self.pending)
        cpus = self.cpus
        if not EAGER_SCANS:
            # Only CPUs not idle or holding callbacks take the tick (the test below): visit
            # those alone, in CPU order as the full scan does.
            ids = self.awake | self.cb_cpus
            if len(ids) < len(cpus):
                cpus = [cpus[i] for i in sorted(ids)]
        for c in cpus:
            cbs = c.cbs
            has_cbs = cbs.n and not c.offloaded
            if c.idle and not has_cbs:
                continue  # NO_HZ: an idle CPU with no callbacks takes no tick
            # rcu_flavor_sched_clock_irq: user mode and idle are QSes; kernel code outside a
            # reader is one on the preemptible flavour (or with the fix).
            urged = False
            if c.no_qs:
                if c.owner is None or (c.nesting == 0 and kernel_qs):
                    c.no_qs = False
                elif c.urgent_qs and c.nesting == 0:
                    urged = True
            # rcu_pending
            if (
                c.gp_seq != seq
                or (c.core_needs_qs and not c.no_qs and active)
                or (has_cbs and (cbs.done or (not active and (cbs.next or cbs.ready))))
            ):
                self._core(c)
            if urged:
                # rcu_sched_clock_irq only set need_resched (rcu_urgent_qs): the QS is the
                # context switch of the task's next cond_resched, after this tick's
                # rcu_pending, so rcu_core reports it at the next tick (rcu_all_qs, !PREEMPT).
                c.no_qs = False

    def _core(self, c: CPU) -> None:
        """``rcu_core`` on ``c`` (in its RCU_SOFTIRQ, here at the tick's irq exit)."""
        self._note(c)
        if c.core_needs_qs and not c.no_qs and self.gp_active:
            # rcu_report_qs_rdp
            c.core_needs_qs = False
            if c.qs_pending:
                if not c.offloaded and c.cbs.n:
                    self._accelerate(c)
                self.report_qs(c)
        if c.offloaded:
            return
        cbs = c.cbs
        if not self.gp_active and (cbs.next or cbs.ready):
            self._accelerate(c)
        if cbs.done:
            self.raise_softirq(c)

    def raise_softirq(self, c: CPU) -> None:
        """Invoke ``c``'s ready callbacks now, or when its ``_bh``/IRQs-off section ends."""
        if c.softirq_running:
            return
        if c.bh or c in self.machine.irqs_off:
            c.softirq_deferred = True
            return
        c.softirq_running = True
        self.env.process(self._invoke(c))

    def _invoke(self, cpu: CPU):
        """RCU_SOFTIRQ on ``cpu`` (``__do_softirq`` → ``rcu_core`` → ``rcu_do_batch``), or the
        rcuo kthread of an offloaded CPU.

        One batch per softirq run; ``rcu_do_batch`` raises the softirq again while callbacks
        are ready, and ``__do_softirq`` restarts at most ``MAX_SOFTIRQ_RESTART`` (10) times
        within ``MAX_SOFTIRQ_TIME`` (2 ms, in jiffies: until the jiffy counter reaches
        ``jiffies + msecs_to_jiffies(2)``) and while ``need_resched()`` is false
        (kernel/softirq.c, v6.6); past that it wakes the CPU's ksoftirqd (``wakeup_softirqd``),
        a normal task that runs the rest when the scheduler picks it (``run_ksoftirqd``). The
        budget applies on machines with a scheduler (closed-loop workloads), where ksoftirqd
        is a task; without one every batch runs here, as softirq time.
        """
        env = self.env
        cbs = cpu.cbs
        tr = cpu.trace
        if tr is not None:
            tr.softirq_begin(cpu)
        sched = cpu.sched
        budget = sched is not None and not cpu.offloaded
        if budget:
            j = self.jiffy
            end = env.now // j + self.softirq_jiffies
            restarts = MAX_SOFTIRQ_RESTART
        while cbs.done:
            yield from self._batch(cpu, True)
            if budget and cbs.done:
                restarts -= 1
                if not restarts or env.now // j >= end or cpu.resched:
                    if tr is not None:
                        tr.softirq_end(cpu)
                    cpu.softirq_running = False
                    self.ksoftirqd_wakeups += 1
                    # the softirq budget applies only on a machine with a scheduler
                    sched.wake_ksoftirqd(cpu)  # type: ignore[union-attr]
                    return
        if tr is not None:
            tr.softirq_end(cpu)
        cpu.softirq_running = False

    def run_ksoftirqd(self, cpu: CPU):
        """``run_ksoftirqd`` (generator), run by ``cpu``'s ksoftirqd task owning ``cpu``: each
        ``__do_softirq`` with its own budget, then ``cond_resched``; until no callback is
        ready. A softirq raised meanwhile (a tick's irq exit) does not run inline while
        ksoftirqd is serving one; while ksoftirqd only waits for the CPU it does (v6.6, after
        the revert of "softirq: Let ksoftirqd do its job")."""
        env = self.env
        cbs = cpu.cbs
        j = self.jiffy
        tr = cpu.trace
        while cbs.done and not cpu.softirq_running:
            cpu.softirq_running = True
            if tr is not None:
                tr.softirq_begin(cpu)
            end = env.now // j + self.softirq_jiffies
            restarts = MAX_SOFTIRQ_RESTART
            while True:
                self.ksoftirqd_callbacks += yield from self._batch(cpu, False)
                restarts -= 1
                if not cbs.done or not restarts or env.now // j >= end or cpu.resched:
                    break
            if tr is not None:
                tr.softirq_end(cpu)
            cpu.softirq_running = False
            if cbs.done:
                ev = cpu.sched.preempt_point(cpu)  # type: ignore[union-attr]  # cond_resched
                if ev is not None:
                    yield ev

    def _batch(self, cpu: CPU, inline: bool):
        """One ``rcu_do_batch`` (generator; returns how many callbacks it invoked).

        ``inline``: softirq time taken from whatever runs on ``cpu``; otherwise the time of
        the task owning ``cpu`` (ksoftirqd).
        """
        env = self.env
        cbs = cpu.cbs
        overhead = self.cb_overhead
        tr = cpu.trace
        # The divisor applies to the callbacks ready now (the DONE segment), not to all
        # the CPU's callbacks (rcu_segcblist_get_seglen(RCU_DONE_TAIL)).
        bl = max(cpu.blimit, len(cbs.done) >> RCU_DIVISOR)
        tlimit = self.batch_time if bl > BIG_BATCH else 0
        cost = 0
        k = 0
        done = cbs.done
        while done:
            func, arg, c_cost, t_queued = done.popleft()
            if tr is not None:
                tr.callback(cpu, func, arg, t_queued, env.now + cost, overhead + c_cost)
            k += 1
            cost += overhead + c_cost
            d0 = cpu.debt
            r = func(cpu, arg)
            # What the callback charged (freeing pages) is softirq time, not the owner's.
            cost += cpu.debt - d0
            cpu.debt = d0
            if r is not None:
                # A callback that must take a lock runs as a generator.
                yield Timeout(env, cost)
                if inline:
                    cpu.steal(cost)
                    # the callback's locks and charges go to the owner's debt directly: a
                    # fault's lookahead walk here must be on the slow path, where that debt
                    # is paid at the walk's end
                    cpu.end_lookahead()
                cpu.softirq_ns += cost
                cost = 0
                yield from r
            # Past the batch limit, stop unless the CPU is idle (nothing to hand it back
            # to); a big batch also stops at its time limit, checked every 32 callbacks.
            if k >= bl and not cpu.idle:
                break
            if tlimit and not (k & 31) and cost >= tlimit:
                break
        cbs.n -= k
        self.pending -= k
        if not cpu.offloaded:
            self.tick_cbs -= k
        self.invoked += k
        n = cbs.n
        if cpu.blimit >= DEFAULT_MAX_RCU_BLIMIT and n <= QLOWMARK:
            cpu.blimit = self.blimit
        if n == 0:
            cpu.qlen_last_fqs_check = 0
            self.cb_cpus.discard(cpu.id)
        elif n < cpu.qlen_last_fqs_check - self.qhimark:
            cpu.qlen_last_fqs_check = n
        if cost:
            yield Timeout(env, cost)
            if inline:
                cpu.steal(cost)
            cpu.softirq_ns += cost
        return k


@traced_as("rcu_barrier_callback")
def _barrier_cb(cpu: CPU, state: list) -> None:
    state[0] -= 1
    if state[0] == 0:
        state[1].succeed()
