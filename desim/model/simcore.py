"""Everything desim relies on of SimPy beyond its public API, in one place.

SimPy's documented API has no way to schedule an event that is already decided (a lock granted
at a known instant, with no process in between) or to put a marker first among the events of
an instant; both are cheap with its internals, which this module alone touches. What it relies
on is checked by tests/test_simpy_contract.py, and pyproject.toml bounds SimPy below 5.

The heap head needs no internals: ``Environment.peek()`` is public (the fault lookahead in
``desim.model.mm_ops`` uses it). Which of several events due at the same instant runs first
does: SimPy runs them in the order they were scheduled, and ``desim explore`` must try the other
orders a real machine allows (``tied`` and ``run_first``).
"""

from __future__ import annotations

import heapq

from simpy.core import NORMAL, URGENT, Environment
from simpy.events import Event


def schedule_decided(env: Environment, ev: Event, delay: int, value=None) -> None:
    """Make ``ev`` succeed with ``value`` ``delay`` ns from now, as if triggered then.

    ``Event.succeed`` would schedule it at once; a lock handed over after a cache-line transfer
    is decided now but granted later, and this costs one heap entry instead of a Timeout and a
    callback (desim.model.lock).
    """
    ev._ok = True
    ev._value = value
    env.schedule(ev, NORMAL, delay)


def urgent_marker(env: Environment, delay: int, callback) -> Event:
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
