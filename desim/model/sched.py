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
  kernel code keeps ``need_resched`` and is switched out on its way back to user mode
  (``exit_to_user_mode_loop``): kernel code is not preempted (PREEMPT_NONE/VOLUNTARY
  behaviour; on a full-preemption kernel the tick could preempt it in place).
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
  (``newidle_balance``), so no CPU idles while a task it may run waits. Wake-up preemption
  (``check_preempt_wakeup_fair``) and periodic load balancing are not modelled: a woken task
  waits for the current one's slice.
"""

from __future__ import annotations

from collections import deque
from functools import partial
from typing import TYPE_CHECKING

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
    )

    def __init__(self, tid: int, name: str, allowed: list | None) -> None:
        self.id = tid
        self.name = name
        self.cpu: CPU | None = None
        self.prev: CPU | None = None  # the CPU it last ran on (wake-affine)
        self.allowed = allowed  # CPUs it may run on (None: all)
        self.state = RUNNABLE
        self.ev: Event | None = None  # what its process waits on
        self.gen = 0  # bumps at each preemption: a stale burst timer
        self.in_burst = False  # running user code in ``run_user``
        self.kernel_resume = False  # woken from a sleep in kernel code
        self.wait_since = -1  # when it became runnable (run-queue wait)

    def __repr__(self) -> str:
        return f"{self.name}[{self.id}]"


class RunQueue:
    __slots__ = ("queue", "tick_armed", "run_start")

    def __init__(self) -> None:
        self.queue: deque[Task] = deque()
        self.tick_armed = False
        self.run_start = 0  # when the current task got the CPU (its slice)


class Scheduler:
    Task = Task

    def __init__(self, m: Machine) -> None:
        cfg = m.config.sched
        self.m = m
        self.env = m.env
        self.cpus = m.cpus
        self.rcu = m.rcu
        self.slice = cfg.effective_slice(len(m.cpus))
        self.switch_cost = cfg.switch_cost
        self.wake_affine = cfg.wake_affine
        self.jiffy = m.config.machine.jiffy_ns
        self.rqs = [RunQueue() for _ in m.cpus]
        self.waiting = 0  # tasks on all run queues: none, no CPU can pull
        self.next_id = 0
        self._rot = 0
        # statistics
        self.rq_wait = LogHistogram()
        self.switches = 0
        self.preemptions = 0
        self.ticks = 0
        self.t_stats = 0
        for c in m.cpus:
            c.sched = self
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
            if rq.queue and env.now - rq.run_start >= slice_ and cpu.owner is None:
                # need_resched, set by a tick while this task was in the kernel, is honoured
                # on the way back to user mode.
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
        ev = task.ev
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
        return best  # type: ignore[return-value]

    def _wake(self, task: Task, new: bool) -> None:
        task.state = RUNNABLE
        cpu = self.select_cpu(task, new)
        self._enqueue(cpu, task)

    def _enqueue(self, cpu: CPU, task: Task) -> None:
        task.cpu = cpu
        task.wait_since = self.env.now
        if cpu.curr is None:
            self._dispatch(cpu, task, replacing=False)
            return
        rq = self.rqs[cpu.id]
        rq.queue.append(task)
        self.waiting += 1
        if not rq.tick_armed:
            self._arm(cpu, rq)

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
        prev = cpu.curr
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
        task = cpu.curr
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
            # In kernel code, or kernel work holds the CPU: need_resched; look again next tick.
            rq.tick_armed = True
            Timeout(self.env, self.jiffy).callbacks.append(partial(self._tick, cpu))
            return
        lost = self._take_lost(cpu)
        task.gen += 1
        task.in_burst = False
        ev = task.ev
        task.ev = None
        self.preemptions += 1
        self._switch_out(cpu, requeue=True)
        ev.succeed(lost)

    # -- results ----------------------------------------------------------------------------------
    def clear_stats(self) -> None:
        self.rq_wait.clear()
        self.switches = self.preemptions = self.ticks = 0
        self.t_stats = self.env.now

    def results(self, now: int) -> dict[str, float]:
        span = max(1, now - self.t_stats)
        s = {
            "sched.slice_ns": self.slice,
            "sched.ctx_switches": self.switches,
            "sched.ctx_switches_per_s": self.switches * 1e9 / span,
            "sched.preemptions": self.preemptions,
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
