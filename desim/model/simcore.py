"""Everything desim relies on of SimPy beyond its public API, in one place.

SimPy's documented API has no way to schedule an event that is already decided (a lock granted
at a known instant, with no process in between) or to put a marker first among the events of
an instant; both are cheap with its internals, which this module alone touches. What it relies
on is checked by tests/test_simpy_contract.py, and pyproject.toml bounds SimPy below 5.

The heap head needs no internals: ``Environment.peek()`` is public (the fault lookahead in
``desim.model.mm_ops`` uses it).
"""

from __future__ import annotations

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
