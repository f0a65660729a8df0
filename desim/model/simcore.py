"""Everything desim relies on of SimPy beyond its public API, in one place.

SimPy's documented API has no way to schedule an event that is already decided (a lock granted
at a known instant, with no process in between) or to put a marker first among the events of
an instant; both are cheap with its internals, which this module alone touches. What it relies
on is checked by tests/test_simpy_contract.py, and pyproject.toml bounds SimPy below 5.

The heap head needs no internals: ``Environment.peek()`` is public (the fault lookahead in
``desim.model.mm_ops`` uses it).

The clock is ``env.now`` everywhere, SimPy's public property; the machine's environment is
``Environment`` below, whose ``now`` is the same property typed as desim's integer nanoseconds.
A property costs ~60 ns more per read than the field behind it; the fault path, which read the
clock three times a fault, keeps the times it already knows instead (``handle_fault``), which
leaves the property's cost near 1% of a fault-bound run (measured by instruction count).
"""

from __future__ import annotations

from collections.abc import Callable

import simpy
from simpy.core import NORMAL, URGENT
from simpy.events import Event


class Environment(simpy.Environment):
    """SimPy's environment with its clock typed as desim keeps it: integer nanoseconds (every
    delay desim schedules is an int, so the clock never holds a float)."""

    @property
    def now(self) -> int:
        return self._now  # type: ignore[return-value]  # int: see the class docstring


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
