"""``spawn``: fork + exit + waitpid loops, lmbench ``lat_proc`` style (closed loop).

Each loop is a parent task that forks a child (an exec'd mm), waits for it, and starts again at
once. The child runs ``work`` of user code while faulting in ``tables`` PTE tables, then exits
(``desim.workloads._closed``). ``mode: per_cpu``: one loop per CPU, parent and children bound
to it (``cpus`` of them; lat_proc run once per CPU); ``per_task``: ``tasks`` loops placed by the
scheduler. Metrics: ``spawn.per_s`` (children reaped per second, all loops) and
``spawn.latency`` (fork to the parent's wait returning).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from desim.distributions import AnyDist, TimeDist, count_at_most
from desim.fields import MAX_CPUS, MAX_PROCESSES, MAX_TABLES, Int
from desim.model.sched import scheduler
from desim.model.stats import LogHistogram
from desim.workloads import ELEMENTS
from desim.workloads._closed import run_child
from desim.workloads.base import Element, Params


class SpawnParams(Params):
    mode: Literal["per_cpu", "per_task"] = Field(
        "per_cpu", description="one loop per CPU (bound to it) or tasks placed by the scheduler"
    )
    cpus: Int | None = Field(
        None, ge=1, le=MAX_CPUS, description="per_cpu: how many CPUs run a loop (default: all)"
    )
    tasks: Int = Field(1, ge=1, le=MAX_PROCESSES, description="per_task: how many loops")
    work: TimeDist = Field(
        0, description="user-mode CPU time of each child before it exits", validate_default=True
    )
    tables: Annotated[AnyDist, count_at_most(MAX_TABLES)] = Field(
        1, description="PTE tables each child's exec'd mm faults in", validate_default=True
    )


@ELEMENTS.register("spawn")
class Spawn(Element[SpawnParams]):
    Params = SpawnParams
    summary = "closed-loop fork + exit + waitpid (lat_proc): children reaped per second"

    def start(self) -> None:
        p = self.p
        m = self.m
        self.sched = scheduler(m)
        self.work = p.work.ns_sampler(self.rng("work"))
        self.tables = p.tables.sampler(self.rng("tables"))
        self.u = self.uniform("pick")
        self.latency = LogHistogram()
        self.done = 0
        self.t0 = 0
        m.result_hooks.append(self.results)
        m.clear_hooks.append(self.clear_stats)
        if p.mode == "per_cpu":
            n = p.cpus or len(m.cpus)
            for c in m.cpus[:n]:
                self.env.process(self._loop([c]))
        else:
            for _ in range(p.tasks):
                self.env.process(self._loop(None))

    def _loop(self, allowed):
        m = self.m
        env = self.env
        sched = self.sched
        task = sched.new_task("spawn", allowed)
        yield from sched.start(task)
        while True:
            t0 = env.now
            yield from run_child(m, sched, task, max(1, round(self.tables())), self.work(), self.u)
            self.latency.add(env.now - t0)
            self.done += 1

    def clear_stats(self) -> None:
        self.latency.clear()
        self.done = 0
        self.t0 = self.env.now

    def results(self, now: int) -> dict[str, float]:
        s = {"spawn.children": self.done, "spawn.per_s": self.done * 1e9 / max(1, now - self.t0)}
        s.update(self.latency.summary("spawn.latency"))
        return s
