"""The safety checker: shadow state and violation records, in the spirit of KASAN and lockdep.

What it catches, and where (DOMAIN.md section 4, "Safety"):

* ``use_after_free``: a lockless walker (``pte_offset_map`` inside ``rcu_read_lock``) reads a
  table whose page went back to the page allocator, or was reused, while it walked
  (``table_access``, called by the fault path after the walk and after the PTE write); a page
  freed while still linked on a design's list.
* ``lock_in_freed_page``: the split ``ptl`` lives in the table page's ``struct page``. When a
  page is freed its lock object is *poisoned* (its class swapped for a reporting subclass, as
  KASAN poisons freed memory), so any later ``spin_lock``/``spin_unlock`` on it through a stale
  pointer reports where it happens, whoever does it; a page freed while its ptl is held too.
* ``rcu_head_reuse``: a page's single ``rcu_head`` queued while already queued, or while the
  ``lru``/``pt_list`` links it overlays are on a list (``rcu_queue``, from
  ``machine.page_call_rcu``); list links used while it is queued (``list_use``, called by
  designs); a page freed with its rcu_head still queued.
* ``callback_freed_mm``: anything touching an mm after ``free_mm``. The mm's locks are poisoned
  the same way and its ``arch`` dict (design-private state such as s390's ``pgtable_list``) is
  replaced by a reporting one, so an RCU callback that takes ``mm->context.lock`` after the mm
  is gone is caught even if its design forgot to call ``mm_access``.
* ``double_free``: a table, fragment, page or mm freed twice.
* ``bad_page_state``: a page given back to the page allocator with a flag the allocator checks
  at free still set (mm/page_alloc.c ``free_pages_prepare`` → ``free_page_is_bad`` →
  ``bad_page``, "BUG: Bad page state": PG_active is in ``PAGE_FLAGS_CHECK_AT_FREE``). v6.6
  powerpc's ``pte_frag_destroy`` can free a cached page that ``pte_free_defer`` marked Active.
* ``sleep_in_atomic``: a task would sleep where sleeping is forbidden, e.g. ``synchronize_rcu``
  in ``__mmdrop`` reached from ``finish_task_switch``'s lazy-TLB mm drop with preemption and
  IRQs off (the kernel's "BUG: scheduling while atomic"; ``desim.model.mm_lifetime``).
* ``invariant``: a design's state-machine invariant broke (designs call ``invariant``; the
  checker also polls ``allocator.invariant_errors()`` and the memory books every
  ``safety.audit_interval``).

Each object carries a short history (``note``: time, CPU, event) so a violation can be read
like a KASAN report: who allocated, freed and queued the object, and when. When the checker is
disabled the hooks are not called at all (``machine.safety is None``).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from simpy.events import Timeout

from desim.model.lock import SpinLock
from desim.model.memory import FREE, PG_ACTIVE

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.machine import Machine
    from desim.model.memory import MM, Page, PageTable

KINDS = (
    "use_after_free",  # a reader touched a table whose page was freed or reused
    "lock_in_freed_page",  # a spinlock taken or released in a freed page
    "rcu_head_reuse",  # an rcu_head queued while queued, or its list links used
    "callback_freed_mm",  # an RCU callback touched an mm already freed
    "double_free",  # a table, fragment, page or mm freed twice
    "bad_page_state",  # a page freed with PG_active set (free_pages_prepare)
    "invariant",  # a design's state-machine invariant broke
    "sleep_in_atomic",  # a sleep where the context forbids it (scheduling while atomic)
)
MAX_RECORDS = 1000
# Freed locks remembered for reports (page or mm they belonged to); a stale pointer older than
# this many frees still reports, only without naming its object.
MAX_POISONED = 1 << 16


class SafetyStop(Exception):
    """Raised to end a run at its first violation (``safety.stop_on_first``)."""


class _FreedArch(dict):
    """An mm's design-private state after ``free_mm``: every access reports, then proceeds."""

    __slots__ = ("_checker", "_mm")

    def __init__(self, checker: SafetyChecker, mm: MM, data: dict) -> None:
        super().__init__(data)
        self._checker = checker
        self._mm = mm

    def _touch(self, what: str) -> None:
        self._checker.mm_access(None, self._mm, f"{what} of mm->context")

    def __getitem__(self, k):
        self._touch(f"read {k!r}")
        return super().__getitem__(k)

    def __setitem__(self, k, v):
        self._touch(f"write {k!r}")
        super().__setitem__(k, v)

    def __contains__(self, k):
        self._touch(f"lookup {k!r}")
        return super().__contains__(k)

    def get(self, k, default=None):
        self._touch(f"read {k!r}")
        return super().get(k, default)

    def setdefault(self, k, default=None):
        self._touch(f"write {k!r}")
        return super().setdefault(k, default)

    def pop(self, k, *default):
        self._touch(f"write {k!r}")
        return super().pop(k, *default)


class SafetyChecker:
    def __init__(
        self, machine: Machine, history: int, stop_on_first: bool, audit_interval: int = 0
    ) -> None:
        self.machine = machine
        self.env = machine.env
        self.depth = history
        self.stop_on_first = stop_on_first
        self.counts = dict.fromkeys(KINDS, 0)
        self.records: list[dict] = []
        # id(lock) -> (lock, owner object, what, CPUs whose spin_lock on it was reported)
        self.poisoned: dict[int, tuple] = {}
        self._last_mm_report: tuple | None = None
        self._reported_invariants: set[str] = set()
        checker = self

        class FreedLock(SpinLock):
            """A spinlock whose memory was freed: using it reports (KASAN-style poison)."""

            __slots__ = ()

            def acquire(self, cpu):
                checker._freed_lock_use(cpu, self, "spin_lock")
                return SpinLock.acquire(self, cpu)

            def release(self, cpu):
                checker._freed_lock_use(cpu, self, "spin_unlock")
                SpinLock.release(self, cpu)

        self._freed_lock_class = FreedLock
        # Called as on_note(t, cpu, obj, what) for every history entry: desim explore prints a
        # counterexample from it, in the designs' own words. None (the default) costs nothing.
        self.on_note = None
        if audit_interval:
            self.env.process(self._auditor(audit_interval))

    # -- history and records ------------------------------------------------------------------
    def note(self, obj, cpu: CPU | None, what: str) -> None:
        """Append ``what`` to ``obj``'s short history (a bounded deque, made on first use)."""
        h = obj.history
        if h is None:
            h = obj.history = deque(maxlen=self.depth)
        h.append((self.env._now, -1 if cpu is None else cpu.id, what))
        if self.on_note is not None:
            self.on_note(self.env._now, cpu, obj, what)

    def violation(self, kind: str, cpu: CPU | None, objects: tuple, message: str) -> None:
        self.counts[kind] += 1
        if cpu is not None and cpu.trace is not None:
            cpu.trace.instant(cpu, f"VIOLATION {kind}", {"message": message}, cat="safety")
        if len(self.records) < MAX_RECORDS:
            hist = []
            seen = set()
            for o in objects:
                if id(o) in seen:
                    continue
                seen.add(id(o))
                name = repr(o)
                for t, c, what in getattr(o, "history", None) or ():
                    hist.append({"t_ns": t, "cpu": c, "object": name, "event": what})
            hist.sort(key=lambda e: e["t_ns"])
            self.records.append(
                {
                    "t_ns": self.env._now,
                    "cpu": -1 if cpu is None else cpu.id,
                    "kind": kind,
                    "objects": [repr(o) for o in objects],
                    "message": message,
                    "history": hist,
                }
            )
        if self.stop_on_first:
            raise SafetyStop(f"{kind} at t={self.env._now}ns: {message}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"safety.violations": self.total}
        for k, v in self.counts.items():
            out[f"safety.{k}"] = v
        return out

    # -- poison -------------------------------------------------------------------------------
    def _poison(self, lock: SpinLock, owner, what: str) -> None:
        if type(lock) is not SpinLock:
            return  # already poisoned, or a design's own lock type
        lock.__class__ = self._freed_lock_class
        p = self.poisoned
        if len(p) >= MAX_POISONED:
            for k in list(p)[: MAX_POISONED // 2]:  # forget the oldest half
                del p[k]
        p[id(lock)] = (lock, owner, what, set())

    def _freed_lock_use(self, cpu: CPU, lock: SpinLock, op: str) -> None:
        entry = self.poisoned.get(id(lock))
        owner, what = (entry[1], entry[2]) if entry is not None else (None, "lock")
        if entry is not None:
            # One report per bad critical section: an unlock after a reported lock is the
            # same incident; an unlock of a lock taken while the page was live is a new one.
            bad = entry[3]
            if op == "spin_lock":
                bad.add(cpu.id)
            elif cpu.id in bad:
                bad.discard(cpu.id)
                return
        if owner is not None and owner.__class__.__name__ == "MM":
            self.mm_access(cpu, owner, f"{op}(&{what})")
            return
        objs = () if owner is None else (owner, *owner.tables)
        self.violation(
            "lock_in_freed_page",
            cpu,
            objs,
            f"cpu{cpu.id} {op} on the {what} of {owner!r} after the page was freed",
        )

    # -- pages --------------------------------------------------------------------------------
    def page_alloc(self, cpu: CPU, page: Page) -> None:
        self.note(page, cpu, f"allocated (gen {page.gen})")

    def page_free(self, cpu: CPU, page: Page) -> None:
        self.note(page, cpu, "freed")  # first, so a report shows who freed it
        if page.rcu_queued:
            self.violation(
                "rcu_head_reuse",
                cpu,
                (page, *page.tables),
                f"{page!r} freed while its rcu_head is still queued",
            )
        ptl = page.ptl
        if ptl is not None:
            if ptl.holder is not None:
                self.violation(
                    "lock_in_freed_page",
                    cpu,
                    (page, *page.tables),
                    f"{page!r} freed while its ptl is held by {ptl.holder!r}",
                )
            self._poison(ptl, page, "ptl")
        if page.on_list is not None:
            self.violation(
                "use_after_free",
                cpu,
                (page,),
                f"{page!r} freed while its lru links are still on {page.on_list!r}",
            )
        if page.flags & PG_ACTIVE:
            # free_pages_prepare(): PG_active is checked at free; the kernel prints "BUG: Bad
            # page state", clears the flags and carries on (the page is not freed by RCU).
            self.violation(
                "bad_page_state",
                cpu,
                (page, *page.tables),
                f"{page!r} freed with PG_active set (BUG: Bad page state)",
            )

    # -- readers ------------------------------------------------------------------------------
    def table_access(self, cpu: CPU, table: PageTable, gen: int, what: str) -> None:
        """A lockless walker touches ``table`` it found when the page had generation ``gen``."""
        page = table.page
        if page.allocated and page.gen == gen:
            return
        state = "reused" if page.allocated else "freed"
        self.violation(
            "use_after_free",
            cpu,
            (table, page),
            f"cpu{cpu.id} {what} of {table!r}: its page was {state} under the RCU reader",
        )

    # -- rcu_head and list links --------------------------------------------------------------
    def rcu_queue(self, cpu: CPU, page: Page) -> None:
        self.note(page, cpu, "rcu_head queued")
        if page.rcu_queued:
            self.violation(
                "rcu_head_reuse",
                cpu,
                (page, *page.tables),
                f"rcu_head of {page!r} queued while already queued",
            )
        elif page.on_list is not None:
            self.violation(
                "rcu_head_reuse",
                cpu,
                (page,),
                f"rcu_head of {page!r} queued while its lru links are on {page.on_list!r}",
            )

    def list_use(self, cpu: CPU, page: Page, what: str) -> None:
        """A design links, unlinks or walks ``page``'s ``lru``/``pt_list`` links."""
        if page.rcu_queued:
            self.violation(
                "rcu_head_reuse",
                cpu,
                (page,),
                f"{what}: lru links of {page!r} used while its rcu_head is queued",
            )
        self.note(page, cpu, what)

    # -- mms ----------------------------------------------------------------------------------
    def mm_freed(self, cpu: CPU, mm: MM) -> None:
        """``free_mm``: from here on every use of ``mm``, its locks or its lists is a bug."""
        if mm.freed:
            self.violation("double_free", cpu, (mm,), f"{mm!r} freed twice")
            return
        self.note(mm, cpu, "freed")
        self._poison(mm.context_lock, mm, "mm->context.lock")
        self._poison(mm.page_table_lock, mm, "mm->page_table_lock")
        self._poison(mm.pmd_lock, mm, "pmd lock")
        if type(mm.arch) is dict:
            mm.arch = _FreedArch(self, mm, mm.arch)

    def mm_access(self, cpu: CPU | None, mm: MM, what: str, related: tuple = ()) -> None:
        """``cpu`` touches ``mm`` (``related``: the table/page whose callback did, for history)."""
        if not mm.freed:
            return
        key = (mm, self.env._now)
        if key == self._last_mm_report:
            return  # one access seen through two hooks (mm_access and a poisoned lock)
        self._last_mm_report = key
        c = "" if cpu is None else f"cpu{cpu.id} "
        self.violation(
            "callback_freed_mm", cpu, (mm, *related), f"{c}{what} of {mm!r} after the mm was freed"
        )

    # -- frees and invariants -----------------------------------------------------------------
    def table_free(self, cpu: CPU, table: PageTable) -> None:
        if table.state == FREE:
            self.violation("double_free", cpu, (table, table.page), f"{table!r} freed twice")
        self.note(table, cpu, "freed")

    def sleep_in_atomic(self, cpu: CPU | None, obj, context: str) -> None:
        """A sleeping call made in ``context``, where preemption is disabled."""
        self.violation(
            "sleep_in_atomic", cpu, (obj,), f"sleeping call in atomic context: {context}"
        )

    def invariant(self, cpu: CPU | None, objects: tuple, message: str) -> None:
        self.violation("invariant", cpu, objects, message)

    def _auditor(self, interval: int):
        """Poll the design's own invariants and its memory books between events."""
        env = self.env
        while True:
            yield Timeout(env, interval)
            self.audit()

    def audit(self) -> None:
        """Check the design's invariants and its memory books now (between two events)."""
        m = self.machine
        alloc = m.allocator
        page_size = m.config.machine.page_size
        errors = list(alloc.invariant_errors())
        held = alloc.account.held
        pages = len(alloc.held_pages)
        if held != pages * page_size:
            errors.append(
                f"{alloc.name}: memory books say {held} B held but the design "
                f"holds {pages} pages of {page_size} B"
            )
        for msg in errors:
            if msg not in self._reported_invariants:  # a lasting breakage reports once
                self._reported_invariants.add(msg)
                self.violation("invariant", None, (), msg)


def format_violation(rec: dict) -> list[str]:
    """A violation record as report lines: the headline, then the objects' history."""
    cpu = "-" if rec["cpu"] < 0 else f"cpu{rec['cpu']}"
    lines = [f"{rec['kind']} at t={rec['t_ns']:,} ns on {cpu}: {rec['message']}"]
    for e in rec["history"]:
        c = "-" if e["cpu"] < 0 else f"cpu{e['cpu']}"
        lines.append(f"  t={e['t_ns']:>14,} ns {c:>6} {e['object']:<18} {e['event']}")
    return lines
