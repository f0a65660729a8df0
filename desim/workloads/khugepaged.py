"""``khugepaged``: the kthread that collapses shmem ranges and retracts their page tables.

It wakes every ``scan_sleep`` (``khugepaged_scan_sleep_millisecs``), scans ``pages_to_scan``
pages, i.e. ``pages_to_scan / 512`` PMD ranges, and for each collapsed range retracts the table
mapping it in every mm that maps it (``retract_page_tables``, with no mmap_lock). The defaults
are the kernel's (mm/khugepaged.c: 10000 ms and 4096 pages, so 8 ranges per 10 s); a shorter
``scan_sleep`` is a stress setting and configs that use one say so. A run is a window into a
machine that has been up for a while, so the first scan comes at a uniformly drawn point of the
first sleep rather than at time 0. On-demand collapses are the separate ``madv_collapse``
element.
"""

from __future__ import annotations

from pydantic import Field

from desim.config import MAX_CPUS, MAX_PROCESSES, Duration, Int, PositiveDuration
from desim.model import mm_ops
from desim.workloads import ELEMENTS
from desim.workloads.base import Element, Params

PTRS_PER_PMD_RANGE = 512


class KhugepagedParams(Params):
    # scan_sleep 0 would rescan at one instant for ever when nothing is mapped
    scan_sleep: PositiveDuration = Field(
        "10s",
        description="sleep between scans (khugepaged_scan_sleep_millisecs, default 10 s)",
    )
    # khugepaged_pages_to_scan is an unsigned int (pages_to_scan_store, mm/khugepaged.c)
    pages_to_scan: Int = Field(
        4096, ge=512, le=(1 << 32) - 1, description="pages scanned per wake-up"
    )
    mappers: Int = Field(4, ge=1, le=MAX_PROCESSES, description="mms mapping each collapsed range")
    collapse_cost: Duration = Field("20us", description="CPU time to build one huge page")
    cpu: Int = Field(0, ge=0, le=MAX_CPUS - 1, description="CPU the kthread runs on")


@ELEMENTS.register("khugepaged")
class Khugepaged(Element):
    Params = KhugepagedParams
    counters = ("khugepaged.collapses",)
    summary = "kthread retracting shmem page tables with pte_free_defer (no mmap_lock)"

    def start(self) -> None:
        self.env.process(self._kthread())

    def _victims(self, u) -> list:
        mms = self.m.mms
        out = []
        if not mms:
            return out
        for _ in range(min(self.p.mappers, len(mms))):
            mm = mms[int(u() * len(mms))]
            shmem = [t for t in mm.tables if t.shmem]
            if shmem:
                out.append((mm, shmem[int(u() * len(shmem))]))
        return out

    def _kthread(self):
        m = self.m
        p = self.p
        cpu = m.cpus[p.cpu]
        u = self.uniform("pick")
        task = object()
        ranges = p.pages_to_scan // PTRS_PER_PMD_RANGE
        first = True
        while True:
            # phases scale the scan rate
            yield from self.wait(round(u() * p.scan_sleep) if first else p.scan_sleep)
            first = False
            ev = cpu.acquire(task)
            if ev is not None:
                yield ev
            for _ in range(ranges):
                victims = self._victims(u)
                if not victims:
                    continue
                yield cpu.compute(p.collapse_cost)
                yield from mm_ops.retract_page_tables(m, cpu, task, victims)
                m.counters["khugepaged.collapses"] += 1
            cpu.release()
