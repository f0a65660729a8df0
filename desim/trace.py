"""Timeline traces of a run in the Chrome / Perfetto trace-event JSON format.

``desim run CONFIG --trace FILE.json [--trace-window 100ms:110ms]`` records what each simulated
CPU did, so a developer can open the file in https://ui.perfetto.dev (or chrome://tracing) and
watch a race unfold: a fault's lockless walk inside its RCU read-side section, khugepaged
retracting the table under it, the ``pte_free_defer`` callback running a grace period later.

Layout (one trace "process" per CPU, so each CPU is one collapsible group):

* ``CPU n`` / ``tasks``: one complete (``X``) slice per stretch a task owns the CPU, named by the
  kernel path it runs (``fault``, ``retract_page_tables``, ``exit_mmap``...); nested inside it,
  ``rcu_read_lock`` sections (outermost only) and ``spin <lock class>`` waits.
* ``CPU n`` / ``softirq``: RCU_SOFTIRQ runs (``rcu_do_batch``) with one slice per callback, laid
  end to end at the CPU time each costs. Softirq time is *stolen* from the running task in the
  model, so it overlaps task slices in simulated time and needs a track of its own.
* ``RCU`` / ``grace periods``: one slice per GP, force-quiescent-state scans and per-CPU QS
  reports as instants, and a ``callbacks pending`` counter sampled at each tick.
* Flow arrows: a contended lock's hand-over (releasing CPU → next waiter) and each callback
  (its ``call_rcu`` → its invocation). Instants mark fault retries, retractions and violations.

Slice names are the kernel's: paths by their functions (``fault``, ``exit_mmap``), RCU callbacks
by the function the kernel queues (``pte_free_now``, ``tlb_remove_table_rcu``,
``wakeme_after_rcu``), tasks by what they are (``khugepaged``, ``user task``), never desim's
Python method names (``KERNEL_TERMS``). A slice nested in another never shares an edge with it:
viewers order slices of equal start and length arbitrarily, so where the model's instants
coincide (a fault enters its RCU read-side section the instant it starts), the inner slice is
drawn 1 ns inside its parent (``_nest``).

Only complete events are written (no B/E pairs to mismatch); slices are clipped to the window
and the recording stops after ``max_events`` so files stay small. Hooks in the model are guarded
by ``cpu.trace is not None`` / ``rcu.trace is not None``: with no tracer they cost one attribute
test on paths that are not already slow. This module is fed by the model and so must not import
pandas (or anything heavy).
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from desim.units import UnitError, parse_time_ns

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.machine import Machine

TID_TASKS = 1
TID_SOFTIRQ = 2
TID_GP = 1
DEFAULT_MAX_EVENTS = 300_000  # ~30 MB of JSON: what a browser-based viewer loads comfortably


def parse_window(text: str | None) -> tuple[int, int | None]:
    """``"START:END"`` (times with units, either side may be empty) → (start_ns, end_ns|None)."""
    if not text:
        return 0, None
    if ":" not in text:
        raise ValueError(f"trace window {text!r}: expected START:END, e.g. 100ms:110ms")
    a, b = text.split(":", 1)
    start = parse_time_ns(a) if a.strip() else 0
    end = parse_time_ns(b) if b.strip() else None
    if end is not None and end <= start:
        raise ValueError(f"trace window {text!r}: END must be after START")
    return start, end


def tracer_for(path: str | None, window: str | None) -> Tracer | None:
    """The tracer ``desim run --trace PATH --trace-window WINDOW`` asks for (None: no tracing)."""
    if path is None:
        if window:
            raise ValueError("needs --trace FILE.json as well")
        return None
    try:
        return Tracer(parse_window(window))
    except UnitError as exc:
        raise ValueError(f"{exc} (use START:END with units, e.g. 100ms:110ms)") from None


def _us(ns: int | float) -> float:
    return round(ns / 1000.0, 3)


# desim's Python names -> what the kernel calls the same thing (v6.6 unless noted). Callbacks
# are keyed by function name: the one each design queues with call_rcu in its kernel version
# (mm/pgtable-generic.c and arch/{powerpc,s390} pte_free_now, mm/mmu_gather.c
# tlb_remove_table_rcu, kernel/rcu/update.c wakeme_after_rcu, kernel/rcu/tree.c
# rcu_barrier_callback, kernel/fork.c __mmdrop). Tasks are keyed by the class (or function)
# whose generator runs them.
KERNEL_TERMS = {
    # RCU callbacks
    "_rcu_free": "pte_free_now",
    "_free_now": "pte_free_now",
    "_pte_free_now": "pte_free_now",
    "_pte_free_half": "pte_free_half",
    "_pte_free_pgste": "pte_free_pgste",
    "_free_fragment": "pte_free_now (shared rcu_head)",
    "_rcu_free_via_mm": "pte_free_now (takes mm->context.lock)",
    "_advance": "percpu pool: advance cycle",
    "_batch_cb": "tlb_remove_table_rcu",
    "_wake": "wakeme_after_rcu",
    "_barrier_cb": "rcu_barrier_callback",
    "_free_mm_cb": "__mmdrop",
    # tasks
    "Faults": "user task",
    "Processes": "process",
    "Khugepaged": "khugepaged",
    "KernelWork": "syscall (non-preemptible)",
    "MemoryPressure": "memory pressure",
    "Lockstress": "lockstress",
    "RcuCallers": "synchronize_rcu caller",
    "S390HH": "kworker (mmdrop_async)",
    "_critical": "lockstress",
    "wait": "synchronize_rcu caller",
}


def kernel_term(qualname: str) -> str:
    """The kernel's name for a desim function or task (``Faults._loop`` -> ``user task``)."""
    for key in (qualname, qualname.rsplit(".", 1)[-1], qualname.split(".", 1)[0]):
        if key in KERNEL_TERMS:
            return KERNEL_TERMS[key]
    # Unknown: the owning class or function, without Python's decorations.
    head = qualname.split(".<locals>", 1)[0].split(".", 1)[0].strip("_")
    return "".join(f" {c.lower()}" if c.isupper() else c for c in head).strip() or "task"


def _callable_name(func, arg) -> str:
    # A page's rcu_head callback wraps the design's function: show the design's.
    if getattr(func, "__name__", "") == "_rcu_head_cb" and isinstance(arg, tuple) and len(arg) == 3:
        func = arg[1]
    return kernel_term(
        getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    )


def _nest(events: list[dict]) -> None:
    """Move nested slices 1 ns inside a parent they share an edge with (see module docstring).

    Per track, slices are visited parent first (by start, longer first, task before RCU section
    before spin); an inner slice starting or ending exactly with its parent is shrunk by 1 ns at
    that edge, when it is at least 3 ns long. ``ts``/``dur`` are in µs with ns resolution.
    """
    rank = {"task": 0, "rcu": 1, "lock": 2}
    tracks: dict[tuple, list[dict]] = {}
    moved: dict[tuple, float] = {}  # (pid, tid, old ts) -> new ts, for arrows ending there
    for e in events:
        if e["ph"] == "X":
            tracks.setdefault((e["pid"], e["tid"]), []).append(e)
    for evs in tracks.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"], rank.get(e.get("cat"), 3)))
        stack: list[tuple[int, int]] = []
        for e in evs:
            a = round(e["ts"] * 1000)
            b = a + round(e["dur"] * 1000)
            while stack and stack[-1][1] <= a:
                stack.pop()
            if stack and stack[-1][0] <= a and b <= stack[-1][1] and b - a >= 3:
                pa, pb = stack[-1]
                if a == pa:
                    a += 1
                    moved[(e["pid"], e["tid"], e["ts"])] = _us(a)
                if b == pb:
                    b -= 1
                e["ts"], e["dur"] = _us(a), _us(b - a)
            stack.append((a, b))
    for e in events:  # an arrow's head binds to the slice around it: keep it on the moved one
        if e["ph"] == "f" and (e["pid"], e["tid"], e["ts"]) in moved:
            e["ts"] = moved[(e["pid"], e["tid"], e["ts"])]


class Tracer:
    """Collects trace events from a machine's hooks and writes them as JSON."""

    def __init__(
        self, window: tuple[int, int | None] = (0, None), max_events: int = DEFAULT_MAX_EVENTS
    ) -> None:
        self.start, end = window
        self.end = end if end is not None else float("inf")
        self.max_events = max_events
        self.events: list[dict] = []
        self.truncated = False
        self.machine: Machine | None = None
        self.env = None
        self._flow = 0
        self._tasks: dict = {}  # task object -> [label, current op]
        self._running: dict = {}  # cpu id -> [t0, task, ops {name: count}]
        self._reader: dict = {}  # cpu id -> t0 of the outermost rcu_read_lock
        self._softirq: dict = {}  # cpu id -> (process, t0, callbacks)
        self._spins: dict = {}  # waiter's event -> (tid, t_wait)
        self._queued: dict = {}  # cpu id -> deque of (t_queued, tid) per call_rcu

    # -- set-up -----------------------------------------------------------------------------
    def attach(self, machine: Machine) -> None:
        """Hook into ``machine`` (before it runs): every CPU and RCU report here."""
        self.machine = machine
        self.env = machine.env
        for cpu in machine.cpus:
            cpu.trace = self
            self._queued[cpu.id] = deque()
        machine.rcu.trace = self

    @property
    def _rcu_pid(self) -> int:
        return len(self.machine.cpus) + 1

    # -- low level ----------------------------------------------------------------------------
    def _room(self) -> bool:
        if len(self.events) >= self.max_events:
            self.truncated = True
            return False
        return True

    def _in(self, t: int) -> bool:
        return self.start <= t < self.end

    def _slice(
        self, pid: int, tid: int, name: str, t0: int, t1: int, cat: str, args: dict | None = None
    ) -> None:
        if t1 < self.start or t0 >= self.end or not self._room():
            return
        a = max(t0, self.start)
        b = min(t1, self.end)
        ev = {
            "ph": "X",
            "pid": pid,
            "tid": tid,
            "name": name,
            "cat": cat,
            "ts": _us(a),
            "dur": _us(b - a),
        }
        if args:
            ev["args"] = args
        self.events.append(ev)

    def _instant(
        self,
        pid: int,
        tid: int,
        name: str,
        t: int,
        cat: str,
        args: dict | None = None,
        scope: str = "t",
    ) -> None:
        if not self._in(t) or not self._room():
            return
        ev = {"ph": "i", "s": scope, "pid": pid, "tid": tid, "name": name, "cat": cat, "ts": _us(t)}
        if args:
            ev["args"] = args
        self.events.append(ev)

    def _flow_pair(
        self, name: str, cat: str, src: tuple[int, int, int], dst: tuple[int, int, int]
    ) -> None:
        """An arrow from (pid, tid, t) to (pid, tid, t); both ends must fall in the window."""
        if not (self._in(src[2]) and self._in(dst[2])) or not self._room():
            return
        self._flow += 1
        fid = self._flow
        self.events.append(
            {
                "ph": "s",
                "id": fid,
                "pid": src[0],
                "tid": src[1],
                "name": name,
                "cat": cat,
                "ts": _us(src[2]),
            }
        )
        self.events.append(
            {
                "ph": "f",
                "bp": "e",
                "id": fid,
                "pid": dst[0],
                "tid": dst[1],
                "name": name,
                "cat": cat,
                "ts": _us(dst[2]),
            }
        )

    def _context(self, cpu: CPU) -> int:
        """The track of the code running now on ``cpu``: its softirq, or its task."""
        s = self._softirq.get(cpu.id)
        if s is not None and self.env.active_process is s[0]:
            return TID_SOFTIRQ
        return TID_TASKS

    # -- CPU ownership (desim.model.cpu) -------------------------------------------------------
    def task_acquire(self, cpu: CPU, task: object, granted: bool) -> None:
        """``cpu.acquire(task)``: learn the task's name; start its slice if it runs now."""
        if task not in self._tasks:
            self._tasks[task] = [self._label(), None]
        if granted:
            self._running[cpu.id] = [self.env._now, task, {}]

    def task_switch(self, cpu: CPU, nxt: object | None) -> None:
        """``cpu.release()``: end the owner's slice; ``nxt`` (if any) starts running."""
        now = self.env._now
        cur = self._running.pop(cpu.id, None)
        if cur is not None:
            t0, task, ops = cur
            label, op = self._tasks.get(task, ("task", None))
            name = next(iter(ops), None) or op or label
            args = {"task": label}
            if ops:
                args["ops"] = dict(ops)
            self._slice(cpu.id + 1, TID_TASKS, name, t0, now, "task", args)
        if nxt is not None:
            self._running[cpu.id] = [now, nxt, {}]

    def _label(self) -> str:
        p = self.env.active_process
        g = getattr(p, "_generator", None)
        if g is None:
            return "task"
        code = g.gi_code
        if code.co_name == "run_on" and g.gi_frame is not None:
            body = g.gi_frame.f_locals.get("body")
            if hasattr(body, "gi_code"):
                return kernel_term(body.gi_code.co_name)
        return kernel_term(code.co_qualname)

    def op(self, cpu: CPU, name: str) -> None:
        """A kernel path (``desim.model.mm_ops``) starts in the task running on ``cpu``."""
        cur = self._running.get(cpu.id)
        if cur is None:
            return
        ops = cur[2]
        ops[name] = ops.get(name, 0) + 1
        entry = self._tasks.get(cur[1])
        if entry is not None:
            entry[1] = name

    def instant(
        self, cpu: CPU | None, name: str, args: dict | None = None, cat: str = "event"
    ) -> None:
        """A marker on ``cpu``'s current track (or on the RCU track when ``cpu`` is None)."""
        if cpu is None:
            self._instant(self._rcu_pid, TID_GP, name, self.env._now, cat, args, scope="g")
        else:
            self._instant(cpu.id + 1, self._context(cpu), name, self.env._now, cat, args)

    # -- RCU readers ---------------------------------------------------------------------------
    def read_lock(self, cpu: CPU) -> None:
        self._reader[cpu.id] = self.env._now

    def read_unlock(self, cpu: CPU) -> None:
        t0 = self._reader.pop(cpu.id, None)
        if t0 is not None:
            self._slice(cpu.id + 1, TID_TASKS, "rcu_read_lock", t0, self.env._now, "rcu")

    # -- spinlocks (desim.model.lock) ----------------------------------------------------------
    def spin_begin(self, cpu: CPU, ev) -> None:
        """A contended acquire: ``cpu`` starts spinning until ``ev`` fires."""
        self._spins[ev] = self._context(cpu)

    def handoff(self, lock, src: CPU, dst: CPU, ev, t_wait: int, grant: int) -> None:
        """``src`` releases ``lock`` to waiter ``dst``, which gets it at ``grant``."""
        tid = self._spins.pop(ev, TID_TASKS)
        name = lock.stats.name
        self._slice(
            dst.id + 1,
            tid,
            f"spin {name}",
            t_wait,
            grant,
            "lock",
            {"waited_ns": grant - t_wait, "from": f"cpu{src.id}"},
        )
        self._flow_pair(
            f"handoff {name}",
            "lock",
            (src.id + 1, self._context(src), self.env._now),
            (dst.id + 1, tid, grant),
        )

    # -- RCU (desim.model.rcu) -----------------------------------------------------------------
    def call_rcu(self, cpu: CPU) -> None:
        # Callbacks of one CPU are invoked in the order they were queued (the segmented list
        # keeps order), so a FIFO of queueing contexts pairs each with its invocation.
        self._queued[cpu.id].append((self.env._now, self._context(cpu)))

    def softirq_begin(self, cpu: CPU) -> None:
        self._softirq[cpu.id] = (self.env.active_process, self.env._now, 0)

    def softirq_end(self, cpu: CPU) -> None:
        s = self._softirq.pop(cpu.id, None)
        if s is not None:
            self._slice(
                cpu.id + 1,
                TID_SOFTIRQ,
                "RCU_SOFTIRQ",
                s[1],
                self.env._now,
                "rcu",
                {"callbacks": s[2]},
            )

    def callback(self, cpu: CPU, func, arg, t_queued: int, t0: int, cost: int) -> None:
        """One callback invoked by ``cpu``'s softirq, occupying [t0, t0 + cost)."""
        s = self._softirq.get(cpu.id)
        if s is not None:
            self._softirq[cpu.id] = (s[0], s[1], s[2] + 1)
        name = _callable_name(func, arg)
        pid = cpu.id + 1
        self._slice(pid, TID_SOFTIRQ, name, t0, t0 + cost, "rcu", {"queued_ns_ago": t0 - t_queued})
        q = self._queued.get(cpu.id)
        src_tid = TID_TASKS
        while q:
            t, tid = q.popleft()
            if t == t_queued:
                src_tid = tid
                break
        self._flow_pair("call_rcu", "rcu", (pid, src_tid, t_queued), (pid, TID_SOFTIRQ, t0))

    def gp(self, number: int, t0: int, t1: int) -> None:
        self._slice(self._rcu_pid, TID_GP, f"GP {number}", t0, t1, "rcu", {"length_ns": t1 - t0})

    def fqs(self) -> None:
        self._instant(self._rcu_pid, TID_GP, "force quiescent states", self.env._now, "rcu")

    def qs(self, cpu: CPU) -> None:
        self._instant(cpu.id + 1, TID_TASKS, "quiescent state", self.env._now, "rcu")

    def backlog(self, pending: int) -> None:
        t = self.env._now
        if self._in(t) and self._room():
            self.events.append(
                {
                    "ph": "C",
                    "pid": self._rcu_pid,
                    "tid": TID_GP,
                    "name": "callbacks pending",
                    "ts": _us(t),
                    "args": {"callbacks": pending},
                }
            )

    # -- output -------------------------------------------------------------------------------
    def finish(self) -> None:
        """Close slices still open when the run (or the window) ended."""
        for cpu_id in list(self._running):
            self.task_switch(self.machine.cpus[cpu_id], None)
        for cpu_id in list(self._reader):
            self.read_unlock(self.machine.cpus[cpu_id])
        for cpu_id in list(self._softirq):
            self.softirq_end(self.machine.cpus[cpu_id])

    def _metadata(self) -> list[dict]:
        m = self.machine
        meta = []

        def name(pid, tid, what, value):
            ev = {"ph": "M", "pid": pid, "name": what, "args": {"name": value}}
            if tid is not None:
                ev["tid"] = tid
            meta.append(ev)

        for cpu in m.cpus:
            pid = cpu.id + 1
            name(pid, None, "process_name", f"CPU {cpu.id}")
            meta.append(
                {"ph": "M", "pid": pid, "name": "process_sort_index", "args": {"sort_index": pid}}
            )
            name(pid, TID_TASKS, "thread_name", "tasks")
            name(pid, TID_SOFTIRQ, "thread_name", "softirq")
        rp = self._rcu_pid
        name(rp, None, "process_name", "RCU")
        meta.append({"ph": "M", "pid": rp, "name": "process_sort_index", "args": {"sort_index": 0}})
        name(rp, TID_GP, "thread_name", "grace periods")
        return meta

    def to_dict(self) -> dict:
        self.finish()
        _nest(self.events)
        # Sorted by time, longer slices first at equal times, so parents precede children.
        body = sorted(self.events, key=lambda e: (e["ts"], -e.get("dur", 0)))
        cfg = self.machine.config
        return {
            "traceEvents": self._metadata() + body,
            "displayTimeUnit": "ns",
            "otherData": {
                "generator": "desim",
                "allocator": cfg.allocator.name,
                "cpus": cfg.machine.cpus,
                "seed": cfg.seed,
                "window_ns": [self.start, None if self.end == float("inf") else self.end],
                "truncated": self.truncated,
                "events": len(body),
            },
        }

    def summary(self) -> str:
        end = "end" if self.end == float("inf") else f"{self.end / 1e6:g} ms"
        more = ", truncated at the event cap" if self.truncated else ""
        return f"{len(self.events):,} events, {self.start / 1e6:g} ms to {end}{more}"

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), separators=(",", ":")))
        return p
