"""``processes``: the population of mms, with fork/exec arrivals and exits.

Initial processes are forked at time 0 and populate their tables at once: a run is a window
into a machine that has been up for a while (use ``warmup`` to leave that out of the
statistics). With ``fork_rate`` new processes arrive (a Poisson process for a plain rate; any
distribution of gaps otherwise; scaled by phases); each maps all its tables at fork with
``populate_on_fork``, or else starts with none and its faults populate them one by one. With
``lifetime`` each process exits after a drawn time, its tables freed through mmu_gather
(``exit_mmap``). ``placement`` decides the CPU a process lives on: its fork, its own operations
(faults in ``per_process`` mode, munmap, MADV_COLLAPSE, GUP-fast) and its exit run there
(``migrating``: anywhere, op by op).

``guests`` of the initial processes are KVM guests (s390: their mms carry PGSTEs, so every
table is a full page), with ``guest_tables`` tables each; they never exit, and nothing of theirs
is ever collapsed: on s390 ``s390_enable_sie`` (arch/s390/mm/gmap.c, v6.6) splits the guest
mm's THPs and marks every VMA and the mm's ``def_flags`` ``VM_NOHUGEPAGE``, which khugepaged
and MADV_COLLAPSE both refuse (``hugepage_vma_check``, mm/huge_memory.c), so their tables
map no shmem range.

``scale`` simulates a fraction of a machine's population: ``initial``, ``persistent``,
``guests`` and ``fork_rate`` are multiplied by it (a class given as non-zero keeps at least one
process), and nothing per process changes (``tables``, ``lifetime``, per-process rates). So
live page-table memory, everything that grows with the number of mms (per-mm caches, lists,
exits) and every load given per process scale with it, while what is per CPU (a per-CPU pool's
carving page, per-CPU lists, one batch per CPU) or per machine (khugepaged's scan, a
machine-wide ``rate``) does not: at ``scale`` s, a per-CPU constant weighs 1/s times more
against live memory than it does on the machine the config stands for.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from simpy.events import Event

from desim.config import MAX_PROCESSES, MAX_TABLES, Int, Real
from desim.distributions import AnyDist, Interarrival, TimeDist, count_at_most
from desim.model import mm_ops
from desim.workloads import ELEMENTS
from desim.workloads.base import Element, Params, Placement


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
    pgste_fraction: Real = Field(
        0.0, ge=0, le=1, description="share of the other processes that are KVM guests (s390)"
    )
    guests: Int = Field(
        0,
        ge=0,
        le=MAX_PROCESSES,
        description="how many of the initial processes are long-lived KVM guests (PGSTE mms)",
    )
    guest_tables: Annotated[AnyDist, count_at_most(MAX_TABLES)] | None = Field(
        None, description="PTE tables each KVM guest maps (default: tables)"
    )
    scale: Real = Field(
        1.0,
        gt=0,
        le=1,
        description="fraction of the population simulated: initial, persistent, guests and "
        "fork_rate are multiplied by it",
    )
    fork_rate: Interarrival | None = Field(None, description="new processes per second")
    lifetime: TimeDist | None = Field(None, description="time from fork to exit")
    populate_on_fork: bool = Field(
        True,
        description="a process forked during the run maps all its tables at once (false: its "
        "faults populate them; initial processes always start populated)",
    )
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
        if params.guests > params.initial:
            raise ValueError(
                f"workload.processes.guests: {params.guests} exceeds initial ({params.initial})"
            )
        if params.persistent + params.guests > params.initial:
            raise ValueError(
                f"workload.processes.persistent: {params.persistent} persistent and "
                f"{params.guests} guests exceed initial ({params.initial})"
            )

    def counts(self) -> tuple[int, int, int]:
        """(initial, guests, persistent) after ``scale``: a class given keeps one process."""
        p = self.p

        def scaled(n: int) -> int:
            return 0 if n == 0 else max(1, round(n * p.scale))

        initial = scaled(p.initial)
        guests = min(scaled(p.guests), initial)
        return initial, guests, min(scaled(p.persistent), initial - guests)

    def start(self) -> None:
        p = self.p
        self.n_tables = p.tables.sampler(self.rng("tables"))
        self.n_guest_tables = (
            p.guest_tables.sampler(self.rng("guest_tables")) if p.guest_tables else self.n_tables
        )
        self.pick = self.uniform("pick")
        self.lifetime = p.lifetime.ns_sampler(self.rng("lifetime")) if p.lifetime else None
        self.placer_ = self.placer(p.placement)
        self.state.proc_placer = self.placer_
        initial, guests, persistent = self.counts()
        self.unborn = initial
        if initial:
            self.state.populated = Event(self.env)
        for i in range(initial):
            guest = i < guests
            self.env.process(
                self._life(self.placer_.home(), guest or i < guests + persistent, guest, True)
            )
        if p.fork_rate is not None:
            gap = p.fork_rate.ns_sampler(self.rng("arrivals"))
            if p.scale != 1.0:
                s = p.scale
                gap = lambda g=gap: max(1, round(g() / s))  # noqa: E731
            self.env.process(self._arrivals(gap))

    def _arrivals(self, gap):
        env = self.env
        while True:
            yield from self.wait(gap())
            env.process(self._life(self.placer_.home()))

    def _life(self, home, persistent: bool = False, guest: bool = False, initial: bool = False):
        m = self.m
        p = self.p
        task = object()
        pgste = guest or (p.pgste_fraction > 0 and self.pick() < p.pgste_fraction)
        target = max(1, round(self.n_guest_tables() if guest else self.n_tables()))
        cpu = home
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        mm = yield from mm_ops.do_fork(m, cpu, target, pgste)
        mm.shmem_fraction = 0.0 if guest else p.shmem_fraction
        homes = self.state.homes
        homes[mm.id] = home
        self.state.mm_born()
        if initial:
            self.unborn -= 1
            if not self.unborn:
                self.state.populated.succeed()
        if initial or p.populate_on_fork:
            for _ in range(target):
                t = yield from mm_ops.populate(m, cpu, task, mm, self.pick() < mm.shmem_fraction)
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
