"""``rcu_callers``: tasks that wait for grace periods, so their latency can be measured.

Each caller, at the given rate (scaled by the phases' mix) on a random CPU, calls
``synchronize_rcu``, ``synchronize_rcu_expedited`` or ``rcu_barrier`` and sleeps until it
returns (the latencies are ``rcu.synchronize.*``, ``rcu.expedited.*`` and ``rcu.barrier.*`` in
the summary). This is how the calibration profiles reproduce published ``synchronize_rcu``
timings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from desim.distributions import Interarrival
from desim.model.hooks import thread_kind
from desim.workloads import ELEMENTS
from desim.workloads.base import Element, Params

CALLER = thread_kind("synchronize_rcu caller")


class RcuCallersParams(Params):
    rate: Interarrival = Field(
        "100/s", description="calls per second, machine-wide", validate_default=True
    )
    kind: Literal["synchronize", "expedited", "barrier"] = Field(
        "synchronize", description="which wait to call"
    )
    loop: bool = Field(
        False,
        description="one task calling back to back on one CPU, as a measuring loop does "
        "(rate is then ignored)",
    )


@ELEMENTS.register("rcu_callers")
class RcuCallers(Element[RcuCallersParams]):
    Params = RcuCallersParams
    summary = "tasks calling synchronize_rcu / _expedited / rcu_barrier, to time grace periods"

    def start(self) -> None:
        self.env.process(self._loop() if self.p.loop else self._arrivals())

    def _wait_fn(self):
        rcu = self.m.rcu
        return {
            "synchronize": rcu.synchronize,
            "expedited": rcu.synchronize_expedited,
            "barrier": rcu.barrier,
        }[self.p.kind]

    def _loop(self):
        """A closed loop: the next call starts when the last returns (``desim probe``'s)."""
        m = self.m
        wait = self._wait_fn()
        cpu = m.cpus[0]
        task = CALLER()
        while True:
            yield from self.run_on(m, cpu, task, wait(cpu, task))

    def _arrivals(self):
        m = self.m
        env = self.env
        gap = self.p.rate.ns_sampler(self.rng("arrivals"))
        u = self.uniform("cpu")
        wait = self._wait_fn()
        while True:
            yield from self.wait(gap())  # phase-scaled, as every element's arrivals
            cpu = m.cpus[int(u() * len(m.cpus))]
            task = CALLER()
            env.process(self.run_on(m, cpu, task, wait(cpu, task)))
