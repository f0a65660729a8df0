"""Queued (FIFO) spinlocks on bare SimPy events.

An uncontended acquire creates no event: its cost is charged to the acquiring CPU
(``CPU.charge``), paid at that CPU's next ``compute``, inside the lock. Time owed from before
is paid before the lock is taken (``CPU.spin_lock``). A contended acquire queues one plain ``Event`` which the
releaser schedules ``handoff`` ns later (the MCS/qspinlock hand-over costs one cache-line
transfer). A waiter spins: the task keeps its CPU, so spinning is CPU time lost, as in the kernel.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from simpy.events import Event

from desim.model.simcore import decided_at, retarget, schedule_decided
from desim.model.stats import LockClassStats

if TYPE_CHECKING:
    from desim.model.cpu import CPU


class SpinLock:
    """One spinlock instance; statistics go to its lock class."""

    __slots__ = (
        "env",
        "stats",
        "holder",
        "waiters",
        "t_acquired",
        "last_cpu",
        "cost",
        "handoff",
        "approaching",
    )

    def __init__(self, env, stats: LockClassStats, cost: int, handoff: int) -> None:
        self.env = env
        self.stats = stats
        self.holder: CPU | None = None
        self.waiters: deque = deque()
        self.t_acquired = 0
        self.last_cpu: CPU | None = None
        self.cost = cost
        self.handoff = handoff
        # CPUs on their way to this lock with an event still to come before they try it (a
        # fault's walk, a retraction's PMD lock): the fault lookahead must not jump ahead of them
        self.approaching = 0

    def acquire(self, cpu: CPU) -> Event | None:
        """Take the lock for ``cpu``; ``None`` if taken at once, else an event to wait on."""
        h = self.holder
        if h is None:
            self.acquire_at(cpu, self.env.now)
            return None
        if h.la_lock is self and h.la_until >= self.env.now and h.in_lookahead_walk():
            # A lookahead fault holds it only from the end of its walk: free until then, so
            # this CPU takes it and the fault goes on as the slow path would have.
            self._undo_lookahead(h)
            self.acquire_at(cpu, self.env.now)
            return None
        self.stats.contended += 1
        cpu.locks += 1  # preemption is off from the spin on (spin_lock's preempt_disable)
        ev = Event(self.env)
        self.waiters.append((cpu, ev, self.env.now))
        if cpu.trace is not None:
            cpu.trace.spin_begin(cpu, ev)
        return ev

    def release(self, cpu: CPU) -> None:
        if self.holder is not cpu:
            raise RuntimeError(f"{self.stats.name}: released by cpu{cpu.id}, held by {self.holder}")
        cpu.locks -= 1
        env = self.env
        now = env.now
        st = self.stats
        held = now - self.t_acquired
        st.hold_total += held
        if held > st.hold_max:
            st.hold_max = held
        self.last_cpu = cpu
        if not self.waiters:
            self.holder = None
            return
        # The first waiter gets the lock: its cache line moves (unless it spun on this same CPU)
        # and it pays the acquire cost; it holds the lock from ``grant`` on.
        nxt, ev, t_wait = self.waiters.popleft()
        if nxt is cpu:
            st.regrants += 1
            delay = self.cost
        else:
            delay = self.handoff + self.cost
        self.holder = nxt
        self.t_acquired = grant = now + delay
        st.wait.add(grant - t_wait)
        if nxt.trace is not None:
            nxt.trace.handoff(self, cpu, nxt, ev, t_wait, grant)
        schedule_decided(env, ev, delay)

    def acquire_at(self, cpu: CPU, t: int) -> None:
        """Take the free lock for ``cpu`` as of time ``t`` (now or later), with no event.

        ``t`` later than now is for a caller that made sure no event runs before ``t``: nobody
        can look at the lock in between, so holding it from now on is holding it from ``t``.
        The acquire's cost goes to the CPU's debt, as for ``acquire``.
        """
        self.holder = cpu
        self.t_acquired = t
        cpu.locks += 1
        st = self.stats
        st.uncontended += 1
        last = self.last_cpu
        if last is cpu or last is None:
            cpu.debt += self.cost  # CPU.charge, inlined on the lock's hot path
        else:
            st.free_handoffs += 1
            cpu.debt += self.cost + self.handoff

    def _undo_lookahead(self, f: CPU) -> None:
        """Give back the lock a lookahead fault on ``f`` took as of its walk's end, before then.

        The fault's walk was to end at ``f.la_until`` and its ptl section was one sleep from
        its start; now it wakes at the walk's end instead (``True`` for "undone") and takes
        the ptl as the slow path does, with the ``fault_work`` it drew. What ``acquire_at``
        counted is uncounted, and time stolen from ``f`` meanwhile is owed again.
        """
        st = self.stats
        st.uncontended -= 1
        last = self.last_cpu
        if last is not f and last is not None:
            st.free_handoffs -= 1
        f.locks -= 1
        self.holder = None
        self.approaching += 1  # the fault walks on toward it
        f.debt += f.la_stolen
        t2 = f.la_until
        f.la_until = -1
        f.la_lock = None
        ev = decided_at(self.env, t2 - self.env.now, f.la_seq, True)
        retarget(f.la_ev, ev)  # type: ignore[arg-type]  # set with la_lock

    @property
    def queue_length(self) -> int:
        return len(self.waiters)


class Mutex:
    """A sleeping FIFO mutex (the waiter's task has already given up its CPU)."""

    __slots__ = ("env", "held", "waiters")

    def __init__(self, env) -> None:
        self.env = env
        self.held = False
        self.waiters: deque[Event] = deque()

    def acquire(self) -> Event | None:
        if not self.held:
            self.held = True
            return None
        ev = Event(self.env)
        self.waiters.append(ev)
        return ev

    def release(self) -> None:
        if self.waiters:
            self.waiters.popleft().succeed()
        else:
            self.held = False
