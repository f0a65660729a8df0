"""The CPU scheduler of closed-loop workloads: run queues, slices, wake-up placement.

Made on first use by an element that needs it (``scheduler(m)``), so runs without one pay
nothing. What is modelled, and after which kernel code (Linux v6.6):

* **Tasks and run queues.** A ``Task`` is a process the scheduler places: at most one per CPU
  is current (``cpu.curr``, ``rq->curr``), the others wait FIFO on the CPU's run queue. With
  every task of equal weight and the same slice, EEVDF's pick of the eligible entity with the
  earliest virtual deadline (kernel/sched/fair.c ``pick_eevdf``) serves them in turn, which is
  what the FIFO does. A current task runs user code (``run_user``: the CPU is in user mode for
  RCU, a *resident* in ``desim.model.cpu``'s terms) or kernel code (it owns the CPU, entered by
  ``cpu.syscall``, left by ``cpu.to_user``).
* **Kernel work competes for the same CPUs.** Kernel threads and softirqs (khugepaged, RCU
  callbacks, the open-loop elements' tasks) take a CPU with ``cpu.acquire`` ahead of the
  current task's user code, which loses that time and runs that much longer; a current task
  entering the kernel queues behind them (``cpu.syscall``).
* **Slices and the tick** (``sched_tick`` → ``task_tick_fair`` → ``entity_tick`` →
  ``update_curr`` → ``update_deadline``: once a task used its slice, ``resched_curr`` if another
  is runnable). A tick event exists on a CPU only while a slice can expire there: it is armed
  when a second task becomes runnable, at the first jiffy boundary at or after the current
  task's slice end, not every jiffy. A task in user mode is switched out at that tick; one in
  kernel code gets ``need_resched`` (``cpu.resched``) and what follows depends on the
  preemption model below.
* **The preemption model** (``sched.preempt``: the ``preempt=`` of a PREEMPT_DYNAMIC kernel,
  kernel/sched/core.c ``sched_dynamic_mode``/``sched_dynamic_update``). Its default follows
  the Kconfig choice (kernel/Kconfig.preempt); Debian-family x86 kernels build
  PREEMPT_DYNAMIC with PREEMPT_VOLUNTARY, hence ``voluntary``, over preemptible RCU (the
  build is PREEMPTION). ``none`` and ``voluntary``: kernel code switches only when it sleeps
  or on its way back to user mode (``exit_to_user_mode_loop``); the ``cond_resched`` /
  ``might_resched`` points inside long kernel loops are not modelled (desim's kernel steps
  last microseconds). ``full`` (``preempt_schedule`` and ``irqentry_exit_cond_resched`` on):
  a task in a kernel step (``CPU.compute``, a fault's page-table walk) is switched out in
  place by the tick or a wake-up, and resumes the step's rest when it runs again; under a
  spinlock, ``_bh`` section, IRQs off or in a softirq (``preemptible()`` false) the switch
  waits for the next ``preempt_enable``: the next kernel step, or the fault's ptl unlock,
  which is inside its RCU reader (``pte_unmap_unlock``). A task preempted inside an RCU
  reader goes on the blocked-tasks list (``_leave_in_kernel``); ``full`` needs the
  preemptible flavour (PREEMPTION selects PREEMPT_RCU). A task preempted in kernel code
  stays on its CPU's run queue (``newidle_balance`` does not pull it).
  Kernel work outside the scheduler (kthreads taking a CPU with ``cpu.acquire``) is not
  preempted.
* **Wake-up preemption** (``check_preempt_wakeup``, EEVDF with ``RUN_TO_PARITY`` in v6.6;
  ``_wakeup_preempts``): a task woken onto a CPU whose current task runs alone preempts it
  once that task has used its first slice and the woken task's virtual deadline is not later
  (equal weights, zero lag). A woken task joining a non-empty run queue waits in turn.
* **Context switches** (``__schedule``, ``context_switch``, ``finish_task_switch``): each one is
  an RCU quiescent state (``rcu_note_context_switch``) on both flavours; switching between two
  tasks costs ``sched.switch_cost`` of CPU time, taken from the incoming task. A task sleeping
  in kernel code (a sleeping lock, ``synchronize_rcu``) releases its CPU to the next runnable
  task (``CPU.release`` calls ``sleep_in_kernel``) and, when woken, queues again on the same
  CPU (its kernel code continues there).
* **Wake-up placement** (``try_to_wake_up`` → ``select_task_rq_fair``; ``wake_up_new_task`` at
  fork, ``find_idlest_cpu``): with ``wake_affine`` the previous CPU if it is idle
  (``select_idle_sibling``), else the first idle CPU allowed, else the least loaded one (fewest
  runnable tasks). A task's ``allowed`` CPUs are its affinity mask (``sched_setaffinity``).
  A CPU about to go idle pulls the first waiting task of the busiest run queue
  (``newidle_balance``), so no CPU idles while a task it may run waits. Periodic load
  balancing (``rebalance_domains`` from the tick) is not modelled. What that costs: with
  more runnable tasks than CPUs, run queues may stay uneven while every CPU is busy (a task
  waits behind two others on one CPU while another CPU has none waiting), so the run-queue
  wait's spread and tail are overstated there; throughput is not, since no CPU idles while a
  task it may run waits. A task preempted in kernel code stays on its CPU until it runs.
"""

from __future__ import annotations

from collections import deque
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from simpy.events import Event, Timeout

from desim.model.stats import LogHistogram

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.machine import Machine

RUNNABLE, RUNNING, BLOCKED, DEAD = range(4)

# Tests only: ``_pull`` scans every run queue even when the count of waiting tasks says all are
# empty (the lazy path must give the same run).
EAGER_PULL = False


class Task:
    """A schedulable process (``task_struct``)."""

    __slots__ = (
        "id",
        "cpu",
        "prev",
        "allowed",
        "state",
        "ev",
        "gen",
        "in_burst",
        "kernel_resume",
        "wait_since",
        "name",
        "kev",
        "kend",
        "krem",
        "knest",
        "kdebt",
    )

    def __init__(self, tid: int, name: str, allowed: list | None) -> None:
        self.id = tid
        self.name = name
        self.cpu: CPU  # where it is placed: set by ``_enqueue`` before it first runs
        self.prev: CPU | None = None  # the CPU it last ran on (wake-affine)
        self.allowed = allowed  # CPUs it may run on (None: all)
        self.state = RUNNABLE
        self.ev: Event | None = None  # what its process waits on
        self.gen = 0  # bumps at each preemption: a stale burst timer
        self.in_burst = False  # running user code in ``run_user``
        self.kernel_resume = False  # woken from a sleep in kernel code
        self.wait_since = -1  # when it became runnable (run-queue wait)
        # preempt=full: a kernel step in progress (``kernel_step``) and, while the task is
        # preempted in kernel code, what it resumes with
        self.kev: Event | None = None  # fires when the step's CPU time has been spent
        self.kend = 0  # when the step ends if the task keeps its CPU
        self.krem = -1  # CPU time of the step left (-1: not preempted inside a step)
        self.knest = 0  # its RCU read-side depth (rcu_read_lock_nesting)
        self.kdebt = 0  # CPU time it owed

    def __repr__(self) -> str:
        return f"{self.name}[{self.id}]"


class RunQueue:
    __slots__ = ("queue", "tick_armed", "run_start", "deadline")

    def __init__(self) -> None:
        self.queue: deque[Task] = deque()
        self.tick_armed = False
        self.run_start = 0  # when the current task got the CPU (its slice)
        self.deadline = 0  # the current task's deadline, as CPU time (``_deadline``)


class Scheduler:
    # The class CPU.acquire tells the scheduler's tasks by, without importing this module.
    task_class: ClassVar[type[Task]] = Task

    def __init__(self, m: Machine) -> None:
        cfg = m.config.sched
        self.m = m
        self.env = m.env
        self.cpus = m.cpus
        self.rcu = m.rcu
        self.slice = cfg.effective_slice(len(m.cpus))
        self.switch_cost = cfg.switch_cost
        self.wake_affine = cfg.wake_affine
        self.full = cfg.preempt == "full"
        self.wakeup_preempt = cfg.wakeup_preemption
        self.irqs_off = m.irqs_off
        self.jiffy = m.config.machine.jiffy_ns
        self.rqs = [RunQueue() for _ in m.cpus]
        self._ksoftirqd: dict[int, Event] = {}  # CPU id -> its ksoftirqd's next wake-up
        self.waiting = 0  # tasks on all run queues: none, no CPU can pull
        self.next_id = 0
        self._rot = 0
        # statistics
        self.rq_wait = LogHistogram()
        self.switches = 0
        self.preemptions = 0
        self.kernel_preemptions = 0
        self.reader_preemptions = 0
        self.wakeup_preemptions = 0
        self.ticks = 0
        self.t_stats = 0
        for c in m.cpus:
            c.sched = self
            c.kpreempt = self.full
        m.result_hooks.append(self.results)
        m.clear_hooks.append(self.clear_stats)

    # -- tasks --------------------------------------------------------------------------------
    def new_task(self, name: str = "task", allowed: list | None = None) -> Task:
        t = Task(self.next_id, name, allowed)
        self.next_id += 1
        return t

    def start(self, task: Task):
        """``wake_up_new_task``: place a new task (generator: returns once it runs)."""
        self._wake(task, new=True)
        yield from self._wait_turn(task)

    def _wait_turn(self, task: Task):
        if task.cpu.curr is not task:
            ev = task.ev = Event(self.env)
            yield ev

    def sleep(self, task: Task, ev: Event):
        """The current ``task``, in user mode, sleeps until ``ev`` (``wait4``, a pipe read);
        woken, it is placed again (``try_to_wake_up``) and returns once it runs."""
        cpu = task.cpu
        task.state = BLOCKED
        self._switch_out(cpu, requeue=False)
        yield ev
        self._wake(task, new=False)
        yield from self._wait_turn(task)

    def exit(self, task: Task) -> None:
        """``do_task_dead``: the task, in kernel mode on its CPU, switches out for good."""
        cpu = task.cpu
        cpu.release()  # a context switch; sleep_in_kernel hands the CPU on
        task.state = DEAD

    def run_user(self, task: Task, ns: int):
        """The current ``task`` runs ``ns`` of user code (generator), preempted at slice ends
        and delayed by whatever kernel work takes its CPU meanwhile."""
        env = self.env
        slice_ = self.slice
        while True:
            cpu = task.cpu
            rq = self.rqs[cpu.id]
            if rq.queue and cpu.owner is None and (cpu.resched or env.now - rq.run_start >= slice_):
                # need_resched, set by a tick or a wake-up while this task was in the kernel,
                # is honoured on the way back to user mode (exit_to_user_mode_loop).
                self.preemptions += 1
                self._switch_out(cpu, requeue=True)
                yield from self._wait_turn(task)
                continue
            if ns <= 0:
                return
            t0 = env.now
            ev = task.ev = Event(env)
            task.in_burst = True
            Timeout(env, ns).callbacks.append(partial(self._burst_end, task, task.gen))
            lost = yield ev
            task.in_burst = False
            if lost is None:
                # The burst's time has passed: what kernel work took meanwhile is still owed.
                ns = self._take_lost(task.cpu)
                continue
            ns -= env.now - t0 - lost  # preempted at a tick: the rest comes later
            yield from self._wait_turn(task)

    def _burst_end(self, task: Task, gen: int, _ev) -> None:
        if task.gen != gen:
            return  # the task was preempted meanwhile: this timer is stale
        ev: Event = task.ev  # type: ignore[assignment]  # set while its burst timer is live
        task.ev = None
        ev.succeed(None)

    @staticmethod
    def _take_lost(cpu: CPU) -> int:
        """User time the current task lost to kernel work so far (and from now on, if kernel
        work holds the CPU right now)."""
        lost = cpu.user_lost
        cpu.user_lost = 0
        if cpu.owner is not None and cpu.user_since >= 0:
            now = cpu.env.now
            lost += now - cpu.user_since
            cpu.user_since = now
        return lost

    # -- placement --------------------------------------------------------------------------------
    def select_cpu(self, task: Task, new: bool) -> CPU:
        """``select_task_rq_fair``: an idle CPU if any (the previous one first when waking with
        ``wake_affine``), else the least loaded allowed CPU."""
        cpus = task.allowed or self.cpus
        rqs = self.rqs
        prev = task.prev
        if (
            not new
            and self.wake_affine
            and prev is not None
            and prev.curr is None
            and prev.owner is None
            and not rqs[prev.id].queue
            and (task.allowed is None or prev in cpus)
        ):
            return prev
        k = len(cpus)
        start = self._rot % k
        self._rot = start + 1
        best = None
        best_load = 1 << 30
        for j in range(k):
            c = cpus[(start + j) % k]
            load = len(rqs[c.id].queue) + (c.curr is not None)
            if load == 0 and c.owner is None:
                return c
            if load < best_load:
                best, best_load = c, load
        return best  # type: ignore[return-value]  # the first CPU sets it (load < 1 << 30)

    def _wake(self, task: Task, new: bool) -> None:
        task.state = RUNNABLE
        cpu = self.select_cpu(task, new)
        self._enqueue(cpu, task, new)

    def _enqueue(self, cpu: CPU, task: Task, new: bool = False) -> None:
        task.cpu = cpu
        task.wait_since = self.env.now
        if cpu.curr is None:
            self._dispatch(cpu, task, replacing=False)
            return
        rq = self.rqs[cpu.id]
        alone = not rq.queue
        rq.queue.append(task)
        self.waiting += 1
        if alone and self.wakeup_preempt and self._wakeup_preempts(rq, new):
            self.wakeup_preemptions += 1
            self._resched(cpu, cpu.curr)
            if cpu.curr is task:
                return  # it took the CPU at once
        if not rq.tick_armed:
            self._arm(cpu, rq)

    def _wakeup_preempts(self, rq: RunQueue, new: bool) -> bool:
        """``check_preempt_wakeup`` (kernel/sched/fair.c, v6.6 EEVDF): does a task woken onto
        a CPU whose current task runs alone preempt it?

        ``pick_eevdf`` decides. With ``RUN_TO_PARITY`` (commit "sched/eevdf: Curb
        wakeup-preemption", v6.6) a current task keeps the CPU until its first deadline after
        it was picked (one slice of CPU time). Past it, the current task's deadline has been
        pushed by a slice at each tick that found it passed (``update_deadline``, and once more
        by the ``update_curr`` of this wake-up), and the woken task, placed at the average
        vruntime with no lag, asks for a slice (half of one when new: ``PLACE_DEADLINE_INITIAL``):
        the earlier virtual deadline runs, the woken task on a tie. Equal weights are assumed,
        and a woken task's lag from before its sleep is taken as zero.
        """
        now = self.env.now
        slice_ = self.slice
        if now - rq.run_start < slice_:
            return False
        d = self._deadline(rq, now)
        if d <= now:
            return True  # update_curr pushes it to now + slice: the woken task ties or wins
        return now + (slice_ // 2 if new else slice_) <= d

    def _deadline(self, rq: RunQueue, now: int) -> int:
        """The deadline of a current task that ran alone, as the ticks up to ``now`` left it
        (``update_deadline`` at the first tick past each deadline: that tick + a slice)."""
        d = rq.deadline
        j = self.jiffy
        while True:
            t = -(-d // j) * j
            if t >= now:
                break
            d = t + self.slice
        rq.deadline = d
        return d

    def _resched(self, cpu: CPU, task: Task) -> None:
        """``resched_curr``: ``task``, current on ``cpu``, switches at its next chance: at once
        in user mode (the reschedule IPI returns through ``schedule``), and in kernel code at
        once or at the next ``preempt_enable`` under ``preempt: full``, else on its way back to
        user mode."""
        cpu.resched = True
        if cpu.owner is None:
            if task.in_burst:
                self._preempt_user(cpu, task)
        elif cpu.owner is task and task.kev is not None and self._preemptible(cpu):
            self._preempt_step(cpu, task)

    def resume_in_kernel(self, cpu: CPU, task: Task):
        """``cpu.acquire`` by a task woken from a sleep in kernel code: it queues on ``cpu``.

        ``None`` if it runs now, else an event for its turn.
        """
        task.kernel_resume = True
        task.state = RUNNABLE
        task.ev = None
        if cpu.curr is None:
            task.cpu = cpu
            task.wait_since = self.env.now
            self._dispatch(cpu, task, replacing=False)
            if cpu.owner is task:
                return None
            ev = task.ev
            task.ev = None
            return ev
        ev = task.ev = Event(self.env)
        self._enqueue(cpu, task)
        return ev

    # -- switching ----------------------------------------------------------------------------------
    def _dispatch(self, cpu: CPU, task: Task, replacing: bool) -> None:
        """``task`` becomes current on ``cpu`` (the second half of ``__schedule``)."""
        now = self.env.now
        rq = self.rqs[cpu.id]
        rq.run_start = now
        rq.deadline = now + self.slice
        cpu.resched = False
        self.rq_wait.add(now - task.wait_since)
        task.wait_since = -1
        task.cpu = cpu
        task.state = RUNNING
        cpu.curr = task
        self.switches += 1
        if not replacing:
            cpu.enter_user()  # a resident: user mode unless it owns the CPU
        cpu.user_lost = 0
        cpu.user_since = now if cpu.owner is not None else -1
        cpu.ksys = task if task.kernel_resume else None  # back inside its system call, or not
        ev = task.ev
        if task.kernel_resume:
            task.kernel_resume = False
            if cpu.owner is None:
                cpu.owner = task
                if ev is not None:
                    task.ev = None
                    ev.succeed()
            else:
                if ev is None:
                    ev = task.ev = Event(self.env)
                cpu.runq.append((task, ev))  # behind the kernel work holding the CPU
            cpu.user_since = -1
        elif ev is not None:
            task.ev = None
            ev.succeed()
        if self.switch_cost and replacing:
            cpu.steal(self.switch_cost)
        if rq.queue and not rq.tick_armed:
            self._arm(cpu, rq)

    def _switch_out(self, cpu: CPU, requeue: bool, qs: bool = True) -> None:
        """The current task leaves ``cpu`` (preempted, sleeping or dead); the next one runs."""
        prev: Task = cpu.curr  # type: ignore[assignment]  # only a current task switches out
        cpu.resched = False
        if qs:
            cpu.ctx_switches += 1
            self.rcu.context_switch(cpu)
        prev.prev = cpu
        rq = self.rqs[cpu.id]
        cpu.curr = None
        if requeue:
            prev.state = RUNNABLE
            prev.wait_since = self.env.now
            rq.queue.append(prev)
            self.waiting += 1
        if rq.queue:
            self.waiting -= 1
            self._dispatch(cpu, rq.queue.popleft(), replacing=True)
            return
        task = self._pull(cpu)
        if task is not None:
            self._dispatch(cpu, task, replacing=True)
            return
        self.switches += 1  # to the idle task
        cpu.leave_user()

    def _pull(self, cpu: CPU) -> Task | None:
        """``newidle_balance``: a CPU about to idle takes the first waiting task of the busiest
        run queue that may run here (a task woken in kernel code stays where it slept)."""
        if not self.waiting and not EAGER_PULL:
            return None  # every run queue is empty: the scan below would find none
        rqs = self.rqs
        best = None
        for c in self.cpus:
            q = rqs[c.id].queue
            if q and (best is None or len(q) > len(best)):
                best = q
        if best is None:
            return None
        for t in best:
            if not t.kernel_resume and (t.allowed is None or cpu in t.allowed):
                best.remove(t)
                self.waiting -= 1
                return t
        return None

    def sleep_in_kernel(self, cpu: CPU) -> None:
        """``CPU.release`` by the current task: it sleeps in kernel code (or is dead)."""
        task: Task = cpu.curr  # type: ignore[assignment]  # only the current task releases
        task.state = BLOCKED
        cpu._next()  # kernel work queued on the CPU goes first
        self._switch_out(cpu, requeue=False, qs=False)

    # -- the tick ---------------------------------------------------------------------------------
    def _arm(self, cpu: CPU, rq: RunQueue) -> None:
        now = self.env.now
        end = max(now, rq.run_start + self.slice)
        j = self.jiffy
        t = -(-end // j) * j  # the first tick at or after the slice's end
        rq.tick_armed = True
        Timeout(self.env, t - now).callbacks.append(partial(self._tick, cpu))

    def _tick(self, cpu: CPU, _ev) -> None:
        """``sched_tick`` on ``cpu``: switch out a task that used its slice if others wait."""
        rq = self.rqs[cpu.id]
        rq.tick_armed = False
        self.ticks += 1
        task = cpu.curr
        if task is None or not rq.queue:
            return
        now = self.env.now
        if now - rq.run_start < self.slice:
            self._arm(cpu, rq)  # a task that came on since: its own slice
            return
        if not task.in_burst or cpu.owner is not None:
            # In kernel code, or kernel work holds the CPU: need_resched. Under preempt=full a
            # task in a preemptible kernel step is switched out in place; otherwise look again
            # at the next tick (and, under full, at the task's next preempt_enable).
            cpu.resched = True
            if cpu.owner is task and task.kev is not None and self._preemptible(cpu):
                self._preempt_step(cpu, task)
                return
            rq.tick_armed = True
            Timeout(self.env, self.jiffy).callbacks.append(partial(self._tick, cpu))
            return
        self._preempt_user(cpu, task)

    def _preempt_user(self, cpu: CPU, task: Task) -> None:
        """Switch out ``task``, in a user-mode burst: the rest of the burst comes later."""
        lost = self._take_lost(cpu)
        task.gen += 1
        task.in_burst = False
        ev: Event = task.ev  # type: ignore[assignment]  # a task in a burst waits on it
        task.ev = None
        self.preemptions += 1
        self._switch_out(cpu, requeue=True)
        ev.succeed(lost)

    # -- kernel preemption (preempt=full) ------------------------------------------------------
    def _preemptible(self, cpu: CPU) -> bool:
        """``preemptible()``: no spinlock held or spun on, softirqs on, IRQs on, not in a
        softirq. An RCU reader is preemptible: ``full`` implies the preemptible flavour."""
        return not (cpu.locks or cpu.bh or cpu.softirq_running or cpu in self.irqs_off)

    def kernel_step(self, cpu: CPU, ns: int) -> Event:
        """``ns`` of kernel code by the current task under ``preempt: full``: an event that
        fires once the task has had ``ns`` of CPU time, however often it is preempted.

        Entered with need_resched set (a tick or wake-up asked while preemption was off), the
        step starts with the switch: the kernel would have switched at that ``preempt_enable``.
        """
        if not self._preemptible(cpu):
            return Timeout(self.env, ns)
        task: Task = cpu.curr  # type: ignore[assignment]  # preemptible: the current task
        ev = task.kev = Event(self.env)
        if cpu.resched and self.rqs[cpu.id].queue:
            task.krem = ns
            self._leave_in_kernel(cpu, task)
            return ev
        task.kend = self.env.now + ns
        Timeout(self.env, ns).callbacks.append(partial(self._kstep_end, task, task.gen))
        return ev

    def preempt_point(self, cpu: CPU) -> Event | None:
        """``preempt_enable`` with need_resched set, under ``preempt: full``: the current task
        switches out here, inside whatever RCU reader it is in (``preempt_schedule``). An event
        for its return, or ``None`` if it keeps the CPU."""
        task = cpu.curr
        if (
            task is None
            or cpu.owner is not task
            or not self.rqs[cpu.id].queue
            or not self._preemptible(cpu)
        ):
            return None
        ev = task.kev = Event(self.env)
        task.krem = 0
        self._leave_in_kernel(cpu, task)
        return ev

    def _kstep_end(self, task: Task, gen: int, _ev: Event) -> None:
        if task.gen != gen:
            return  # preempted meanwhile: the step's rest runs from its new timer
        ev = task.kev
        task.kev = None
        ev.succeed()  # type: ignore[union-attr]  # a live step timer: kev is set

    def _preempt_step(self, cpu: CPU, task: Task) -> None:
        """A tick or wake-up preempts ``task`` in place, inside a kernel step."""
        task.krem = task.kend - self.env.now
        task.gen += 1  # the step's timer is stale from now on
        self._leave_in_kernel(cpu, task)

    def _leave_in_kernel(self, cpu: CPU, task: Task) -> None:
        """``__schedule(SM_PREEMPT)`` of a task in kernel code: it stays runnable on this CPU
        and resumes its kernel code when it runs again.

        ``rcu_note_context_switch`` (kernel/rcu/tree_plugin.h): a task preempted inside an
        RCU reader goes on the blocked-tasks list (``rcu_preempt_ctxt_queue``), blocking the
        current grace period if this CPU had not reported yet and every GP that starts
        before its outermost ``rcu_read_unlock`` (``rcu_read_unlock_special`` takes it off);
        the CPU itself passes a quiescent state (``rcu_qs``).
        """
        n = cpu.nesting
        if n:
            self.reader_preemptions += 1
        self.rcu.preempt_task(cpu, task, n)
        task.knest = n
        cpu.nesting = 0
        task.kdebt = cpu.debt
        cpu.debt = 0
        cpu.ctx_switches += 1
        self.rcu.context_switch(cpu)
        self.preemptions += 1
        self.kernel_preemptions += 1
        task.kernel_resume = True
        ev = task.ev = Event(self.env)
        ev.callbacks.append(partial(self._resumed, task))
        cpu._next()  # kernel work queued on the CPU runs first
        self._switch_out(cpu, requeue=True, qs=False)

    def _resumed(self, task: Task, _ev: Event) -> None:
        """The preempted task owns its CPU again: its reader depth and debt come back, and the
        interrupted step (or the preemption point) runs its rest."""
        cpu = task.cpu
        cpu.nesting = task.knest
        rem = task.krem + task.kdebt + cpu.debt  # the switch's cost is taken from this step
        cpu.debt = 0
        task.kdebt = 0
        task.krem = -1
        task.kend = self.env.now + rem
        Timeout(self.env, rem).callbacks.append(partial(self._kstep_end, task, task.gen))

    # -- ksoftirqd ------------------------------------------------------------------------------
    def wake_ksoftirqd(self, cpu: CPU) -> None:
        """``wakeup_softirqd``: wake ``cpu``'s ksoftirqd (made on first use, a task bound to
        ``cpu`` that sleeps in kernel code between runs: ``smpboot_thread_fn``)."""
        ev = self._ksoftirqd.get(cpu.id)
        if ev is None:
            task = self.new_task(f"ksoftirqd/{cpu.id}", [cpu])
            ev = self._ksoftirqd[cpu.id] = Event(self.env)
            self.env.process(self._ksoftirqd_loop(cpu, task))
        if not ev.triggered:
            ev.succeed()

    def _ksoftirqd_loop(self, cpu: CPU, task: Task):
        rcu = self.rcu
        while True:
            yield self._ksoftirqd[cpu.id]
            ev = cpu.acquire(task)  # try_to_wake_up: it queues on its CPU, in kernel code
            if ev is not None:
                yield ev
            yield from rcu.run_ksoftirqd(cpu)
            self._ksoftirqd[cpu.id] = Event(self.env)
            cpu.release()  # nothing pending: it sleeps (a context switch)

    # -- results ----------------------------------------------------------------------------------
    def clear_stats(self) -> None:
        self.rq_wait.clear()
        self.switches = self.preemptions = self.ticks = 0
        self.kernel_preemptions = self.reader_preemptions = self.wakeup_preemptions = 0
        self.t_stats = self.env.now

    def results(self, now: int) -> dict[str, float]:
        span = max(1, now - self.t_stats)
        s = {
            "sched.slice_ns": self.slice,
            "sched.ctx_switches": self.switches,
            "sched.ctx_switches_per_s": self.switches * 1e9 / span,
            "sched.preemptions": self.preemptions,
            "sched.kernel_preemptions": self.kernel_preemptions,
            "sched.reader_preemptions": self.reader_preemptions,
            "sched.wakeup_preemptions": self.wakeup_preemptions,
            "sched.ticks": self.ticks,
        }
        s.update(self.rq_wait.summary("sched.rq_wait"))
        return s


def scheduler(m: Machine) -> Scheduler:
    """The machine's scheduler, made on first use."""
    s = m.cpus[0].sched
    if s is None:
        s = Scheduler(m)
    return s
