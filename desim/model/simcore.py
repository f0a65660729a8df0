"""Everything desim relies on of SimPy beyond its public API, in one place.

SimPy's documented API has no way to schedule an event that is already decided (a lock granted
at a known instant, with no process in between) or to put a marker first among the events of
an instant; both are cheap with its internals, which this module alone touches. What it relies
on is checked by tests/test_simpy_contract.py, and pyproject.toml bounds SimPy below 5.

The heap head needs no internals: ``Environment.peek()`` is public (the fault lookahead in
``desim.model.mm_ops`` uses it).

The clock: desim reads ``env.now`` everywhere. SimPy's ``now`` is a property over its private
``_now``; a property read costs ~570 instructions against ~15 for a field, and the model reads
the clock about twice per event, which made ``env.now`` 3.8-5.4% of a run's instructions
(callgrind, default config). The machine's ``Environment`` below therefore keeps ``now`` as a
plain attribute, set with ``_now`` where SimPy sets it (``__init__`` and ``step``): ``env.now`` is
then as cheap as the field. ``step`` is SimPy 4.1's own, plus that one store;
tests/test_simpy_contract.py fails if SimPy's ``step`` changes.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop

import simpy
from simpy.core import NORMAL, URGENT, EmptySchedule, StopSimulation
from simpy.events import Event, EventPriority


class Environment(simpy.Environment):
    """SimPy's environment with ``now`` a plain attribute, in desim's integer nanoseconds
    (every delay desim schedules is an int, so the clock never holds a float)."""

    now: int = 0  # not a property here: the instance's attribute, kept by ``step``

    def __init__(self, initial_time: int = 0) -> None:
        super().__init__(initial_time)
        self.now = initial_time

    def step(self) -> None:
        """SimPy 4.1's ``Environment.step``, storing the time in ``now`` as well."""
        try:
            t, _, _, event = heappop(self._queue)
        except IndexError:
            raise EmptySchedule from None
        self._now = self.now = t  # type: ignore[assignment]  # int: see the class docstring
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
