"""``build``: ``make -jN`` as a closed loop: N job slots, K jobs, each a chain of processes.

A slot is a parent task (the jobserver slot's shell) that takes the next job while any are left
and runs the job's chain: for each process in ``chain`` it forks the process (an exec'd mm),
waits for it (``wait4``) and goes on. In the kernel the chain nests (make → sh → gcc → cc1, as)
and each process's exit is on its parent's ``wait``: the same critical path as a chain run in
turn. Each process runs its user-mode ``burst`` while faulting in its ``tables`` working set,
then exits: ``exit_mmap`` (cost growing with what it mapped) and the mm-lifetime rule's wait if
it sits there, then ``exit_notify`` releases the parent (``desim.workloads._closed``).

Metrics: ``build.makespan_ns`` (from the start to the K-th job's end; NaN if the run ended
first), ``build.jobs_done``, ``build.jobs_per_s`` and ``build.job_latency`` (one job's chain).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from desim.distributions import AnyDist, TimeDist, count_at_most
from desim.fields import MAX_PROCESSES, MAX_TABLES, Int
from desim.model.sched import scheduler
from desim.model.stats import LogHistogram
from desim.workloads import ELEMENTS
from desim.workloads._closed import run_child
from desim.workloads.base import Element, Params

MAX_CHAIN = 64


class ProcessSpec(Params):
    name: str = Field("proc", max_length=32, description="what it stands for (sh, cc1...)")
    burst: TimeDist = Field(
        "1ms", description="user-mode CPU time of one run", validate_default=True
    )
    tables: Annotated[AnyDist, count_at_most(MAX_TABLES)] = Field(
        4,
        description="PTE tables of its working set (2 MiB of address space each)",
        validate_default=True,
    )
    count: Int = Field(1, ge=1, le=1000, description="how many times it runs in a row")


class BuildParams(Params):
    slots: Int = Field(16, ge=1, le=MAX_PROCESSES, description="job slots (make -jN)")
    jobs: Int = Field(200, ge=1, le=10_000_000, description="jobs to run (K)")
    chain: tuple[ProcessSpec, ...] = Field(
        (
            ProcessSpec(name="sh", burst="1ms", tables=4),
            ProcessSpec(name="cc1", burst="50ms", tables=30),
            ProcessSpec(name="as", burst="3ms", tables=6),
        ),
        min_length=1,
        max_length=MAX_CHAIN,
        description="the processes of one job, in order",
    )


@ELEMENTS.register("build")
class Build(Element[BuildParams]):
    Params = BuildParams
    summary = "closed-loop make -jN: K jobs of fork/exec/burst/exit chains; makespan, jobs/s"

    def start(self) -> None:
        m = self.m
        self.sched = scheduler(m)
        self.bursts = [
            s.burst.ns_sampler(self.rng(f"burst.{i}")) for i, s in enumerate(self.p.chain)
        ]
        self.tables = [
            s.tables.sampler(self.rng(f"tables.{i}")) for i, s in enumerate(self.p.chain)
        ]
        self.u = self.uniform("pick")
        self.next_job = 0
        self.done = 0
        self.makespan = float("nan")
        self.latency = LogHistogram()
        m.result_hooks.append(self.results)
        for _ in range(self.p.slots):
            self.env.process(self._slot())

    def _slot(self):
        m = self.m
        env = self.env
        sched = self.sched
        chain = self.p.chain
        task = sched.new_task("make")
        yield from sched.start(task)
        while self.next_job < self.p.jobs:
            self.next_job += 1
            t0 = env.now
            for i, spec in enumerate(chain):
                for _ in range(spec.count):
                    yield from run_child(
                        m,
                        sched,
                        task,
                        max(1, round(self.tables[i]())),
                        self.bursts[i](),
                        self.u,
                        spec.name,
                    )
            self.latency.add(env.now - t0)
            self.done += 1
            if self.done == self.p.jobs:
                self.makespan = env.now
        yield from sched.sleep(task, env.event())  # make waits for the other slots: forever

    def results(self, now: int) -> dict[str, float]:
        span = self.makespan if self.done == self.p.jobs else now
        s = {
            "build.makespan_ns": self.makespan,
            "build.jobs_done": self.done,
            "build.jobs_per_s": self.done * 1e9 / max(1, span),
        }
        s.update(self.latency.summary("build.job_latency"))
        return s
