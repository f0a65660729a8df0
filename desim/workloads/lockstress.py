"""``lockstress``: a pure spinlock workload, for calibrating the lock model against queueing theory.

Nothing but lock traffic on ``K`` locks of the class ``lockstress`` (``machine.lock``):

* ``closed`` (default): each of ``cpus`` CPUs loops think (off the CPU, in user mode), then
  acquire / hold / release one of the K locks. With one lock and exponential think and hold
  times this is the finite-source (machine-repairman) queue M/M/1//N.
* ``open``: acquisitions arrive machine-wide at ``rate`` (exponential gaps: a Poisson process),
  each as a task placed by ``placement`` (default ``spread``: an idle CPU when there is one, so
  arrivals do not queue for CPUs); with one lock and exponential holds this is M/M/1.

The spinning waiter keeps its CPU (queued spinlocks). Lock statistics are the ``lockstress``
class in the summary (``lock.lockstress.wait_mean_ns`` is the mean wait over all acquisitions,
the queue's Wq plus the configured ``costs.lock_uncontended``/``lock_handoff``; set both to 0
for a pure queue). Phases scale the think rate (closed) or the arrival rate (open).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from desim.distributions import Interarrival, TimeDist
from desim.fields import MAX_CPUS, MAX_LOCKS, Int
from desim.model.hooks import thread_kind
from desim.workloads import ELEMENTS
from desim.workloads.base import Element, Params, Placement

LOCKSTRESS = thread_kind("lockstress")


class LockstressParams(Params):
    mode: Literal["closed", "open"] = Field(
        "closed", description="think/hold loops or Poisson arrivals"
    )
    locks: Int = Field(
        1, ge=1, le=MAX_LOCKS, description="K: each acquisition picks one of K locks at random"
    )
    hold: TimeDist = Field(
        {"dist": "exponential", "mean": "1us"}, description="time held", validate_default=True
    )
    think: TimeDist = Field(
        {"dist": "exponential", "mean": "10us"},
        description="closed: time between release and the next acquire",
        validate_default=True,
    )
    rate: Interarrival | None = Field(
        None, description="open: acquisitions per second, machine-wide"
    )
    cpus: Int | None = Field(
        None, ge=1, le=MAX_CPUS, description="closed: how many CPUs loop (default: all)"
    )
    placement: Placement = Field(Placement(), description="open: where arriving tasks run")

    @model_validator(mode="after")
    def _mode(self):
        if self.mode == "open" and self.rate is None:
            raise ValueError("rate: open mode needs an arrival rate (e.g. 500000/s)")
        if self.mode == "closed" and self.think.mean() < 1 and self.hold.mean() < 1:
            # with zero lock costs, such a loop would never let simulated time move on
            raise ValueError(
                "think: think and hold cannot both average below 1ns "
                "(simulated time would stand still)"
            )
        return self


@ELEMENTS.register("lockstress")
class Lockstress(Element[LockstressParams]):
    Params = LockstressParams
    counters = ("lockstress.arrivals", "lockstress.cycles")
    summary = "calibration: think / acquire / hold / release on K spinlocks (closed or Poisson)"

    def start(self) -> None:
        p = self.p
        self.locks = [self.m.lock("lockstress") for _ in range(p.locks)]
        self.hold = p.hold.ns_sampler(self.rng("hold"))
        if p.mode == "closed":
            n = p.cpus or len(self.m.cpus)
            for cpu in self.m.cpus[:n]:
                self.env.process(self._loop(cpu))
        else:
            self.env.process(self._arrivals())

    def _pick(self, u):
        locks = self.locks
        return locks[0] if len(locks) == 1 else locks[int(u() * len(locks))]

    def _critical(self, cpu, lock):
        ev = lock.acquire(cpu)
        if ev is not None:
            yield ev
        yield cpu.compute(self.hold())
        lock.release(cpu)

    def _loop(self, cpu):
        think = self.p.think.ns_sampler(self.rng(f"think.cpu{cpu.id}"))
        u = self.uniform(f"pick.cpu{cpu.id}")
        task = LOCKSTRESS()
        counters = self.m.counters
        while True:
            yield from self.wait(think())
            ev = cpu.acquire(task)
            if ev is not None:
                yield ev
            yield from self._critical(cpu, self._pick(u))
            cpu.release()
            counters["lockstress.cycles"] += 1

    def _arrivals(self):
        gap = self.p.rate.ns_sampler(self.rng("arrivals"))
        u = self.uniform("pick")
        placer = self.placer(self.p.placement)
        m = self.m
        env = self.env
        while True:
            yield from self.wait(gap())
            cpu = placer.home()
            env.process(self.run_on(m, cpu, LOCKSTRESS(), self._critical(cpu, self._pick(u))))
            m.counters["lockstress.arrivals"] += 1
