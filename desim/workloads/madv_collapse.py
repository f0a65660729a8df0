"""``madv_collapse``: processes calling ``madvise(MADV_COLLAPSE)`` on their shmem ranges.

Since 6.6 ``collapse_pte_mapped_thp`` runs under ``mmap_read_lock`` only: the range's PTE table
is detached under the PMD lock and ptl and freed with ``pte_free_defer`` while faults may still
be walking it (``mm_ops.collapse_pte_mapped_thp``). Calls arrive machine-wide at ``rate``
(scaled by phases; ``mode: per_process``: each live process at ``rate``), each on one shmem
table of a random live process, on that process's CPU.
``cost`` (remapping the 512 PTEs of a range already in the page cache as a THP, and their rmap
updates) is an estimate of ~15 us.
"""

from __future__ import annotations

from pydantic import Field

from desim.distributions import Interarrival
from desim.fields import Duration
from desim.model import mm_ops
from desim.model.hooks import USER_TASK
from desim.workloads import ELEMENTS
from desim.workloads.base import Element, Params, Placement, RateMode, rate_mode


class MadvCollapseParams(Params):
    rate: Interarrival = Field(
        "200/s",
        description="MADV_COLLAPSE calls per second (machine-wide, or per live "
        "process with mode: per_process)",
        validate_default=True,
    )
    mode: RateMode = rate_mode()
    cost: Duration = Field(
        "15us", description="CPU time of one collapse besides the retraction", validate_default=True
    )
    placement: Placement = Field(
        Placement(policy="migrating"),
        description="where a call runs when no processes element placed its mm",
    )


@ELEMENTS.register("madv_collapse")
class MadvCollapse(Element[MadvCollapseParams]):
    Params = MadvCollapseParams
    counters = ("collapse.no_shmem_range",)
    summary = "madvise(MADV_COLLAPSE): collapse_pte_mapped_thp under mmap_read_lock"

    def start(self) -> None:
        m = self.m
        u = self.uniform("pick")
        placer = self.placer(self.p.placement)

        def collapse(mm):
            shmem = [t for t in mm.tables if t.shmem]
            if not shmem:
                m.counters["collapse.no_shmem_range"] += 1
                return
            table = shmem[int(u() * len(shmem))]
            cpu = self.state.cpu_of(mm) or placer.home()
            task = USER_TASK()
            body = mm_ops.collapse_pte_mapped_thp(m, cpu, task, mm, table, self.p.cost)
            self.env.process(self.run_on(m, cpu, task, body))

        self.on_arrivals(
            self.p.rate.ns_sampler(self.rng("arrivals")),
            u,
            collapse,
            self.p.mode == "per_process",
            self.p.rate.mean(),
        )
