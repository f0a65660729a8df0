"""``memory_pressure``: page allocations that fail, as under reclaim pressure.

Non-blocking allocations (GFP_NOWAIT: the mmu_gather batch page) fail

* at random with probability ``nowait_fail`` (scaled by phases, capped at 1), and/or
* whenever fewer than ``min_free_pages`` pages are free under ``machine.memory_limit`` (the
  min watermark, which a GFP_NOWAIT allocation may not dip below).

A failed batch page sends mmu_gather to its slow path, ``tlb_remove_table_sync_one``: an IPI to
every CPU, then an immediate free (``count.tlb.sync_frees``). ``hog_pages`` makes the free-page
level swing: a hog allocates that many pages for ``hog_on`` then frees them for ``hog_off``
(a memory-hungry job coming and going); with ``memory_limit`` set, even blocking allocations
(page tables) then fail while the hog holds its pages.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from desim.config import MAX_PAGES, Int, PositiveDuration, Real
from desim.workloads import ELEMENTS
from desim.workloads.base import Element, Params


class MemoryPressureParams(Params):
    nowait_fail: Real = Field(0.0, ge=0, le=1, description="probability a GFP_NOWAIT alloc fails")
    min_free_pages: Int | None = Field(
        None,
        ge=1,
        le=MAX_PAGES,
        description="GFP_NOWAIT fails below this many free pages (needs memory_limit)",
    )
    hog_pages: Int = Field(
        0, ge=0, le=MAX_PAGES, description="pages a hog takes and gives back in cycles"
    )
    hog_on: PositiveDuration = Field("50ms", description="how long the hog holds its pages")
    hog_off: PositiveDuration = Field("50ms", description="how long it leaves them free")

    @model_validator(mode="after")
    def _something(self):
        if not (self.nowait_fail or self.min_free_pages or self.hog_pages):
            raise ValueError("nowait_fail: set nowait_fail, min_free_pages or hog_pages")
        return self


@ELEMENTS.register("memory_pressure")
class MemoryPressure(Element):
    Params = MemoryPressureParams
    counters = ("pressure.hog_pages", "pressure.random_failures", "pressure.watermark_failures")
    summary = "page allocation failing at a rate or below a free-page level (GFP_NOWAIT)"

    @classmethod
    def check_config(cls, params, config) -> None:
        super().check_config(params, config)
        if (params.min_free_pages or params.hog_pages) and config.machine.memory_limit is None:
            field = "min_free_pages" if params.min_free_pages else "hog_pages"
            raise ValueError(f"workload.memory_pressure.{field}: needs machine.memory_limit")

    def start(self) -> None:
        p = self.p
        pages = self.m.pages
        u = self.uniform("fail")
        mult = self.state.mult
        name = self.name
        counters = self.m.counters
        base = p.nowait_fail
        low = p.min_free_pages

        def fail() -> bool:
            if low is not None and pages.limit - pages.held < low:
                counters["pressure.watermark_failures"] += 1
                return True
            q = base * mult.get(name, 1.0)
            if q > 0 and u() < q:
                counters["pressure.random_failures"] += 1
                return True
            return False

        pages.nowait_fail = fail
        if p.hog_pages:
            self.env.process(self._hog())

    def _hog(self):
        m = self.m
        p = self.p
        cpu = m.cpus[-1]
        while True:
            yield from self.wait(p.hog_off)
            held = []
            for _ in range(p.hog_pages):
                page = m.pages.alloc(cpu, "hog")
                if page is None:
                    break
                held.append(page)
            m.counters["pressure.hog_pages"] += len(held)
            yield self.env.timeout(p.hog_on)
            for page in held:
                m.pages.free(cpu, page)
