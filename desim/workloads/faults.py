"""``faults``: minor page faults, each a lockless RCU walker that takes the ptl (``handle_fault``).

Two shapes:

* ``per_cpu`` (default): each of ``cpus`` CPUs runs a closed loop: think, then one minor fault
  on a random table of a random live process. The think time is user code by default
  (``gaps: user``: the CPU takes ticks, is in no extended QS, and loses time to whatever
  interrupts or preempts it; the fault returns to user mode, not a context switch); with
  ``gaps: idle`` the CPU idles between faults (NO_HZ, an extended QS);
* ``per_process``: each live process faults as a Poisson process at ``rate``, on the CPU its
  ``processes`` placement gives it. The superposition over the n live processes is drawn as
  one stream whose gap is a per-process gap divided by n (exact for exponential gaps, which a
  plain rate gives).

A fault on a process below its table count first allocates a table (``__pte_alloc``).
Phases scale the fault rate (think time / k, or gap / k).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from desim.distributions import Gap, Interarrival
from desim.fields import MAX_CPUS, Int
from desim.model import mm_ops
from desim.model.hooks import USER_TASK
from desim.model.simcore import sleep
from desim.workloads import ELEMENTS
from desim.workloads.base import Element, Params, Placement


class FaultsParams(Params):
    mode: Literal["per_cpu", "per_process"] = Field("per_cpu", description="who faults")
    think: Gap = Field(
        {"dist": "exponential", "mean": "20us"},
        description="per_cpu: time between faults on a CPU",
        validate_default=True,
    )
    cpus: Int | None = Field(
        None, ge=1, le=MAX_CPUS, description="per_cpu: how many CPUs fault (default: all)"
    )
    gaps: Literal["user", "idle"] = Field(
        "user",
        description="per_cpu: the think time runs user code (the CPU ticks, no extended "
        "QS) or leaves the CPU idle",
    )
    rate: Interarrival = Field(
        "2000/s", description="per_process: faults per second per process", validate_default=True
    )
    placement: Placement = Field(
        Placement(policy="migrating"),
        description="per_process: where a fault runs when no processes element placed its mm",
    )


@ELEMENTS.register("faults")
class Faults(Element[FaultsParams]):
    Params = FaultsParams
    summary = "minor page faults (per CPU or per process): RCU lockless walk, ptl, pte_same"

    def start(self) -> None:
        if self.p.mode == "per_process":
            self.env.process(self._per_process())
            return
        n = self.p.cpus or len(self.m.cpus)
        for cpu in self.m.cpus[:n]:
            self.env.process(self._loop(cpu))

    def _loop(self, cpu):
        m = self.m
        think = self.p.think.ns_sampler(self.rng(f"think.cpu{cpu.id}"))
        u = self.uniform(f"pick.cpu{cpu.id}")
        task = USER_TASK()
        fault = mm_ops.handle_fault
        env = self.env
        mult = self.state.mult
        name = self.name
        user = self.p.gaps == "user"
        if user:
            cpu.enter_user()
        while True:
            if mult.get(name, 1.0) == 1.0:
                yield sleep(env, think())  # the common case of wait(), without a generator
            else:
                yield from self.wait(think())
            if user:
                # User code runs its full think time: what others took meanwhile comes on top.
                lost = cpu.user_time_lost()
                while lost:
                    yield sleep(env, lost)
                    lost = cpu.user_time_lost()
            mms = m.mms
            if not mms:
                continue
            mm = mms[int(u() * len(mms))]
            ev = cpu.syscall(task) if user else cpu.acquire(task)
            if ev is not None:
                yield ev
            yield from fault(m, cpu, task, mm, u(), u() < mm.shmem_fraction)
            if user:
                cpu.to_user()  # back to user mode: not a context switch
            else:
                cpu.release()

    def _per_process(self):
        m = self.m
        env = self.env
        gap = self.p.rate.ns_sampler(self.rng("arrivals"))
        u = self.uniform("pick")
        placer = self.placer(self.p.placement)
        state = self.state
        idle = self.p.rate.mean()  # with no process alive: a birth, or one mean gap
        yield from state.until_populated()
        while True:
            n = len(m.mms)
            if n == 0:
                yield from state.until_born(max(1, round(idle)))
                continue
            yield from self.wait(max(1, round(gap() / n)))
            mms = m.mms
            if not mms:
                continue
            mm = mms[int(u() * len(mms))]
            cpu = state.cpu_of(mm) or placer.home()
            task = USER_TASK()
            body = mm_ops.handle_fault(m, cpu, task, mm, u(), u() < mm.shmem_fraction)
            env.process(self.run_on(m, cpu, task, body))
