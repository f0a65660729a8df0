"""The safety checker: shadow state and violation records, in the spirit of KASAN and lockdep.

Hooks are called from the memory model, the allocators and the workloads; each keeps a short
history per object (who allocated, freed, queued it, and when) so a violation can be explained.
When the checker is disabled the hooks are not called at all (``machine.safety is None``).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.machine import Machine
    from desim.model.memory import MM, Page, PageTable

KINDS = (
    "use_after_free",          # a reader touched a table whose page was freed or reused
    "lock_in_freed_page",      # a spinlock taken or released in a freed page
    "rcu_head_reuse",          # an rcu_head queued while queued, or its list links used
    "callback_freed_mm",       # an RCU callback touched an mm already freed
    "double_free",             # a table, fragment or page freed twice
    "invariant",               # a design's state-machine invariant broke
)
MAX_RECORDS = 1000


class SafetyStop(Exception):
    """Raised to end a run at its first violation (``safety.stop_on_first``)."""


class SafetyChecker:
    def __init__(self, machine: Machine, history: int, stop_on_first: bool) -> None:
        self.machine = machine
        self.env = machine.env
        self.depth = history
        self.stop_on_first = stop_on_first
        self.counts = dict.fromkeys(KINDS, 0)
        self.records: list[dict] = []

    # -- history ------------------------------------------------------------------------------
    def note(self, obj, cpu: CPU | None, what: str) -> None:
        h = obj.history
        if h is None:
            h = obj.history = deque(maxlen=self.depth)
        h.append((self.env._now, -1 if cpu is None else cpu.id, what))

    def violation(self, kind: str, cpu: CPU | None, objects: tuple, message: str) -> None:
        self.counts[kind] += 1
        if len(self.records) < MAX_RECORDS:
            hist = []
            for o in objects:
                for t, c, what in getattr(o, "history", None) or ():
                    hist.append(f"t={t}ns cpu{c} {o!r} {what}")
            self.records.append({
                "t_ns": self.env._now,
                "cpu": -1 if cpu is None else cpu.id,
                "kind": kind,
                "objects": [repr(o) for o in objects],
                "message": message,
                "history": sorted(hist, key=lambda s: int(s[2:s.index("ns")])),
            })
        if self.stop_on_first:
            raise SafetyStop(message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    # -- pages --------------------------------------------------------------------------------
    def page_alloc(self, cpu: CPU, page: Page) -> None:
        self.note(page, cpu, f"allocated gen {page.gen}")

    def page_free(self, cpu: CPU, page: Page) -> None:
        if page.rcu_queued:
            self.violation("rcu_head_reuse", cpu, (page,),
                           f"{page!r} freed while its rcu_head is still queued")
        if page.ptl is not None and page.ptl.holder is not None:
            self.violation("lock_in_freed_page", cpu, (page,),
                           f"{page!r} freed while its ptl is held by {page.ptl.holder!r}")
        self.note(page, cpu, "freed")

    # -- readers ------------------------------------------------------------------------------
    def table_access(self, cpu: CPU, table: PageTable, gen: int, what: str) -> None:
        """A lockless walker touches ``table`` it found when the page had generation ``gen``."""
        page = table.page
        if page.allocated and page.gen == gen:
            return
        kind = "lock_in_freed_page" if what == "ptl" else "use_after_free"
        state = "reused" if page.allocated else "freed"
        self.violation(kind, cpu, (table, page),
                       f"cpu{cpu.id} {what} of {table!r}: its page was {state} under the reader")

    def lock_release(self, cpu: CPU, table: PageTable, gen: int) -> None:
        page = table.page
        if not (page.allocated and page.gen == gen):
            self.violation("lock_in_freed_page", cpu, (table, page),
                           f"cpu{cpu.id} unlock of ptl in {page!r} after the page was freed")

    # -- rcu_head and list links --------------------------------------------------------------
    def rcu_queue(self, cpu: CPU, page: Page) -> None:
        if page.rcu_queued:
            self.violation("rcu_head_reuse", cpu, (page,),
                           f"rcu_head of {page!r} queued while already queued")
        elif page.on_list is not None:
            self.violation("rcu_head_reuse", cpu, (page,),
                           f"rcu_head of {page!r} queued while its lru links are on a list")
        self.note(page, cpu, "rcu_head queued")

    def list_use(self, cpu: CPU, page: Page, what: str) -> None:
        if page.rcu_queued:
            self.violation("rcu_head_reuse", cpu, (page,),
                           f"{what}: lru links of {page!r} used while its rcu_head is queued")

    # -- mms ----------------------------------------------------------------------------------
    def mm_access(self, cpu: CPU, mm: MM, what: str) -> None:
        if mm.freed:
            self.violation("callback_freed_mm", cpu, (mm,),
                           f"cpu{cpu.id} {what} of {mm!r} after the mm was freed")

    def table_free(self, cpu: CPU, table: PageTable) -> None:
        from desim.model.memory import FREE

        if table.state == FREE:
            self.violation("double_free", cpu, (table,), f"{table!r} freed twice")
        self.note(table, cpu, "freed")

    def invariant(self, cpu: CPU | None, objects: tuple, message: str) -> None:
        self.violation("invariant", cpu, objects, message)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"safety.violations": self.total}
        for k, v in self.counts.items():
            out[f"safety.{k}"] = v
        return out
