"""desim.model.simcore's run loop and timeouts run a simulation exactly as SimPy's own
``step`` and ``Timeout`` do: the same events at the same instants in the same order, the same
values sent, the same processes active, the same exceptions."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simpy.core import EmptySchedule, StopSimulation
from simpy.events import Interrupt, Timeout

from desim.model.simcore import Environment, run_events, sleep, timeout, urgent_marker


class _Stop(Exception):
    pass


def _stop(_event) -> None:
    raise _Stop


def _by_step(env: Environment) -> tuple[int, BaseException]:
    """SimPy's own way: ``step`` until an exception; how many steps, the raising one included."""
    n = 0
    while True:
        n += 1
        try:
            env.step()
        except BaseException as exc:  # noqa: BLE001 - compared with run_events' below
            return n, exc


def _by_run_events(env: Environment) -> tuple[int, BaseException]:
    before = env.popped
    try:
        run_events(env)
    except BaseException as exc:  # noqa: BLE001
        return env.popped - before, exc
    raise AssertionError("run_events returned")


def _both(build, until: int = 1_000):
    """Run ``build(env, log, tmo)`` both ways: SimPy's (``Timeout``, ``step``) and simcore's
    (``sleep``, ``run_events``); return both logs, counts and exceptions."""
    out = []
    for tmo, run in ((Timeout, _by_step), (sleep, _by_run_events)):
        env = Environment()
        log: list = []
        build(env, log, tmo)
        urgent_marker(env, until, _stop)
        n, exc = run(env)
        out.append((log, n, type(exc), exc.args, env.now))
    return out


def _who(env):
    p = env.active_process
    return None if p is None else p.name


def test_a_rich_scenario_runs_the_same_both_ways():
    def build(env, log, tmo):
        def child(k):
            v = yield tmo(env, 3 + k)
            log.append((env.now, "child", k, v, _who(env)))
            return k * 10

        def failing():
            yield tmo(env, 4)
            raise ValueError("child failed")

        def parent():
            got = yield env.process(child(1))
            log.append((env.now, "parent got", got, _who(env)))
            try:
                yield env.process(failing())
            except ValueError as exc:
                log.append((env.now, "caught", str(exc)))
            ev = env.event()
            ev.fail(KeyError("thrown in"))
            try:
                yield ev
            except KeyError as exc:
                log.append((env.now, "thrown", exc.args))
            done = Timeout(env, 1, value="v")
            yield done
            v = yield done  # already processed: resumes at once with its value
            log.append((env.now, "again", v))
            r = yield env.any_of([tmo(env, 5), Timeout(env, 9)])
            log.append((env.now, "any_of", len(r.todict())))
            try:
                yield tmo(env, 100)
            except Interrupt as exc:
                log.append((env.now, "interrupted", exc.cause))
            for d in (0, 2, 0, 7):
                yield tmo(env, d)
                log.append((env.now, "slept", d))
            return "parent done"

        p = env.process(parent())

        def interrupter():
            yield tmo(env, 30)
            p.interrupt("stop")
            yield tmo(env, 200)
            log.append((env.now, "parent value", p.value))

        env.process(interrupter())
        t = Timeout(env, 12)
        t.callbacks.append(lambda e: log.append((env.now, "callback", _who(env))))
        t.callbacks.append(lambda e: log.append((env.now, "second callback")))

    a, b = _both(build)
    assert a == b
    log = a[0]
    assert log[:3] == [
        (4, "child", 1, None, "child"),
        (4, "parent got", 10, "parent"),
        (8, "caught", "child failed"),
    ]
    assert (12, "callback", None) in log and (30, "interrupted", "stop") in log
    assert log[-1] == (230, "parent value", "parent done")
    assert a[1:] == (25, _Stop, (), 1000)  # 24 events, then the marker


def test_an_uncaught_failure_crashes_both_ways_alike():
    def build(env, log, tmo):
        def bad():
            yield tmo(env, 5)
            raise RuntimeError("model bug")

        env.process(bad())

    a, b = _both(build)
    assert a == b and a[2] is RuntimeError and a[3] == ("model bug",) and a[4] == 5


def test_stop_simulation_leaves_the_remaining_callbacks_for_later():
    for tmo, run in ((Timeout, _by_step), (sleep, _by_run_events)):
        env = Environment()
        seen = []
        ev = tmo(env, 3)
        ev.callbacks.append(StopSimulation.callback)
        ev.callbacks.append(lambda e, env=env, seen=seen: seen.append(env.now))
        urgent_marker(env, 10, _stop)
        n, exc = run(env)
        assert (n, type(exc), seen) == (1, StopSimulation, [])
        n, exc = run(env)
        assert (n, type(exc), seen, env.now) == (2, _Stop, [3], 10)


def test_an_empty_schedule_ends_both_ways():
    for run in (_by_step, _by_run_events):
        env = Environment()
        Timeout(env, 2)
        n, exc = run(env)
        assert isinstance(exc, EmptySchedule) and env.now == 2
    assert n == 1  # run_events counts the one event popped


def test_yielding_what_is_not_an_event_is_an_error_naming_it():
    msgs = []
    for run in (_by_step, _by_run_events):
        env = Environment()

        def proc(env):
            yield timeout(env, 1)
            yield 42

        env.process(proc(env))
        n, exc = run(env)
        assert isinstance(exc, RuntimeError)
        msgs.append((n, str(exc).splitlines()[-1]))
    assert msgs[0] == msgs[1] == (2, 'Invalid yield value "42"')


def test_timeout_is_simpys_timeout_in_the_same_heap_place():
    a, b = Environment(), Environment()
    for env, mk in ((a, Timeout), (b, timeout)):
        Timeout(env, 1)  # one event scheduled before: the sequence numbers follow
        mk(env, 5)
        mk(env, 0)
    assert [e[:3] for e in a._queue] == [e[:3] for e in b._queue]
    ev = b._queue[-1][3]
    assert type(ev) is Timeout and ev.triggered and ev.ok and ev.value is None
    assert repr(ev) == repr(a._queue[-1][3]).replace(hex(id(a._queue[-1][3])), hex(id(ev)))
    with pytest.raises(ValueError, match="Negative delay -1"):
        timeout(b, -1)


def test_sleep_reuses_a_processed_timeout_and_nothing_else():
    env = Environment()
    seen = []

    def proc():
        ev = sleep(env, 2)
        yield ev
        again = sleep(env, 3)  # the first was processed: armed again
        assert again is ev and not again.processed
        yield again
        pending = sleep(env, 50)
        with contextlib.suppress(Interrupt):
            yield pending
        fresh = sleep(env, 4)  # the interrupted one is still due: a new one
        assert fresh is not pending and not pending.processed
        yield fresh
        seen.append(env.now)

    p = env.process(proc())

    def interrupter():
        yield timeout(env, 10)
        p.interrupt()

    env.process(interrupter())
    assert sleep(env, 1) is not sleep(env, 1)  # outside a process: always new
    env.run()
    assert seen == [14] and env.now == 55


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 20), st.sampled_from(["t", "ev", "proc"])), max_size=8),
        min_size=1,
        max_size=6,
    )
)
def test_any_program_of_sleeps_runs_the_same_both_ways(programs):
    """Processes sleeping, waiting on each other's events and sub-processes, many at equal
    instants (ties keep their scheduling order either way)."""

    def build(env, log, tmo):
        shared = [env.event()]

        def sub(d):
            yield tmo(env, d)
            return d

        def body(i, prog):
            for j, (d, kind) in enumerate(prog):
                if kind == "t":
                    v = yield tmo(env, d)
                elif kind == "proc":
                    v = yield env.process(sub(d))
                else:
                    ev = shared[-1]
                    if ev.triggered:
                        shared.append(ev := env.event())
                    if d % 2:
                        ev.succeed((i, j))
                    v = yield env.any_of([ev, tmo(env, d)])
                    v = sorted(map(repr, v.values()))
                log.append((env.now, i, j, v, _who(env)))

        for i, prog in enumerate(programs):
            env.process(body(i, prog))

    a, b = _both(build, until=500)
    assert a == b
