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
from the counter ``_eid``, so ties run in scheduling order. ``step`` and ``run_events`` keep the running event's
number in ``seq``; ``seq_counter`` takes a number now for an event made later
(``decided_at``), and ``retarget`` moves a waiting process to another event, taking the old one
out of the heap. The fault lookahead (``desim.model.mm_ops``) uses the three so that a fault
whose walk ends in no event still leaves every event of the run in its place: the slow path
takes the same numbers at the walk's start, and a lookahead that other events turn back
(``SpinLock._undo_lookahead``, ``CPU.steal``) resumes exactly where the slow path would.

The run loop: nearly every event desim processes is a timeout or a lock grant whose one
callback resumes the process waiting for it, and SimPy spends two Python calls on each
(``step``, then ``Process._resume``) around the one generator ``send`` that does the work.
``run_events`` is ``step`` in a loop that, for such an event, sends the value into the
generator itself and registers the process on what it yields next as ``_resume`` would, reusing
the bound method it just ran; every other case (a failed event, none or several callbacks, a
process that ends or fails, a yield of an event already processed) goes SimPy's way, so the
same events run in the same order with the same values, active process and exceptions
(tests/test_simcore.py runs scenarios and random programs both ways).

Timeouts: ``Timeout(env, d)`` is two Python calls (``__init__``, ``schedule``); ``timeout``
builds the same object and heap entry directly. A process's ``yield Timeout(...)`` also pays
for allocating the event and freeing it once processed, the largest part of its cost:
``sleep`` arms the process's previous timeout again when it has been processed (it is then
nobody's) and makes a new one otherwise. A free list of all processed timeouts, recycled by
reference count, was tried instead: it made the cyclic collector run about 8 times as often
(fewer deallocations offset its count of allocations) and the run slower.

Measured on ``configs/default.yaml`` at 64 CPUs (callgrind, instructions per event, from the
difference between 5 ms and 15 ms runs): 20,666 before; ``run_events`` 19,738 (-4.5%);
with ``sleep`` for the faults' think time 18,904 (-8.5%).
The code these repeat (``Environment.step`` and ``schedule``, ``Process._resume``,
``Timeout.__init__``) is pinned by hash in tests/test_simpy_contract.py.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from heapq import heappop, heappush
from types import MethodType
from typing import NoReturn

import simpy
from simpy.core import NORMAL, URGENT, EmptySchedule, StopSimulation
from simpy.events import Event, EventPriority, Process, Timeout, _describe_frame


class Environment(simpy.Environment):
    """SimPy's environment with ``now`` a plain attribute, in desim's integer nanoseconds
    (every delay desim schedules is an int, so the clock never holds a float)."""

    now: int = 0  # not a property here: the instance's attribute, kept by ``step``
    seq: int = -1  # the scheduling number of the event being processed (``ran_before``)

    def __init__(self, initial_time: int = 0) -> None:
        super().__init__(initial_time)
        self.now = initial_time
        self.popped = 0  # events ``run_events`` has taken off the queue, in all its calls

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


_RESUME = Process._resume
_new = object.__new__


def run_events(env: Environment) -> NoReturn:
    """Process events as ``env.step()`` would, one after the other, until one raises.

    Every event popped, the one that raised included, is counted in ``env.popped`` (the
    engine's checkpoints and safety stops tell the two apart). An event whose one callback
    resumes a process (nearly all of desim's: a timeout or a lock grant some process waits
    for) has its generator sent the value right here, as ``Process._resume`` would, without
    the call; anything else (a failed event, several or other callbacks) goes the way of
    ``step``. What the process yields next is registered as ``_resume`` registers it; one
    already processed goes to ``_resume`` itself, whose loop sends its value on.
    """
    queue = env._queue
    resume = _RESUME
    method = MethodType
    n = 0
    try:
        while True:
            try:
                t, _, env.seq, event = heappop(queue)
            except IndexError:
                raise EmptySchedule from None
            n += 1
            env._now = env.now = t  # type: ignore[assignment]  # int: see the class docstring
            callbacks, event.callbacks = event.callbacks, None  # type: ignore[assignment]
            if event._ok:
                try:
                    (cb,) = callbacks
                except ValueError:  # none or several: rare (a process's end, a condition)
                    cb = None
                if type(cb) is method and cb.__func__ is resume:
                    proc: Process = cb.__self__  # type: ignore[assignment]
                    env._active_proc = proc
                    try:
                        nxt = proc._generator.send(event._value)
                    except StopIteration as e:
                        # the process ends: it succeeds with the generator's return value
                        proc._ok = True
                        proc._value = e.args[0] if len(e.args) else None
                        env.schedule(proc)
                        proc._target = None  # type: ignore[assignment]
                        env._active_proc = None
                        continue
                    except BaseException as e:
                        # the process fails; the frame of this loop leaves the traceback,
                        # as ``_resume`` strips its own
                        proc._ok = False
                        e.__traceback__ = e.__traceback__.tb_next  # type: ignore[union-attr]
                        proc._value = e
                        env.schedule(proc)
                        proc._target = None  # type: ignore[assignment]
                        env._active_proc = None
                        continue
                    try:
                        waiting = nxt.callbacks
                    except AttributeError:
                        if hasattr(nxt, "callbacks"):
                            raise
                        descr = _describe_frame(proc._generator.gi_frame)  # type: ignore[attr-defined]
                        raise RuntimeError(f'\n{descr}Invalid yield value "{nxt}"') from None
                    if waiting is None:
                        proc._resume(nxt)  # already processed: its value is sent at once
                    else:
                        waiting.append(cb)  # ``proc._resume``: the bound method just run
                        proc._target = nxt
                        env._active_proc = None
                    continue
            try:
                for callback in callbacks:
                    callback(event)
            except StopSimulation:
                event.callbacks = callbacks[callbacks.index(callback) + 1 :]
                env.schedule(event, EventPriority(-1))
                raise
            if not event._ok and not hasattr(event, "_defused"):
                exc = type(event._value)(*event._value.args)
                exc.__cause__ = event._value
                raise exc
    finally:
        env.popped += n


def timeout(env: simpy.Environment, delay: int) -> Timeout:
    """``Timeout(env, delay)``, built without its ``__init__`` and ``schedule`` calls."""
    if delay < 0:
        raise ValueError(f"Negative delay {delay}")
    ev = _new(Timeout)
    ev.env = env
    ev.callbacks = []
    ev._value = None
    ev._delay = delay
    ev._ok = True
    heappush(env._queue, (env.now + delay, NORMAL, next(env._eid), ev))
    return ev


def sleep(env: Environment, delay: int) -> Timeout:
    """``timeout(env, delay)`` for the running process to yield at once and keep no further.

    The process's previous such timeout is armed again if it has been processed (it is then
    nobody's: its process was resumed by it and moved on), so a loop of sleeps allocates one
    event, not one per sleep. Outside a process, or while the previous one is still pending
    (its process was interrupted, or a condition holds it), a new one is made.
    """
    proc = env._active_proc
    try:
        ev = proc.own_timeout  # type: ignore[union-attr]
    except AttributeError:  # no process runs, or its first sleep
        ev = None
    if ev is None or ev.callbacks is not None or delay < 0:
        ev = timeout(env, delay)
        if proc is not None:
            proc.own_timeout = ev  # type: ignore[attr-defined]
        return ev
    ev.callbacks = []
    ev._delay = delay
    heappush(env._queue, (env.now + delay, NORMAL, next(env._eid), ev))
    return ev


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
