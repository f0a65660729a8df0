"""``replay``: a real workload's processes, faults, munmaps, exits and collapses from a trace.

The trace is a file ``desim record`` wrote (``desim.hosttrace.format``): per task, in order,
its fork/exec/exit, its faults with their addresses, its munmaps and collapses, with the
page-table estimates made when it was written. Each traced task becomes a desim task that
performs its events one after another, on the simulated CPU its traced CPU maps to
(``cpu_map``; by default traced CPU ``c`` runs on ``c mod cpus``), holding that CPU for the
event's kernel work and leaving it idle between events (as ``processes`` does):

* ``fault``: ``mm_ops.handle_fault`` on the table of the fault's 2 MiB range; the range's first
  fault in the mm allocates it (``__pte_alloc``). A range collapsed earlier is PMD-mapped: its
  faults allocate nothing (on machines that deposit a table beside a huge PMD, the model's
  refault rule allocates one);
* ``fork``: without ``CLONE_VM`` a new mm (``mm_ops.do_fork``) that gets a copy of the parent's
  tables as the trace counted them (``copy_page_range``); with ``CLONE_VM`` (a thread,
  ``vfork``, ``posix_spawn``) the child shares the parent's mm and nothing is charged; the
  child's own events start when the fork is done;
* ``exec``: a new, empty mm (``do_fork``'s cost: desim charges fork and exec together);
  ``start``: a task already running when the trace began gets a new mm, uncharged;
* ``munmap``: ``mm_ops.do_munmap`` of the tables of the 2 MiB ranges it covers whole (none: the
  call's cost and locks alone); ``collapse``: ``mm_ops.collapse_pte_mapped_thp`` of the
  range's table (``pte_free_defer``), MADV_COLLAPSE's path;
* ``mm_exit``: ``mm_ops.exit_mmap`` frees the mm's tables through mmu_gather, then the last
  reference drops (``mm_life.final_drop``); ``exit`` of a task that leaves its mm to others is
  only counted.

Tasks wait for each other where the kernel made them: a child's events start when its fork is
done; a parent's first event recorded after its child's last one waits until that is done
(``wait4``), and the parent of a ``CLONE_VFORK`` child waits for the child's exec
(kernel/fork.c ``wait_for_vfork_done``). Beyond that, ``timing: recorded`` starts each event
at its recorded time from the run's start (or as soon as what it waits for is done, if later:
``replay.lag`` says by how much); ``closed`` runs each task's events back to back, as fast as
the simulated machine allows: the user time between them is left out, so a build's makespan
is its kernel work's critical path alone.

Metrics: ``replay.events`` done of ``replay.events_total``, ``replay.complete`` (1 when all
are done), ``replay.end_ns`` (when the last one finished; NaN if the run ended first: lengthen
``duration``), ``replay.lag`` (recorded timing), and ``count.replay.*`` (forks, clones, execs,
exits, mm_exits, faults, tables, munmaps, collapses, as ``desim record`` counts them).
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator
from simpy.events import Event, Timeout

from desim.distributions import find_file, provided_bytes, resolve_input
from desim.fields import MAX_CPUS, Duration, Int
from desim.hosttrace import format as hfmt
from desim.model import mm_ops
from desim.model.memory import LIVE
from desim.model.stats import LogHistogram
from desim.workloads import ELEMENTS
from desim.workloads.base import Element, Params

if TYPE_CHECKING:
    from desim.model.memory import MM

CLONE_VFORK = 0x4000
HUGE = object()  # a range collapsed into a huge page: PMD-mapped, no PTE table


class ReplayParams(Params):
    file: str = Field(
        ..., description="trace file written by desim record (relative: next to the config)"
    )
    timing: Literal["recorded", "closed"] = Field(
        "recorded",
        description="events at their recorded times, or each task's back to back (closed)",
    )
    cpu_map: tuple[Int, ...] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CPUS,
        description="simulated CPU of traced CPU c: cpu_map[c mod len] (default: c mod cpus)",
    )
    collapse_cost: Duration = Field(
        "15us",
        description="CPU time of one collapse besides the retraction (as madv_collapse)",
        validate_default=True,
    )

    @field_validator("file")
    @classmethod
    def _trace(cls, v: str) -> str:
        data = provided_bytes(v)  # a sweep run's copy, the content its digest covers
        if data is None:
            places = find_file(v)
            path = next((p for p in places if p.is_file()), None)
            if path is None:
                looked = ", ".join(str(p.parent.resolve()) for p in places)
                raise ValueError(f"no trace file {v} (looked in {looked})")
        else:
            path = resolve_input(v)
        try:
            hfmt.read(path, data)  # the rows too: a replay must be able to follow them
        except hfmt.TraceFileError as exc:
            raise ValueError(f"trace file {v}: {str(exc).removeprefix(f'{path}: ')}") from None
        return str(path.resolve())


@ELEMENTS.register("replay")
class Replay(Element[ReplayParams]):
    Params = ReplayParams
    input_files = ("file",)
    summary = "a recorded workload (desim record): its forks, faults, munmaps and exits"
    counters = (
        "replay.starts",
        "replay.forks",
        "replay.clones",
        "replay.execs",
        "replay.exits",
        "replay.mm_exits",
        "replay.faults",
        "replay.tables",
        "replay.munmaps",
        "replay.collapses",
    )

    @classmethod
    def check_config(cls, params, config) -> None:
        super().check_config(params, config)
        n = config.machine.cpus
        if params.cpu_map is not None and not all(0 <= c < n for c in params.cpu_map):
            bad = next(c for c in params.cpu_map if not 0 <= c < n)
            raise ValueError(f"workload.replay.cpu_map: CPU {bad} but the machine has {n} CPUs")

    def start(self) -> None:
        m = self.m
        try:
            trace = hfmt.read(self.p.file, provided_bytes(self.p.file))
        except hfmt.TraceFileError as exc:  # changed since the config was checked
            raise RuntimeError(f"workload.replay.file: {exc}") from None
        c = trace.columns
        self.time = c["time_ns"].tolist()
        self.event = c["event"].tolist()
        self.cpu = c["cpu"].tolist()
        self.mm_id = c["mm"].tolist()
        self.child = c["child"].tolist()
        self.addr = c["addr"].tolist()
        self.length = c["length"].tolist()
        self.tables = c["tables"].tolist()
        self.flags = c["flags"].tolist()
        self.total = len(trace)
        rows: dict[int, list[int]] = {}
        self.task_of = c["task"].tolist()
        for i, t in enumerate(self.task_of):
            rows.setdefault(t, []).append(i)
        self.rows = rows
        cmap = self.p.cpu_map or tuple(range(len(m.cpus)))
        self.cpu_of = [m.cpus[cmap[k % len(cmap)]] for k in range(max(self.cpu, default=0) + 1)]
        self.mms: dict[int, MM] = {}  # trace mm id -> desim MM
        self.ranges: dict[int, dict] = {}  # desim mm id -> {2 MiB range: table or HUGE}
        self.recorded = self.p.timing == "recorded"
        self.t0 = self.env.now
        self.done = 0
        self.end = float("nan")
        self.lag = LogHistogram()
        m.result_hooks.append(self.results)
        self.waits, self.signals = self._dependencies()
        children = {ch for ch in self.child if ch >= 0}
        for t, r in rows.items():
            if t not in children:
                self.env.process(self._task(r, None))

    def _dependencies(self) -> tuple[dict[int, list[int]], dict[int, Event]]:
        """Which rows wait for which: a parent's first event recorded after its child's last
        one waits for it to be done (``wait4``), and after a ``CLONE_VFORK`` child's exec
        (the parent sleeps until the child execs or exits, kernel/fork.c
        ``wait_for_vfork_done``)."""
        waits: dict[int, list[int]] = {}
        for i, kind in enumerate(self.event):
            if kind != "fork":
                continue
            crows = self.rows.get(self.child[i])
            if not crows:
                continue
            after = [crows[-1]]
            if self.flags[i] & CLONE_VFORK:
                after.append(next((k for k in crows if self.event[k] == "exec"), crows[-1]))
            prow = self.rows[self.task_of[i]]
            for k in after:
                j = bisect.bisect_right(prow, k)
                if j < len(prow):
                    waits.setdefault(prow[j], []).append(k)
        signals = {k: Event(self.env) for ks in waits.values() for k in ks}
        return waits, signals

    def results(self, now: int) -> dict[str, float]:
        s = {
            "replay.events": self.done,
            "replay.events_total": self.total,
            "replay.complete": float(self.done == self.total),
            "replay.end_ns": self.end,
        }
        if self.recorded:
            s.update(self.lag.summary("replay.lag"))
        return s

    # -- one traced task

    def _task(self, rows: list[int], mm):
        env = self.env
        m = self.m
        counters = m.counters
        task = object()
        waits = self.waits
        for i in rows:
            if i in waits:
                for k in waits[i]:
                    yield self.signals[k]
            if self.recorded:
                due = self.t0 + self.time[i]
                now = env.now
                if due > now:
                    yield Timeout(env, due - now)
                else:
                    self.lag.add(now - due)
            kind = self.event[i]
            cpu = self.cpu_of[self.cpu[i]]
            ev = cpu.acquire(task)
            if ev is not None:
                yield ev
            if kind == "fault":
                if mm is not None and mm.alive:
                    yield from self._fault(cpu, task, mm, self.addr[i] >> hfmt.RANGE_SHIFT)
                counters["replay.faults"] += 1
            elif kind == "fork":
                yield from self._fork(cpu, task, mm, i)
            elif kind == "exec" or kind == "start":
                if kind == "exec":
                    mm = yield from mm_ops.do_fork(m, cpu, 0)
                else:
                    mm = m.new_mm(0)
                self.mms[self.mm_id[i]] = mm
                self.ranges[mm.id] = {}
                counters[f"replay.{kind}s"] += 1
            elif kind == "mm_exit":
                gone = self.mms.pop(self.mm_id[i], None)
                counters["replay.mm_exits"] += 1
                if gone is not None and gone.alive:
                    yield from mm_ops.exit_mmap(m, cpu, task, gone)
                    self.ranges.pop(gone.id, None)
                    cpu.release()
                    m.mm_life.final_drop(cpu, gone)
                    self._done(i)
                    continue
            elif kind == "munmap":
                if mm is not None and mm.alive:
                    yield from self._munmap(cpu, task, mm, self.addr[i], self.length[i])
                counters["replay.munmaps"] += 1
            elif kind == "collapse":
                if mm is not None and mm.alive:
                    yield from self._collapse(cpu, task, mm, self.addr[i] >> hfmt.RANGE_SHIFT)
                counters["replay.collapses"] += 1
            elif kind == "exit":
                counters["replay.exits"] += 1
            cpu.release()
            self._done(i)

    def _done(self, i: int) -> None:
        ev = self.signals.get(i)
        if ev is not None:
            ev.succeed()
        self.done += 1
        if self.done == self.total:
            self.end = self.env.now

    def _fault(self, cpu, task, mm, r: int):
        m = self.m
        ranges = self.ranges[mm.id]
        t = ranges.get(r)
        if t is HUGE:
            yield from mm_ops.handle_fault(m, cpu, task, mm, 0.0, False)
        elif t is not None and t.state == LIVE:
            yield from mm_ops.handle_fault(m, cpu, task, mm, 0.0, False, t)
        else:
            # the range's first fault: one more table wanted, and this fault populates it
            mm.target_tables += 1
            t = yield from mm_ops.handle_fault(m, cpu, task, mm, 0.0, False)
            if t is None:
                mm.target_tables -= 1
            else:
                ranges[r] = t
                m.counters["replay.tables"] += 1

    def _fork(self, cpu, task, parent, i: int):
        m = self.m
        child_rows = self.rows.get(self.child[i], [])
        if self.flags[i] & hfmt.CLONE_VM:
            mm = parent
            m.counters["replay.clones"] += 1
        else:
            # copy_page_range: the child gets a table for each of the parent's, as counted
            n = self.tables[i]
            mm = yield from mm_ops.do_fork(m, cpu, n)
            ranges = self.ranges[mm.id] = {}
            src = sorted(self.ranges.get(parent.id, {}).items()) if parent is not None else []
            src_ranges = [r for r, t in src if t is not HUGE]
            for k in range(n):
                t = yield from mm_ops.populate(m, cpu, task, mm, False)
                if t is None:
                    mm.target_tables = len(mm.tables)
                    break
                if k < len(src_ranges):
                    ranges[src_ranges[k]] = t
                m.counters["replay.tables"] += 1
            self.mms[self.mm_id[i]] = mm
            m.counters["replay.forks"] += 1
        if child_rows:
            self.env.process(self._task(child_rows, mm))

    def _munmap(self, cpu, task, mm, addr: int, length: int):
        shift = hfmt.RANGE_SHIFT
        first = (addr + (1 << shift) - 1) >> shift
        end = (addr + length) >> shift
        ranges = self.ranges[mm.id]
        covered = [r for r in ranges if first <= r < end]
        victims = [t for r in covered if (t := ranges.pop(r)) is not HUGE and t.state == LIVE]
        yield from mm_ops.do_munmap(self.m, cpu, task, mm, len(victims), victims=victims)

    def _collapse(self, cpu, task, mm, r: int):
        ranges = self.ranges[mm.id]
        t = ranges.get(r)
        ranges[r] = HUGE
        if t is not None and t is not HUGE and t.state == LIVE:
            yield from mm_ops.collapse_pte_mapped_thp(
                self.m, cpu, task, mm, t, self.p.collapse_cost
            )
