"""What desim relies on of SimPy (desim.model.simcore): if a SimPy release changes any of it,
this fails before any figure moves."""

from __future__ import annotations

import pytest
import simpy
from simpy.events import Event, Process, Timeout

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


def test_the_machines_clock_is_simpys():
    from desim.model.simcore import Environment

    env = Environment()
    seen = []
    Timeout(env, 7).callbacks.append(lambda e: seen.append(env.now))
    env.step()
    assert env.now == 7
    assert seen == [7] and isinstance(env, simpy.Environment)
    Timeout(env, 5)
    env.run(until=100)  # StopSimulation comes through step: the clock still follows
    assert env.now == 100 and simpy.Environment.now.fget(env) == 100


def test_a_failed_event_still_crashes_the_machines_environment():
    from desim.model.simcore import Environment

    env = Environment()
    Event(env).fail(ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        env.run()


@pytest.mark.parametrize(
    "qualname,want",
    [
        # simcore.Environment.step is SimPy 4.1's plus one store; run_events inlines it too
        ("Environment.step", "8fea2b488c8ad7faecfa46ea6759b01821dce350cd54301caac0cbe0f13185a0"),
        # run_events resumes a process as _resume does, without the call
        ("Process._resume", "7c85b9fe960e6b8e43b9898df0f64952b63f0affec1dbd94a80269e542398ea0"),
        # timeout() and sleep() build and schedule a Timeout as these two would
        ("Timeout.__init__", "321c9947d58d38ecbbd498a63ee4c65632a45f3913f13096ed7f9fe9b0293879"),
        (
            "Environment.schedule",
            "d77e268cd77bd92126143b4fc3513fcca9a352c0ed50c7d4958f63b4d4fed615",
        ),
    ],
)
def test_the_simpy_code_simcore_copies_is_unchanged(qualname, want):
    """simcore repeats these SimPy 4.1 methods in its own words for speed: a SimPy whose code
    differs must be read again (and simcore with it) before a hash here is updated."""
    import hashlib
    import inspect

    owner, name = qualname.split(".")
    cls = {"Environment": simpy.core.Environment, "Process": Process, "Timeout": Timeout}[owner]
    src = inspect.getsource(getattr(cls, name))
    assert hashlib.sha256(src.encode()).hexdigest() == want


def test_a_reserved_number_orders_a_later_event_as_if_scheduled_when_reserved():
    """``seq_counter`` + ``decided_at``: among events of one instant, the one scheduled later
    with an earlier number runs first; ``seq`` is the running event's number."""
    from desim.model.simcore import Environment, decided_at, ran_before, seq_counter

    env = Environment()
    order = []
    n = seq_counter(env)()
    a = env.timeout(10)
    a.callbacks.append(lambda e: order.append(("a", ran_before(env, n))))
    b = decided_at(env, 10, n, "b")
    b.callbacks.append(lambda e: order.append((e.value, env.seq == n)))
    env.run()
    assert order == [("b", True), ("a", False)]


def test_retarget_moves_a_waiting_process_and_drops_the_old_event():
    from desim.model.simcore import Environment, retarget

    env = Environment()
    box = {}

    def proc():
        box["old"] = ev = env.timeout(100)
        v = yield ev
        box["woke"] = (env.now, v)

    p = env.process(proc())
    env.run(until=1)
    new = env.timeout(40, "moved")
    retarget(box["old"], new)
    assert p._target is new
    assert all(entry[3] is not box["old"] for entry in env._queue)
    env.run()
    assert box["woke"] == (41, "moved")  # made at 1 ns, for 40 ns
