"""What a workload element is: typed parameters and SimPy processes started on a machine.

Two things every element shares live here:

* **Phases.** ``WorkloadState`` (one per machine, ``shared(m)``) holds a rate multiplier per
  element, set by the ``phases`` element. Elements never re-create their processes when a
  phase changes: each draws its next gap and ``wait`` divides it by the element's current
  multiplier (rate x k = gap / k); with k = 0 the element sleeps until the next phase change.
  A change applies from each loop's next gap (the gap in progress is not redrawn).
* **CPU placement.** ``Placement`` says where an element's tasks run: ``pinned`` (each task
  stays on one CPU, dealt round-robin over ``cpus``), ``spread`` (a new task goes to an idle
  CPU if one exists, else to the one with the shortest run queue, as wake-up balancing does,
  then stays) or ``migrating`` (every operation of a task lands on a random CPU of the set:
  its RCU callbacks, gather batches and lock hand-offs move with it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from simpy.events import Event, Timeout

from desim.fields import MAX_CPUS, Int
from desim.model.simcore import sleep
from desim.records import declared_counters
from desim.rng import buffered

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.machine import Machine


class Params(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, validate_default=True
    )


RateMode = Literal["machine", "per_process"]


def rate_mode() -> Any:
    """The ``mode`` field of an element with a ``rate`` (munmap, madv_collapse, gup_fast)."""
    return Field(
        "machine",
        description="rate is machine-wide, or each live process's own (the load then grows "
        "with the population)",
    )


class Placement(BaseModel):
    """Where an element's tasks run (a policy name alone is accepted: ``placement: pinned``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    policy: Literal["pinned", "spread", "migrating"] = "spread"
    cpus: tuple[Int, ...] | None = Field(None, description="CPU ids allowed (default: all)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"policy": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _cpus(self):
        if self.cpus is not None and (
            not self.cpus or min(self.cpus) < 0 or max(self.cpus) >= MAX_CPUS
        ):
            raise ValueError(f"cpus must be a non-empty list of CPU ids from 0 to {MAX_CPUS - 1}")
        return self


class Placer:
    """A ``Placement`` applied to a machine: ``home()`` for a new task, ``where(home)`` per op."""

    __slots__ = ("cpus", "policy", "u", "_next")

    def __init__(self, m: Machine, placement: Placement, u) -> None:
        n = len(m.cpus)
        ids = placement.cpus if placement.cpus is not None else range(n)
        self.cpus = [m.cpus[i] for i in ids]
        self.policy = placement.policy
        self.u = u
        self._next = 0

    def home(self) -> CPU:
        cpus = self.cpus
        if self.policy == "pinned":
            cpu = cpus[self._next % len(cpus)]
            self._next += 1
            return cpu
        if self.policy == "spread":
            k = len(cpus)
            start = self._next
            self._next = (start + 1) % k
            best = None
            for j in range(k):
                c = cpus[(start + j) % k]
                if c.owner is None:
                    return c
                if best is None or len(c.runq) < len(best.runq):
                    best = c
            return best  # type: ignore[return-value]  # cpus is never empty
        return cpus[int(self.u() * len(cpus))]

    def where(self, home: CPU) -> CPU:
        if self.policy == "migrating":
            return self.cpus[int(self.u() * len(self.cpus))]
        return home


class WorkloadState:
    """Run-wide workload state shared by elements: phase multipliers, where processes live.

    Operations a process performs on itself (its faults in ``per_process`` mode, munmap,
    MADV_COLLAPSE) run on the CPU its ``processes`` placement gives it (``cpu_of``).
    """

    __slots__ = ("env", "mult", "changed", "phase", "homes", "proc_placer", "born", "populated")

    def __init__(self, env) -> None:
        self.env = env
        self.mult: dict[str, float] = {}
        self.changed = Event(env)
        self.phase = -1
        self.homes: dict[int, CPU] = {}  # mm id -> CPU its process lives on
        self.proc_placer: Placer | None = None  # the processes element's placement
        self.born = Event(env)  # fires when the processes element adds an mm
        # fires once every initial process has its mm (None: no processes element has any)
        self.populated: Event | None = None

    def mm_born(self) -> None:
        ev, self.born = self.born, Event(self.env)
        ev.succeed()

    def until_populated(self):
        """Wait until the initial processes exist (generator): a per-process load draws its
        first gap over the whole initial population, not over the first mm forked."""
        if self.populated is not None and not self.populated.processed:
            yield self.populated

    def until_born(self, idle: int):
        """Sleep until a process is born, or ``idle`` ns: what a per-process load waits for
        while no mm is alive (generator)."""
        yield self.env.any_of([self.born, Timeout(self.env, idle)])

    def cpu_of(self, mm) -> CPU | None:
        """Where ``mm``'s process runs its next operation (None: no process element placed it)."""
        home = self.homes.get(mm.id)
        if home is None or self.proc_placer is None:
            return home
        return self.proc_placer.where(home)

    def set_mix(self, index: int, mix: dict[str, float]) -> None:
        self.phase = index
        self.mult = dict(mix)
        ev, self.changed = self.changed, Event(self.env)
        ev.succeed()


def shared(m: Machine) -> WorkloadState:
    """The machine's ``WorkloadState``, made on first use (the machine stays workload-agnostic)."""
    st = m.__dict__.get("_workload_state")
    if st is None:
        st = m.__dict__["_workload_state"] = WorkloadState(m.env)
    return st


P = TypeVar("P", bound=BaseModel)


class Element(Generic[P]):
    """A workload element over its parameters ``P`` (its ``Params`` class: ``self.p``)."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = Params
    summary: ClassVar[str] = ""
    counters: ClassVar[tuple[str, ...]] = ()  # the element's own counters (desim.records)
    # fields naming input files (a trace): a sweep run's digest covers their contents
    input_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, machine: Machine, params: P) -> None:
        self.m = machine
        self.p: P = params
        self.env = machine.env
        self.state = shared(machine)
        for name in declared_counters(type(self)):
            machine.counters.setdefault(name, 0)

    @classmethod
    def check_config(cls, params: BaseModel, config) -> None:
        """Refuse parameters the configured machine cannot satisfy (``ValueError`` naming the
        dotted field), when the config is loaded: a ``cpus`` count above the machine's, a
        ``cpu`` id or a placement's CPU ids outside it. Elements with more needs extend it."""
        n = config.machine.cpus
        where = f"workload.{cls.name}"
        for field in type(params).model_fields:
            v = getattr(params, field)
            if field == "cpus" and isinstance(v, int) and v > n:
                raise ValueError(f"{where}.cpus: {v} but the machine has {n} CPUs")
            if field == "cpu" and isinstance(v, int) and v >= n:
                raise ValueError(f"{where}.cpu: {v} but the machine has {n} CPUs")
            if isinstance(v, Placement) and v.cpus is not None and max(v.cpus) >= n:
                raise ValueError(
                    f"{where}.{field}.cpus: CPU {max(v.cpus)} but the machine has {n} CPUs"
                )

    def rng(self, stream: str) -> np.random.Generator:
        return self.m.streams.get(f"{self.name}.{stream}")

    def uniform(self, stream: str) -> Callable[[], float]:
        """Buffered U[0,1) draws from a named stream."""
        rng = self.rng(stream)
        return buffered(rng.random)

    def placer(self, placement: Placement, stream: str = "placement") -> Placer:
        return Placer(self.m, placement, self.uniform(stream))

    def rate_multiplier(self) -> float:
        return self.state.mult.get(self.name, 1.0)

    def wait(self, gap: int):
        """Sleep ``gap`` ns scaled by the phase's rate multiplier for this element (generator)."""
        st = self.state
        k = st.mult.get(self.name, 1.0)
        while k == 0:
            yield st.changed
            k = st.mult.get(self.name, 1.0)
        yield sleep(self.env, gap if k == 1.0 else round(gap / k))

    def on_arrivals(self, gap, u, start, per_process: bool = False, idle: float = 0) -> None:
        """Start a process: every ``gap()`` ns (phase-scaled), pick a live mm with the uniform
        sampler ``u`` and call ``start(mm)``; an arrival finding no mm alive is dropped.

        ``per_process``: ``gap`` is each live process's own gap, so the arrivals machine-wide
        are their superposition, drawn as one stream whose gap is divided by the number of mms
        alive when it is drawn (exact for exponential gaps); with none alive the stream waits
        for a process to be born (or ``idle`` ns: one mean gap, for mms no ``processes``
        element made). The load then grows with the population, as
        ``faults`` in ``per_process`` mode does.
        """

        def arrivals():
            m = self.m
            while True:
                yield from self.wait(gap())
                mms = m.mms
                if mms:
                    start(mms[int(u() * len(mms))])

        def per_process_arrivals():
            m = self.m
            yield from self.state.until_populated()
            while True:
                n = len(m.mms)
                if n == 0:
                    yield from self.state.until_born(max(1, round(idle)))
                    continue
                yield from self.wait(max(1, round(gap() / n)))
                mms = m.mms
                if mms:
                    start(mms[int(u() * len(mms))])

        self.env.process(per_process_arrivals() if per_process else arrivals())

    def start(self) -> None:
        raise NotImplementedError

    @staticmethod
    def run_on(m: Machine, cpu, task, body):
        """Run generator ``body`` as ``task`` on ``cpu`` (waiting for the CPU if it is busy)."""
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        result = yield from body
        cpu.release()
        return result
