"""What desim relies on of SimPy (desim.model.simcore): if a SimPy release changes any of it,
this fails before any figure moves."""

from __future__ import annotations

import simpy
from simpy.events import Event, Timeout

from desim.model.simcore import run_first, schedule_decided, tied, urgent_marker


def test_a_decided_event_fires_at_its_delay_with_its_value():
    env = simpy.Environment()
    ev = Event(env)
    schedule_decided(env, ev, 7, value="granted")
    seen = []

    def waiter():
        v = yield ev
        seen.append((env.now, v))

    env.process(waiter())
    env.run()
    assert seen == [(7, "granted")]


def test_an_urgent_marker_runs_before_every_other_event_of_its_instant():
    env = simpy.Environment()
    order = []
    Timeout(env, 5).callbacks.append(lambda e: order.append("timeout"))
    urgent_marker(env, 5, lambda e: order.append("marker"))
    env.run()
    assert order == ["marker", "timeout"] and env.now == 5


def test_peek_is_the_time_of_the_next_event_and_infinity_when_none():
    env = simpy.Environment()
    assert env.peek() == float("inf")
    Timeout(env, 3)
    Timeout(env, 2)
    assert env.peek() == 2


def test_tied_counts_the_events_due_together_and_run_first_reorders_them():
    env = simpy.Environment()
    order = []
    for name in ("a", "b", "c"):
        Timeout(env, 5).callbacks.append(lambda e, n=name: order.append(n))
    Timeout(env, 6).callbacks.append(lambda e: order.append("later"))
    assert tied(env) == 3
    run_first(env, 2)  # "c" first; "a" and "b" keep their order
    env.step()
    assert order == ["c"] and tied(env) == 2
    run_first(env, 1)
    env.run()
    assert order == ["c", "b", "a", "later"]
    assert tied(env) == 0
