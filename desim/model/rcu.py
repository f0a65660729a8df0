"""Tree RCU for a non-preemptible kernel, at the level of detail page-table freeing needs.

What is modelled, and after which kernel behaviour (kernel/rcu/tree.c, v6.5-v6.7):

* Readers are ``CPU.rcu_read_lock/unlock``: a nesting count, no events.
* A grace period (GP) needs a quiescent state (QS) from every CPU after it began. A context
  switch notes a QS (``rcu_note_context_switch``), which the CPU reports at its next tick; a tick
  taken outside a read-side section reports one directly (``rcu_sched_clock_irq``); an idle CPU
  gets no ticks (NO_HZ) and is reported by the GP kthread's force-quiescent-state scan, which
  runs ``fqs_jiffies`` after the GP starts and then every ``fqs_jiffies`` (``rcu_gp_fqs_loop``,
  dynticks snapshot). The last QS wakes the kthread early. A GP older than
  ``sched_qs_jiffies`` lets kernel-bound CPUs report at their next tick (``rcu_urgent_qs``
  honoured by ``cond_resched``), so no CPU outside a reader holds a GP for ever.
* ``call_rcu`` appends to the CPU's NEXT segment. At the CPU's next tick the callbacks are
  *accelerated* (tagged with the GP number that must end first, ``rcu_accelerate_cbs``) and a GP
  is requested; after the GP ends the CPU's next tick *advances* them to DONE and raises the
  softirq, which invokes them in batches of ``blimit`` (no limit past ``qhimark`` queued, a batch
  cut after ``batch_time``), charging their CPU time to the CPU that queued them
  (``rcu_do_batch``). Callbacks queued on different CPUs are therefore not ordered.
* ``synchronize_rcu`` is a callback that wakes the sleeping caller (``wait_rcu_gp``);
  ``synchronize_rcu_expedited`` IPIs every non-idle CPU, and a CPU inside a reader reports at
  its outermost ``rcu_read_unlock``; ``rcu_barrier`` entrains a callback behind every CPU's list
  and waits for all of them, serialised by a mutex.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from simpy.events import Event, Timeout

from desim.model.lock import Mutex
from desim.model.stats import LogHistogram

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.machine import Machine

MAX_GP_SPANS = 100_000


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
        """Tag NEXT with GP ``snap``, merging into a segment already waiting for it.

        Returns the latest GP number any waiting callback needs (0 if none).
        """
        nxt = self.next
        if nxt:
            if not self.wait:
                self.wait, self.wait_gp = nxt, snap
            elif self.wait_gp >= snap:
                self.wait.extend(nxt)
            elif not self.ready:
                self.ready, self.ready_gp = nxt, snap
            else:
                # NEXT_READY waits for an earlier-or-equal GP: merging into it and retagging
                # with the later GP is what the kernel's segment merge amounts to.
                self.ready.extend(nxt)
                self.ready_gp = max(self.ready_gp, snap)
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
        t0 = env._now
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
            yield Timeout(env, costs.ipi_latency)
            for c in targets:
                c.steal(costs.ipi_handler)
                if c.nesting == 0:
                    self.left -= 1
                else:
                    c.exp_need_qs = True  # reported by the outermost rcu_read_unlock
            if self.left:
                yield self.done
            self.done = None
        self.count += 1
        self.mutex.release()
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        rcu.exp_latency.add(env._now - t0)

    def report(self, cpu: CPU) -> None:
        cpu.exp_need_qs = False
        self.left -= 1
        if self.left == 0 and self.done is not None:
            self.done.succeed()


def _wake(cpu: CPU, ev: Event) -> None:
    ev.succeed()


class RCU:
    """The grace-period machinery shared by all CPUs of a machine."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.env = env = machine.env
        cfg = machine.config
        self.cpus = machine.cpus
        self.jiffy = cfg.machine.jiffy_ns
        self.fqs_wait = cfg.rcu.effective_fqs_jiffies(cfg.machine.hz) * self.jiffy
        self.blimit = cfg.rcu.blimit
        self.qhimark = cfg.rcu.qhimark
        self.batch_time = cfg.rcu.batch_time
        self.tick_qs_in_kernel = cfg.rcu.tick_qs_in_kernel
        self.urgent_after = cfg.rcu.effective_sched_qs_jiffies(cfg.machine.hz) * self.jiffy
        self.cb_overhead = cfg.costs.rcu_callback
        for c in self.cpus:
            c.cbs = SegCBList()
        self.completed = 0          # number of GPs completed
        self.gp_active = False
        self.requested = 0          # highest GP number some callback needs
        self.qs_left = 0
        self.gp_start = 0
        self.pending = 0            # callbacks queued and not yet invoked
        self._gp_wake: Event | None = None
        self._tick_wake: Event | None = None
        self.barrier_mutex = Mutex(env)
        self.barrier_seq = 0        # rcu_state.barrier_sequence: odd while a barrier runs
        self.exp = Expedited(self)
        self.trace = None           # a desim.trace.Tracer when one is recording
        # statistics
        self.gp_length = LogHistogram()
        self.gp_spans: list[tuple[int, int]] = []
        self.sync_latency = LogHistogram()
        self.exp_latency = LogHistogram()
        self.barrier_latency = LogHistogram()
        self.queued = 0
        self.invoked = 0
        self.max_pending = 0
        env.process(self._gp_kthread())
        env.process(self._ticker())

    def histograms(self) -> tuple[LogHistogram, ...]:
        return self.gp_length, self.sync_latency, self.exp_latency, self.barrier_latency

    def clear_stats(self) -> None:
        for h in self.histograms():
            h.clear()
        self.gp_spans.clear()
        self.queued = self.invoked = 0
        self.max_pending = self.pending

    # -- update side --------------------------------------------------------------------------
    def call_rcu(self, cpu: CPU, func, arg, cost: int = 0) -> None:
        """Queue ``func(cpu, arg)`` to run after a grace period, on ``cpu``'s softirq."""
        cpu.cbs.next.append((func, arg, cost, self.env._now))
        if cpu.trace is not None:
            cpu.trace.call_rcu(cpu)
        cpu.cbs.n += 1
        self.queued += 1
        p = self.pending = self.pending + 1
        if p > self.max_pending:
            self.max_pending = p
        if self._tick_wake is not None:
            self._tick_wake.succeed()
            self._tick_wake = None

    def synchronize(self, cpu: CPU, task: object):
        """``synchronize_rcu``: the calling task sleeps (its CPU is freed) for a full GP."""
        t0 = self.env._now
        ev = Event(self.env)
        self.call_rcu(cpu, _wake, ev)
        cpu.release()
        yield ev
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        self.sync_latency.add(self.env._now - t0)

    def synchronize_expedited(self, cpu: CPU, task: object):
        return self.exp.synchronize(cpu, task)

    def barrier(self, cpu: CPU, task: object):
        """``rcu_barrier``: wait until every callback queued before the call has run."""
        env = self.env
        t0 = env._now
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
            self.barrier_latency.add(env._now - t0)
            return
        self.barrier_seq += 1
        state = [0, Event(env)]
        for c in self.cpus:
            if c.cbs.n:
                state[0] += 1
                self.call_rcu(c, _barrier_cb, state)
        if state[0]:
            self.machine.ipis_sent += state[0]
            yield state[1]
        self.barrier_seq += 1
        self.barrier_mutex.release()
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        self.barrier_latency.add(env._now - t0)

    # -- grace periods ------------------------------------------------------------------------
    def _snap(self) -> int:
        """The GP number that must complete for a callback queued now."""
        return self.completed + (2 if self.gp_active else 1)

    def _request(self, gp: int) -> None:
        if gp > self.requested:
            self.requested = gp
            if self._gp_wake is not None and not self.gp_active:
                self._gp_wake.succeed()
                self._gp_wake = None

    def report_qs(self, cpu: CPU) -> None:
        if cpu.trace is not None:
            cpu.trace.qs(cpu)
        cpu.qs_pending = False
        cpu.passed_qs = False
        self.qs_left -= 1
        if self.qs_left == 0 and self._gp_wake is not None:
            self._gp_wake.succeed()
            self._gp_wake = None

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
        while True:
            if self.requested <= self.completed:
                self._gp_wake = Event(env)
                yield self._gp_wake
                continue
            # rcu_gp_init: every CPU owes a QS from now on.
            self.gp_active = True
            self.gp_start = env._now
            for c in cpus:
                c.qs_pending = True
                c.passed_qs = False
                c.dyn_snap = c.idle_entries
            self.qs_left = len(cpus)
            while self.qs_left:
                ev = self._gp_wake = Event(env)
                Timeout(env, self.fqs_wait).callbacks.append(self._fqs_timer(ev))
                yield ev
                if not self.qs_left:
                    break
                if self.trace is not None:
                    self.trace.fqs()
                # Force quiescent states: a CPU idle now, or idle at some point since the GP
                # began, is in or has passed an extended QS.
                for c in cpus:
                    if c.qs_pending and (c.idle or c.idle_entries != c.dyn_snap):
                        self.report_qs(c)
            # rcu_gp_cleanup
            self.completed += 1
            self.gp_active = False
            self._gp_wake = None
            length = env._now - self.gp_start
            self.gp_length.add(length)
            if len(self.gp_spans) < MAX_GP_SPANS:
                self.gp_spans.append((self.gp_start, env._now))
            if self.trace is not None:
                self.trace.gp(self.completed, self.gp_start, env._now)

    # -- the scheduler tick -------------------------------------------------------------------
    def _ticker(self):
        """One process ticks every CPU at each jiffy, and sleeps while RCU has nothing to do."""
        env = self.env
        jiffy = self.jiffy
        while True:
            if not (self.gp_active or self.pending):
                self._tick_wake = Event(env)
                yield self._tick_wake
            now = env._now
            yield Timeout(env, (now // jiffy + 1) * jiffy - now)
            self._tick()

    def _tick(self) -> None:
        completed = self.completed
        snap = completed + (2 if self.gp_active else 1)
        # Past jiffies_till_sched_qs the GP sets rcu_urgent_qs: a kernel-bound CPU then reports
        # at its next cond_resched(), which we place at its next tick.
        in_kernel_ok = self.tick_qs_in_kernel or (
            self.gp_active and self.env._now - self.gp_start >= self.urgent_after)
        if self.trace is not None:
            self.trace.backlog(self.pending)
        for c in self.cpus:
            cbs = c.cbs
            if c.idle and not cbs.n:
                continue  # NO_HZ: an idle CPU with no callbacks takes no tick
            if c.qs_pending and (c.passed_qs or (c.nesting == 0 and (c.idle or in_kernel_ok))):
                self.report_qs(c)
            if cbs.n:
                cbs.advance(completed)
                need = cbs.accelerate(snap)
                if need > completed:
                    self._request(need)
                if cbs.done and not c.softirq_running:
                    c.softirq_running = True
                    self.env.process(self._softirq(c))

    def _softirq(self, cpu: CPU):
        """RCU_SOFTIRQ on ``cpu``: invoke DONE callbacks in batches (``rcu_do_batch``)."""
        env = self.env
        cbs = cpu.cbs
        overhead = self.cb_overhead
        tr = cpu.trace
        if tr is not None:
            tr.softirq_begin(cpu)
        while cbs.done:
            limit = len(cbs.done) if cbs.n > self.qhimark else self.blimit
            budget = self.batch_time
            cost = 0
            k = 0
            done = cbs.done
            while done and k < limit and cost < budget:
                func, arg, c_cost, t_queued = done.popleft()
                if tr is not None:
                    tr.callback(cpu, func, arg, t_queued, env._now + cost, overhead + c_cost)
                k += 1
                cost += overhead + c_cost
                r = func(cpu, arg)
                if r is not None:
                    # A callback that must take a lock runs as a generator.
                    yield Timeout(env, cost)
                    cpu.steal(cost)
                    cpu.softirq_ns += cost
                    cost = 0
                    yield from r
            cbs.n -= k
            self.pending -= k
            self.invoked += k
            if cost:
                yield Timeout(env, cost)
                cpu.steal(cost)
                cpu.softirq_ns += cost
        if tr is not None:
            tr.softirq_end(cpu)
        cpu.softirq_running = False


def _barrier_cb(cpu: CPU, state: list) -> None:
    state[0] -= 1
    if state[0] == 0:
        state[1].succeed()
