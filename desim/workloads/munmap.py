"""``munmap``: processes unmap ranges, freeing their tables through mmu_gather (``do_munmap``).

Calls arrive machine-wide at ``rate`` (scaled by phases; ``mode: per_process``: each live
process at ``rate``, so the load follows the population), each in a random live mm, on the CPU
its process lives on (a random CPU if no ``processes`` element placed it). An unmapped range is
not faulted again unless ``remap`` says the workload maps it again.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from desim.distributions import AnyDist, Interarrival, count_at_most
from desim.fields import MAX_TABLES
from desim.model import mm_ops
from desim.model.hooks import USER_TASK
from desim.workloads import ELEMENTS
from desim.workloads.base import Element, Params, RateMode, rate_mode


class MunmapParams(Params):
    rate: Interarrival = Field(
        "1000/s",
        description="munmap calls per second (machine-wide, or per live "
        "process with mode: per_process)",
        validate_default=True,
    )
    mode: RateMode = rate_mode()
    tables: Annotated[AnyDist, count_at_most(MAX_TABLES)] = Field(
        4, description="tables covered by one munmap", validate_default=True
    )
    remap: bool = Field(
        False,
        description="the range is mapped again at once (a page_fault3-style loop), so "
        "faults populate its tables anew; otherwise it stays unmapped",
    )


@ELEMENTS.register("munmap")
class Munmap(Element[MunmapParams]):
    Params = MunmapParams
    summary = "munmap of ranges: mmap_lock for write, tables freed via mmu_gather"

    def start(self) -> None:
        m = self.m
        count = self.p.tables.sampler(self.rng("tables"))
        u = self.uniform("pick")

        def munmap(mm):
            cpu = self.state.cpu_of(mm) or m.cpus[int(u() * len(m.cpus))]
            n = max(1, round(count()))
            task = USER_TASK()
            self.env.process(
                self.run_on(m, cpu, task, mm_ops.do_munmap(m, cpu, task, mm, n, self.p.remap))
            )

        self.on_arrivals(
            self.p.rate.ns_sampler(self.rng("arrivals")),
            u,
            munmap,
            self.p.mode == "per_process",
            self.p.rate.mean(),
        )
