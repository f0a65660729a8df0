"""``faults``: page faults from every CPU, each a lockless RCU walker that takes the ptl.

Each faulting CPU runs a closed loop: think (user mode, the CPU free), then one minor fault on a
random table of a random live process. A fault on a process below its table count first
allocates a table (the populate path of ``__pte_alloc``).
"""

from __future__ import annotations

from pydantic import Field

from desim.distributions import TimeDist
from desim.model import mm_ops
from desim.workloads import ELEMENTS
from desim.workloads.base import Element, Params


class FaultsParams(Params):
    think: TimeDist = Field(
        {"dist": "exponential", "mean": "20us"}, description="time between faults on a CPU"
    )
    cpus: int | None = Field(None, ge=1, description="how many CPUs fault (default: all)")


@ELEMENTS.register("faults")
class Faults(Element):
    Params = FaultsParams
    summary = "minor page faults: RCU-protected lockless walk, ptl, pte_same re-check"

    def start(self) -> None:
        n = self.p.cpus or len(self.m.cpus)
        for cpu in self.m.cpus[:n]:
            self.env.process(self._loop(cpu))

    def _loop(self, cpu):
        m = self.m
        env = self.env
        think = self.p.think.ns_sampler(self.rng(f"think.cpu{cpu.id}"))
        u = self.uniform(f"pick.cpu{cpu.id}")
        task = object()
        fault = mm_ops.handle_fault
        while True:
            yield env.timeout(think())
            mms = m.mms
            if not mms:
                continue
            mm = mms[int(u() * len(mms))]
            ev = cpu.acquire(task)
            if ev is not None:
                yield ev
            yield from fault(m, cpu, task, mm, u(), u() < mm.shmem_fraction)
            cpu.release()
