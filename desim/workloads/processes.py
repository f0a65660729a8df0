"""``processes``: the population of mms, with fork/exec arrivals and exits.

Initial processes are forked at time 0 and populate their tables (use ``warmup`` to leave that
out of the statistics). With ``fork_rate`` new processes arrive (a Poisson process for a plain
rate; any distribution of gaps otherwise; scaled by phases); with ``lifetime`` each process exits
after a drawn time, its tables freed through mmu_gather (``exit_mmap``). ``placement`` decides
the CPU a process lives on: its fork, its own operations (faults in ``per_process`` mode,
munmap, MADV_COLLAPSE) and its exit run there (``migrating``: anywhere, op by op).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from desim.distributions import AnyDist, Interarrival, TimeDist, count_at_most
from desim.fields import MAX_PROCESSES, MAX_TABLES, Int, Real
from desim.model import mm_ops
from desim.model.hooks import thread_kind
from desim.workloads import ELEMENTS
from desim.workloads.base import Element, Params, Placement

PROCESS = thread_kind("process")  # forks, populates its tables, exits


class ProcessesParams(Params):
    initial: Int = Field(16, ge=0, le=MAX_PROCESSES, description="processes alive at time 0")
    persistent: Int = Field(
        0,
        ge=0,
        le=MAX_PROCESSES,
        description="how many of the initial ones never exit (a server's long-lived parent)",
    )
    tables: Annotated[AnyDist, count_at_most(MAX_TABLES)] = Field(
        32, description="PTE tables each process maps (2 MiB each)"
    )
    shmem_fraction: Real = Field(
        0.5, ge=0, le=1, description="share of tables mapping the shared shmem file"
    )
    pgste_fraction: Real = Field(0.0, ge=0, le=1, description="share of KVM guest mms (s390)")
    fork_rate: Interarrival | None = Field(None, description="new processes per second")
    lifetime: TimeDist | None = Field(None, description="time from fork to exit")
    populate_on_fork: bool = Field(True, description="a new process maps all its tables at once")
    placement: Placement = Field(
        Placement(policy="migrating"),
        description="CPU each process runs on (pinned/spread/migrating)",
    )


@ELEMENTS.register("processes")
class Processes(Element):
    Params = ProcessesParams
    summary = "mm population: fork/exec arrivals, lifetimes, exit through mmu_gather"

    @classmethod
    def check_config(cls, params, config) -> None:
        super().check_config(params, config)
        if params.persistent > params.initial:
            raise ValueError(
                f"workload.processes.persistent: {params.persistent} exceeds "
                f"initial ({params.initial})"
            )

    def start(self) -> None:
        p = self.p
        self.n_tables = p.tables.sampler(self.rng("tables"))
        self.pick = self.uniform("pick")
        self.lifetime = p.lifetime.ns_sampler(self.rng("lifetime")) if p.lifetime else None
        self.placer_ = self.placer(p.placement)
        self.state.proc_placer = self.placer_
        for i in range(p.initial):
            self.env.process(self._life(self.placer_.home(), i < p.persistent))
        if p.fork_rate is not None:
            self.env.process(self._arrivals(p.fork_rate.ns_sampler(self.rng("arrivals"))))

    def _arrivals(self, gap):
        env = self.env
        while True:
            yield from self.wait(gap())
            env.process(self._life(self.placer_.home()))

    def _life(self, home, persistent: bool = False):
        m = self.m
        p = self.p
        task = PROCESS()
        pgste = p.pgste_fraction > 0 and self.pick() < p.pgste_fraction
        target = max(1, round(self.n_tables()))
        cpu = home
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        mm = yield from mm_ops.do_fork(m, cpu, target, pgste)
        mm.shmem_fraction = p.shmem_fraction
        homes = self.state.homes
        homes[mm.id] = home
        if p.populate_on_fork:
            for _ in range(target):
                t = yield from mm_ops.populate(m, cpu, task, mm, self.pick() < p.shmem_fraction)
                if t is None:
                    break
        cpu.release()
        if self.lifetime is None or persistent:
            return
        yield self.env.timeout(self.lifetime())
        cpu = self.placer_.where(home)
        yield from self.run_on(m, cpu, task, mm_ops.exit_mmap(m, cpu, task, mm))
        m.mm_life.final_drop(cpu, mm)  # finish_task_switch after the exiting task's switch
        del homes[mm.id]
