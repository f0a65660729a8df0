"""Simulated CPUs: one task at a time, RCU read-side nesting and quiescent-state bookkeeping.

A task is a SimPy process that owns a CPU between ``acquire`` and ``release``. Releasing is a
context switch, which notes a quiescent state (``rcu_note_context_switch``); with no other task
queued the CPU goes idle, an extended quiescent state that the grace-period kthread's
force-quiescent-state scan notices (dynticks snapshot), as on a NO_HZ kernel.

CPU time not yet paid (lock costs, softirq work, IPI handlers) accumulates in ``debt`` and is
added to the owner's next ``compute``: cheap, and no extra events.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from simpy.events import Event, Timeout

if TYPE_CHECKING:
    from desim.model.machine import Machine


class CPU:
    __slots__ = (
        "id", "machine", "env", "owner", "runq", "nesting", "debt", "idle", "idle_entries",
        "qs_pending", "passed_qs", "dyn_snap", "exp_need_qs", "cbs", "softirq_running",
        "busy_since", "busy_ns", "softirq_ns", "ctx_switches", "trace",
    )

    def __init__(self, machine: Machine, cpu_id: int) -> None:
        self.id = cpu_id
        self.machine = machine
        self.env = machine.env
        self.owner: object | None = None
        self.runq: deque = deque()
        self.nesting = 0            # rcu_read_lock() depth
        self.debt = 0               # ns of CPU time owed by the current owner
        self.idle = True
        self.idle_entries = 0       # like the dynticks counter: bumps on each idle entry
        self.qs_pending = False     # the current GP still needs a QS from this CPU
        self.passed_qs = False      # a QS was noted (context switch) but not yet reported
        self.dyn_snap = 0
        self.exp_need_qs = False    # an expedited GP waits for this CPU's rcu_read_unlock
        self.cbs = None             # the CPU's RCU callback list, set by RCU
        self.softirq_running = False
        self.busy_since = 0
        self.busy_ns = 0
        self.softirq_ns = 0
        self.ctx_switches = 0
        self.trace = None           # set by the tracer when one is recording

    def __repr__(self) -> str:
        return f"cpu{self.id}"

    # -- ownership -------------------------------------------------------------------------
    def acquire(self, task: object) -> Event | None:
        """Run ``task`` on this CPU: ``None`` if it runs now, else an event for its turn."""
        if self.owner is None:
            self.owner = task
            if self.idle:
                self.idle = False
                self.busy_since = self.env._now
            if self.trace is not None:
                self.trace.task_acquire(self, task, True)
            return None
        ev = Event(self.env)
        self.runq.append((task, ev))
        if self.trace is not None:
            self.trace.task_acquire(self, task, False)
        return ev

    def release(self) -> None:
        """The owner stops running here: a context switch, so a quiescent state."""
        self.ctx_switches += 1
        if self.qs_pending:
            self.passed_qs = True
        # Time still owed when the owner leaves (an unlock's cost, softirq work that arrived
        # during its last slice) is forgiven rather than charged to the next task.
        self.debt = 0
        if self.runq:
            task, ev = self.runq.popleft()
            self.owner = task
            if self.trace is not None:
                self.trace.task_switch(self, task)
            ev.succeed()
            return
        if self.trace is not None:
            self.trace.task_switch(self, None)
        self.owner = None
        self.idle = True
        self.idle_entries += 1
        self.busy_ns += self.env._now - self.busy_since

    def compute(self, ns: int) -> Timeout:
        """Spend ``ns`` of CPU time (plus any debt) as the owner."""
        d = ns + self.debt
        self.debt = 0
        return Timeout(self.env, d)

    def steal(self, ns: int) -> None:
        """Charge CPU time taken by interrupts or softirq to whoever runs here."""
        if self.owner is not None:
            self.debt += ns

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
            if self.exp_need_qs:
                self.machine.rcu.exp.report(self)
            if self.trace is not None:
                self.trace.read_unlock(self)

    def busy_fraction(self, now: int) -> float:
        busy = self.busy_ns + (0 if self.idle else now - self.busy_since)
        return busy / now if now else 0.0
