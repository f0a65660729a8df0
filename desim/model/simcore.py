"""Everything desim relies on of SimPy beyond its public API, in one place.

SimPy's documented API has no way to schedule an event that is already decided (a lock granted
at a known instant, with no process in between) or to put a marker first among the events of
an instant; both are cheap with its internals, which this module alone touches. What it relies
on is checked by tests/test_simpy_contract.py, and pyproject.toml bounds SimPy below 5.

The heap head needs no internals: ``Environment.peek()`` is public (the fault lookahead in
``desim.model.mm_ops`` uses it). Which of several events due at the same instant runs first
does: SimPy runs them in the order they were scheduled, and ``desim explore`` must try the other
orders a real machine allows (``tied`` and ``run_first``).

The clock: desim reads ``env.now`` everywhere. SimPy's ``now`` is a property over its private
``_now``; a property read costs ~570 instructions against ~15 for a field, and the model reads
the clock about twice per event, which made ``env.now`` 3.8-5.4% of a run's instructions
(callgrind, default config). The machine's ``Environment`` below therefore keeps ``now`` as a
plain attribute, set with ``_now`` where SimPy sets it (``__init__`` and ``step``): ``env.now`` is
then as cheap as the field. ``step`` is SimPy 4.1's own, plus that one store;
tests/test_simpy_contract.py fails if SimPy's ``step`` changes.

Scheduling numbers: SimPy's heap entries are ``(time, priority, number, event)``, the number
from the counter ``_eid``, so ties run in scheduling order. ``step`` keeps the running event's
number in ``seq``; ``seq_counter`` takes a number now for an event made later
(``decided_at``), and ``retarget`` moves a waiting process to another event, taking the old one
out of the heap. The fault lookahead (``desim.model.mm_ops``) uses the three so that a fault
whose walk ends in no event still leaves every event of the run in its place: the slow path
takes the same numbers at the walk's start, and a lookahead that other events turn back
(``SpinLock._undo_lookahead``, ``CPU.steal``) resumes exactly where the slow path would.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from heapq import heappop

import simpy
from simpy.core import NORMAL, URGENT, EmptySchedule, StopSimulation
from simpy.events import Event, EventPriority


class Environment(simpy.Environment):
    """SimPy's environment with ``now`` a plain attribute, in desim's integer nanoseconds
    (every delay desim schedules is an int, so the clock never holds a float)."""

    now: int = 0  # not a property here: the instance's attribute, kept by ``step``
    seq: int = -1  # the scheduling number of the event being processed (``order_before``)

    def __init__(self, initial_time: int = 0) -> None:
        super().__init__(initial_time)
        self.now = initial_time

    def step(self) -> None:
        """SimPy 4.1's ``Environment.step``, storing the time in ``now`` and the event's
        scheduling number in ``seq`` as well."""
        try:
            t, _, self.seq, event = heappop(self._queue)
        except IndexError:
            raise EmptySchedule from None
        self._now = self.now = t  # type: ignore[assignment]  # int: see the class docstring
        # SimPy marks a processed event by callbacks = None (its annotation says list)
        callbacks, event.callbacks = event.callbacks, None  # type: ignore[assignment]
        try:
            for callback in callbacks:
                callback(event)
        except StopSimulation:
            # as SimPy: the remaining callbacks run when the simulation resumes
            event.callbacks = callbacks[callbacks.index(callback) + 1 :]
            self.schedule(event, EventPriority(-1))
            raise
        if not event._ok and not hasattr(event, "_defused"):
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc


def schedule_decided(env: simpy.Environment, ev: Event, delay: int, value: object = None) -> None:
    """Make ``ev`` succeed with ``value`` ``delay`` ns from now, as if triggered then.

    ``Event.succeed`` would schedule it at once; a lock handed over after a cache-line transfer
    is decided now but granted later, and this costs one heap entry instead of a Timeout and a
    callback (desim.model.lock).
    """
    ev._ok = True
    ev._value = value
    env.schedule(ev, NORMAL, delay)


def urgent_marker(env: simpy.Environment, delay: int, callback: Callable[[Event], None]) -> Event:
    """An event that runs ``callback(event)`` first among the events due ``delay`` ns from now
    (URGENT priority), changing nothing in the model: the engine's checkpoints."""
    ev = Event(env)
    ev._ok = True
    ev._value = None
    ev.callbacks.append(callback)
    env.schedule(ev, URGENT, delay)
    return ev


def tied(env: Environment) -> int:
    """How many events are due next together: at the heap head's instant and priority.

    SimPy would run them in the order they were scheduled; any order is one a real machine
    could take (two CPUs reaching the same nanosecond). 0 when nothing is scheduled.
    """
    q = env._queue
    if not q:
        return 0
    t, prio = q[0][0], q[0][1]
    if len(q) == 1:
        return 1
    return sum(1 for e in q if e[0] == t and e[1] == prio)


def run_first(env: Environment, index: int) -> None:
    """Make the ``index``-th (in scheduling order) of the ``tied`` events the next to run.

    The others keep their order. A heap entry is ``(time, priority, sequence, event)``; the
    chosen one is given a sequence number below every tied one's, so ``env.step()`` pops it.
    """
    if index <= 0:
        return
    q = env._queue
    t, prio = q[0][0], q[0][1]
    ties = sorted((e for e in q if e[0] == t and e[1] == prio), key=lambda e: e[2])
    chosen = ties[index]
    q.remove(chosen)
    q.append((t, prio, ties[0][2] - 1, chosen[3]))
    heapq.heapify(q)


def retarget(old: Event, new: Event) -> None:
    """Move the process waiting on ``old`` (scheduled, not yet processed) to wait on ``new``.

    ``old`` leaves the heap (a linear search: this is for rare events; left in place it could
    tie with ``new`` on time and number). The process's ``_target`` (what an interrupt would
    detach it from) follows.
    """
    q = old.env._queue
    for i, entry in enumerate(q):
        if entry[3] is old:
            last = q.pop()
            if i < len(q):
                q[i] = last
                heapq.heapify(q)
            break
    callbacks = old.callbacks
    old.callbacks = []
    new.callbacks.extend(callbacks)
    for cb in callbacks:
        proc = getattr(cb, "__self__", None)
        if isinstance(proc, simpy.events.Process) and proc._target is old:
            proc._target = new


def seq_counter(env: Environment) -> Callable[[], int]:
    """Takes the next scheduling number now, for an event that will be scheduled later (a C
    call, no Python frame: the fault path takes one per fault).

    Among events due at one instant SimPy runs first the one scheduled first: its heap entry
    carries a number from a counter. An event scheduled later with a number taken now runs
    among its instant's events as if it had been scheduled now. The fault lookahead uses this
    so that a fault's events keep their places whether or not its walk ends in an event; an
    event scheduled right after a call gets the number after the one the call returned.
    """
    return env._eid.__next__  # itertools.count in SimPy 4.1


def decided_at(env: Environment, delay: int, seq: int, value: object = None) -> Event:
    """An event that succeeds with ``value`` ``delay`` ns from now, ordered among the events
    of that instant by ``seq`` (from ``seq_counter``) instead of by when it is made."""
    ev = Event(env)
    ev._ok = True
    ev._value = value
    heapq.heappush(env._queue, (env.now + delay, NORMAL, seq, ev))
    return ev


def ran_before(env: Environment, seq: int) -> bool:
    """Whether the event being processed comes before one scheduled with number ``seq`` at
    this same instant (so, on the slow path, before that one would have run)."""
    return env.seq < seq
