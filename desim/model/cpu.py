"""Simulated CPUs: who runs where, in which mode, and how CPU time is charged.

A CPU is in one of three modes, as RCU sees them (kernel/rcu/tree.c, v6.6):

* **kernel**: a task owns it (``owner``) between ``acquire`` and ``release``;
* **user**: no kernel owner, but a *resident* task runs user code there (``enter_user``): a
  workload's think time. The scheduler tick keeps running and interrupts user mode, which RCU
  counts as a quiescent state (QS), but user mode is not an extended QS (no ``nohz_full``);
* **idle**: neither; NO_HZ idle, an extended quiescent state (EQS) that the grace-period
  kthread's force-quiescent-state scan notices (``eqs`` counts idle entries, like the
  dynticks counter).

A resident task enters the kernel with ``syscall`` and goes back with ``to_user``: that is
not a context switch (``rcu_note_context_switch`` is not called on return to user mode).
``release`` is one: the owner sleeps or exits, and RCU notes a QS (``RCU.context_switch``).
Another task taking a CPU in user mode preempts the resident task: also a context switch, and
the time it takes is lost to the resident's think time (``user_lost``), as is interrupt and
softirq time taken in user mode. Time while the resident is inside its own system call
(``ksys``, asleep there included) is not user time and is never counted lost
(tests/test_user_time.py). Two approximations remain: ``ksys`` is one slot, so with two
residents on one CPU (faults and ``kernel_work`` both with ``gaps: user``) time the other one
or a kworker takes can go uncounted; and a resident whose think time ends while a kworker holds
the CPU queues behind it, its remaining loss dropped (``syscall`` clears ``user_lost``). The
scheduler's tasks keep their own account (``Scheduler._take_lost``, ``desim.model.sched``).

CPU time is charged in one of four ways, each a named method:

* ``compute(ns)``: the owner spends ``ns`` now (an event), plus whatever it owes;
* ``charge(ns)``: the owner's own work accounted lazily (page allocation, constructor,
  ``call_rcu``, a lock's acquire): owed, paid at its next ``compute`` or ``pay``;
* ``steal(ns)``: interrupt or softirq time taken from whatever runs here: owed by a kernel
  owner, lost by a user-mode resident, nothing when idle;
* ``pay()``: settle what is owed, before taking a spinlock (``spin_lock``), so that time owed
  for work done before the lock is never spent holding it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from simpy.events import Event, Timeout

from desim.model.simcore import decided_at, ran_before, retarget, sleep, timeout

if TYPE_CHECKING:
    from desim.model.hooks import TraceHooks
    from desim.model.lock import SpinLock
    from desim.model.machine import Machine
    from desim.model.rcu import RCU, SegCBList
    from desim.model.sched import Scheduler, Task


class CPU:
    __slots__ = (
        "id",
        "machine",
        "env",
        "rcu",
        "owner",
        "runq",
        "users",
        "user_lost",
        "user_since",
        "ksys",
        "nesting",
        "debt",
        "idle",
        "eqs",
        "bh",
        "softirq_deferred",
        "gp_seq",
        "core_needs_qs",
        "no_qs",
        "qs_pending",
        "dyn_snap",
        "urgent_qs",
        "exp_need_qs",
        "cbs",
        "softirq_running",
        "offloaded",
        "bypass",
        "bypass_gen",
        "blimit",
        "qlen_last_fqs_check",
        "busy_since",
        "busy_ns",
        "softirq_ns",
        "ctx_switches",
        "trace",
        "sched",
        "curr",
        "locks",
        "kpreempt",
        "resched",
        "fault_work",
        "la_until",
        "la_end",
        "la_ev",
        "la_lock",
        "la_work",
        "la_stolen",
        "la_seq",
    )

    def __init__(self, machine: Machine, cpu_id: int) -> None:
        self.id = cpu_id
        self.machine = machine
        self.env = machine.env
        self.rcu: RCU  # the machine's RCU, set by RCU (made after the CPUs)
        self.owner: object | None = None
        self.runq: deque = deque()
        self.users = 0  # resident tasks running user code here between syscalls
        self.user_lost = 0  # ns taken from user mode (preemption, interrupts)
        self.user_since = -1  # when a non-resident task took the CPU from user mode
        self.ksys: object | None = None  # the resident task inside a system call (syscall..to_user)
        self.nesting = 0  # rcu_read_lock() depth of the running task
        self.debt = 0  # ns of CPU time owed by the current owner
        self.idle = True
        self.eqs = 0  # like the dynticks counter: bumps on each idle entry
        self.bh = 0  # softirqs disabled (spin_lock_bh) depth
        self.softirq_deferred = False  # RCU_SOFTIRQ raised inside a bh/IRQs-off section
        # RCU per-CPU state (struct rcu_data), kept by desim.model.rcu
        self.gp_seq = 0  # rdp->gp_seq: the GP state this CPU last noticed
        self.core_needs_qs = False  # rdp->core_needs_qs
        self.no_qs = False  # rdp->cpu_no_qs.b.norm: no QS since it noticed the GP
        self.qs_pending = False  # the GP still waits for this CPU (its rnp->qsmask bit)
        self.dyn_snap = 0  # rdp->dynticks_snap, taken by the first FQS scan
        self.urgent_qs = False  # rcu_urgent_qs: the GP is old, cond_resched reports
        self.exp_need_qs = False  # an expedited GP waits for this CPU (rcu_data.cpu_no_qs.b.exp)
        self.cbs: SegCBList  # the CPU's RCU callback list, set by RCU
        self.softirq_running = False
        self.offloaded = False  # callbacks offloaded to rcuo kthreads (rcu_nocbs)
        self.bypass: list = []  # nocb bypass list holding lazy callbacks
        self.bypass_gen = 0  # bumps at each flush (a stale lazy timer does nothing)
        self.blimit = 0  # rdp->blimit (set by RCU)
        self.qlen_last_fqs_check = 0
        self.busy_since = 0
        self.busy_ns = 0
        self.softirq_ns = 0
        self.ctx_switches = 0
        self.trace: TraceHooks | None = None  # set by the tracer when one is recording
        self.sched: Scheduler | None = None  # once a closed-loop workload made one
        self.curr: Task | None = None  # the scheduler's task running here (user or kernel mode)
        self.locks = 0  # spinlocks held or spun on: preempt_count's PREEMPT_MASK part
        self.kpreempt = False  # preempt=full: the scheduler's tasks are preempted in kernel code
        self.resched = False  # TIF_NEED_RESCHED of the current scheduler task
        self.fault_work: Callable[[], int]  # this CPU's fault_work sampler, set by the machine
        # A fault taking the lookahead (desim.model.mm_ops): its walk ends at la_until, its
        # ptl section at la_end, the event la_ev; la_lock is the ptl it holds from la_until.
        # Time stolen before la_until goes into the ptl section, as it would on the slow path
        # (la_stolen of it).
        self.la_until = -1
        self.la_end = -1
        self.la_ev: Event | None = None
        self.la_lock: SpinLock | None = None
        self.la_work = -1  # fault_work drawn but not yet used (a lookahead undone), or -1
        self.la_stolen = 0
        self.la_seq = -1  # the scheduling number of its walk's end (its section's end: + 1)

    def __repr__(self) -> str:
        return f"cpu{self.id}"

    # -- ownership -------------------------------------------------------------------------
    def acquire(self, task: object) -> Event | None:
        """Run ``task`` here in the kernel: ``None`` if it runs now, else an event for its turn.

        Taking the CPU from a user-mode resident preempts it: a context switch. A scheduler
        task coming back from a sleep in kernel code queues on the scheduler's run queue.
        """
        if self.sched is not None and task.__class__ is self.sched.task_class:
            return self.sched.resume_in_kernel(self, task)
        if self.owner is None:
            self.owner = task
            if self.idle:
                self.idle = False
                self.rcu.awake.add(self.id)
                self.busy_since = self.env.now
            elif self.users:
                if self.ksys is None:
                    # another task takes the CPU from user mode: the resident loses this time
                    # (not so while the resident sleeps inside a system call: it is not in
                    # user mode then, and waking there it takes its CPU back through here)
                    self.user_since = self.env.now
                self.rcu.context_switch(self)
            if self.trace is not None:
                self.trace.task_acquire(self, task, True)
            return None
        return self._enqueue(task)

    def _enqueue(self, task: object) -> Event:
        """``task`` waits behind the owner: the event that starts its turn."""
        ev = Event(self.env)
        self.runq.append((task, ev))
        if self.trace is not None:
            self.trace.task_acquire(self, task, False)
        return ev

    def release(self) -> None:
        """The owner sleeps or exits: a context switch, so a quiescent state."""
        self.ctx_switches += 1
        self.rcu.context_switch(self)
        # Time still owed when the owner leaves (an unlock's cost, softirq work that arrived
        # during its last slice) is forgiven rather than charged to the next task.
        self.debt = 0
        sched = self.sched
        if sched is not None and self.curr is not None and self.owner is self.curr:
            sched.sleep_in_kernel(self)  # the scheduler's task sleeps: others run
            return
        self._next()

    def _next(self) -> None:
        if self.runq:
            task, ev = self.runq.popleft()
            self.owner = task
            if task is self.ksys:
                # the resident enters (or is back in) its system call: its user mode ended,
                # what it lost before its syscall was dropped there
                self.user_since = -1
            if self.trace is not None:
                self.trace.task_switch(self, task)
            ev.succeed()
            return
        if self.trace is not None:
            self.trace.task_switch(self, None)
        self.owner = None
        if self.users:
            if self.user_since >= 0:
                self.user_lost += self.env.now - self.user_since
                self.user_since = -1
            return
        self.idle = True
        self.rcu.awake.discard(self.id)
        self.eqs += 1
        self.busy_ns += self.env.now - self.busy_since

    # -- a resident task's user mode ---------------------------------------------------------
    def enter_user(self) -> None:
        """A task starts living here, running user code between its system calls."""
        self.users += 1
        if self.idle and self.owner is None:
            self.idle = False
            self.rcu.awake.add(self.id)
            self.busy_since = self.env.now

    def leave_user(self) -> None:
        """The resident task stops living here (call with the CPU not owned by it)."""
        self.users -= 1
        if not self.users and self.owner is None:
            self.idle = True
            self.rcu.awake.discard(self.id)
            self.eqs += 1
            self.busy_ns += self.env.now - self.busy_since

    def syscall(self, task: object) -> Event | None:
        """The resident ``task`` enters the kernel (a fault, a system call): no context switch.

        ``None`` if it runs now, else an event: another task holds the CPU and the resident
        waits its turn. Time lost to others before this point is already behind it.
        """
        self.user_lost = 0
        self.ksys = task
        if self.owner is None:
            self.owner = task
            if self.trace is not None:
                self.trace.task_acquire(self, task, True)
            return None
        return self._enqueue(task)

    def to_user(self) -> None:
        """The owner, a resident task, returns to user mode: not a context switch, unless
        another task waits, which then preempts it on the way out (``need_resched``)."""
        self.debt = 0
        self.ksys = None
        if self.exp_need_qs:
            # An expedited GP's IPI set need_resched on a non-preemptible kernel: the way
            # back to user mode schedules, and rcu_qs reports (rcu_exp_handler, !PREEMPT).
            self.rcu.context_switch(self)
        if self.runq:
            self.ctx_switches += 1
            self.rcu.context_switch(self)
            self.user_since = self.env.now
            self._next()
            return
        if self.trace is not None:
            self.trace.task_switch(self, None)
        self.owner = None
        self.user_since = -1

    def user_time_lost(self) -> int:
        """ns the resident's user code lost since it last looked (it must run that much more)."""
        lost = self.user_lost
        self.user_lost = 0
        return lost

    # -- charging CPU time ----------------------------------------------------------------------
    def compute(self, ns: int) -> Event:
        """Spend ``ns`` of CPU time now as the owner, plus whatever it owes.

        Under ``sched.preempt: full`` a scheduler task's kernel code is preemptible outside
        spinlocks, bh and IRQs-off sections: the step may then last longer than ``ns`` (it
        resumes where it was when the task runs again; ``Scheduler.kernel_step``).
        """
        d = ns + self.debt
        self.debt = 0
        if self.kpreempt and self.owner is self.curr is not None and not self.softirq_running:
            # kpreempt is set only on a machine with a scheduler
            return self.sched.kernel_step(self, d)  # type: ignore[union-attr]
        return timeout(self.env, d)

    def charge(self, ns: int) -> None:
        """The owner's own work, accounted lazily: paid at its next ``compute`` or ``pay``."""
        self.debt += ns

    def pay(self) -> Timeout | None:
        """Settle what the owner owes now (an event), or ``None`` if nothing is owed."""
        d = self.debt
        if not d:
            return None
        self.debt = 0
        return timeout(self.env, d)

    def steal(self, ns: int) -> None:
        """Interrupt or softirq time taken from whatever runs here."""
        if self.owner is not None:
            if self.la_until >= self.env.now and self.in_lookahead_walk():
                self._delay_lookahead(ns)
            else:
                self.debt += ns
        elif self.users and self.ksys is None:
            # user mode (not a resident asleep inside its system call: no user time to lose)
            self.user_lost += ns

    def in_lookahead_walk(self) -> bool:
        """Whether a lookahead fault here is still in its walk: before its end, or at that
        instant in an event that would have run before the walk's end on the slow path."""
        t = self.la_until
        now = self.env.now
        return t > now or (t == now and ran_before(self.env, self.la_seq))

    def end_lookahead(self) -> None:
        """Put a fault whose lookahead walk is still on here back on the slow path, as if it
        had never looked ahead (``SpinLock._undo_lookahead``): for work about to change this
        CPU's debt other than by ``steal``, which on the slow path the walk's end would pay
        inside the ptl section (a softirq's callback that takes locks and charges, run on the
        owner's debt), and for a run that stops before the walk's end."""
        lock = self.la_lock
        if lock is not None and self.la_until >= self.env.now and self.in_lookahead_walk():
            lock._undo_lookahead(self)

    def _delay_lookahead(self, ns: int) -> None:
        """Time stolen during a lookahead fault's walk: the slow path would have owed it at the
        walk's end and paid it inside the ptl section, so that section ends ``ns`` later."""
        self.la_end += ns
        self.la_stolen += ns
        ev = decided_at(self.env, self.la_end - self.env.now, self.la_seq + 1)
        retarget(self.la_ev, ev)  # type: ignore[arg-type]  # set with la_until
        self.la_ev = ev

    def spin_lock(self, lock, bh: bool = False):
        """Take spinlock ``lock`` (a generator): what is owed is paid first, outside the lock.

        ``bh``: ``spin_lock_bh``, softirqs stay off until ``spin_unlock``.
        """
        d = self.debt
        if d:
            self.debt = 0
            yield sleep(self.env, d)
        if bh:
            self.bh += 1
        ev = lock.acquire(self)
        if ev is not None:
            yield ev

    def spin_unlock(self, lock, bh: bool = False) -> None:
        lock.release(self)
        if bh:
            self.local_bh_enable()

    def local_bh_enable(self) -> None:
        """Softirqs back on: one raised meanwhile runs now (``local_bh_enable``)."""
        self.bh -= 1
        if not self.bh and self.softirq_deferred:
            self.softirq_deferred = False
            self.rcu.raise_softirq(self)

    # -- RCU read side ----------------------------------------------------------------------
    def rcu_read_lock(self) -> None:
        self.nesting += 1
        if self.trace is not None and self.nesting == 1:
            self.trace.read_lock(self)

    def rcu_read_unlock(self) -> None:
        n = self.nesting - 1
        if n < 0:
            raise RuntimeError(f"cpu{self.id}: rcu_read_unlock without rcu_read_lock")
        self.nesting = n
        if n == 0:
            rcu = self.rcu
            if rcu.blocked and self.owner in rcu.blocked:
                rcu.read_unlock_special(self, self.owner)
            if self.exp_need_qs and rcu.preemptible:
                rcu.exp.report(self)  # rcu_read_unlock_special, preemptible kernels only
            if self.trace is not None:
                self.trace.read_unlock(self)

    def preempt(self, task: object):
        """The owner ``task`` is preempted (a generator): others queued here run first.

        On a preemptible kernel a reader may be preempted; it then blocks grace periods from
        the blocked-tasks list until its outermost ``rcu_read_unlock``. A non-preemptible
        kernel cannot preempt a reader (``rcu_read_lock`` disables preemption).
        """
        n = self.nesting
        self.rcu.preempt_task(self, task, n)
        self.nesting = 0
        self.ctx_switches += 1
        self.rcu.context_switch(self)
        self.debt = 0
        ev = Event(self.env)
        self.runq.append((task, ev))
        self._next()
        yield ev
        self.nesting = n

    def busy_fraction(self, now: int) -> float:
        busy = self.busy_ns + (0 if self.idle else now - self.busy_since)
        return busy / now if now else 0.0
