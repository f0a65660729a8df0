"""Timeline traces of a run in the Chrome / Perfetto trace-event JSON format.

``desim run CONFIG --trace FILE.json [--trace-window 100ms:110ms]`` records what each simulated
CPU did, so a developer can open the file in https://ui.perfetto.dev (or chrome://tracing) and
watch a race unfold: a fault's lockless walk inside its RCU read-side section, khugepaged
retracting the table under it, the ``pte_free_defer`` callback running a grace period later.

Three parts, each testable apart:

* ``Tracer`` (here) is what the model calls: it implements ``desim.model.hooks.TraceHooks``,
  reads the clock and turns the model's objects into plain facts (CPU ids, task and callback
  names, lock classes, which lane of a CPU runs the code);
* ``desim.trace.timeline.Timeline`` pairs those facts into slices, instants and arrows, keeps
  the window and the event cap, and nests slices unambiguously;
* ``desim.trace.chrome`` writes a timeline as trace-event JSON.

What a trace shows (see ``timeline`` for the tracks): one slice per stretch a task owns a CPU,
named by the kernel path it runs (``fault``, ``retract_page_tables``, ``exit_mmap``...) or else
by the task's own name; inside it the outermost ``rcu_read_lock`` sections and ``spin <lock
class>`` waits; RCU_SOFTIRQ runs with one slice per callback; one slice per grace period, FQS
scans and quiescent states as instants, a ``callbacks pending`` counter; arrows from a lock's
release to the next holder and from each ``call_rcu`` to its callback. Names are the kernel's,
given where things are made (``desim.model.hooks``): tasks by what they are (``user task``,
``khugepaged``), callbacks by the function the kernel queues (``pte_free_now``,
``tlb_remove_table_rcu``), never desim's Python names.

Hooks in the model are guarded by ``cpu.trace is not None`` / ``rcu.trace is not None``: with
no tracer they cost one attribute test on paths that are not already slow. This package is fed
by the model and so must not import pandas (or anything heavy).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from desim.model.hooks import callback_name, task_name
from desim.trace import chrome
from desim.trace.timeline import DEFAULT_MAX_EVENTS, RCU_TRACK, TASKS, Timeline, Track
from desim.units import UnitError, parse_time_ns

if TYPE_CHECKING:
    from simpy.events import Event

    from desim.model.cpu import CPU
    from desim.model.lock import SpinLock
    from desim.model.machine import Machine
    from desim.model.simcore import Environment

__all__ = ["DEFAULT_MAX_EVENTS", "Tracer", "parse_window", "tracer_for"]


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


class Tracer:
    """The model's tracer (``desim.model.hooks.TraceHooks``): facts to a ``Timeline``."""

    def __init__(
        self, window: tuple[int, int | None] = (0, None), max_events: int = DEFAULT_MAX_EVENTS
    ) -> None:
        self.timeline = Timeline(window, max_events)
        self.machine: Machine | None = None
        self._env: Environment | None = None

    @property
    def start(self) -> int:
        return self.timeline.start

    @property
    def end(self) -> float:
        return self.timeline.end

    @property
    def truncated(self) -> bool:
        return self.timeline.truncated

    # -- set-up -----------------------------------------------------------------------------
    def attach(self, machine: Machine) -> None:
        """Hook into ``machine`` (before it runs): every CPU and RCU report here."""
        self.machine = machine
        self._env = machine.env
        for cpu in machine.cpus:
            cpu.trace = self
        machine.rcu.trace = self

    @property
    def env(self) -> Environment:
        if self._env is None:
            raise RuntimeError("the tracer is not attached to a machine")
        return self._env

    def _lane(self, cpu: CPU) -> str:
        """The lane of the code running now on ``cpu``: its softirq, or its task."""
        return self.timeline.lane(cpu.id, self.env.active_process)

    # -- CPU ownership (desim.model.cpu) -------------------------------------------------------
    def task_acquire(self, cpu: CPU, task: object, granted: bool) -> None:
        self.timeline.task_seen(task, task_name(task))
        if granted:
            self.timeline.task_runs(cpu.id, task, self.env.now)

    def task_switch(self, cpu: CPU, nxt: object | None) -> None:
        self.timeline.task_switch(cpu.id, nxt, self.env.now)

    def op(self, cpu: CPU, name: str) -> None:
        self.timeline.op(cpu.id, name)

    def instant(
        self, cpu: CPU | None, name: str, args: dict | None = None, cat: str = "event"
    ) -> None:
        now = self.env.now
        if cpu is None:
            self.timeline.instant(RCU_TRACK, name, now, cat, args, scope="g")
        else:
            self.timeline.instant(Track(cpu.id, self._lane(cpu)), name, now, cat, args)

    # -- RCU readers ---------------------------------------------------------------------------
    def read_lock(self, cpu: CPU) -> None:
        self.timeline.read_lock(cpu.id, self.env.now)

    def read_unlock(self, cpu: CPU) -> None:
        self.timeline.read_unlock(cpu.id, self.env.now)

    # -- spinlocks (desim.model.lock) ----------------------------------------------------------
    def spin_begin(self, cpu: CPU, ev: Event) -> None:
        self.timeline.spin_begin(ev, self._lane(cpu))

    def handoff(
        self, lock: SpinLock, src: CPU, dst: CPU, ev: Event, t_wait: int, grant: int
    ) -> None:
        self.timeline.handoff(
            lock.stats.name, src.id, self._lane(src), dst.id, ev, t_wait, grant, self.env.now
        )

    # -- RCU (desim.model.rcu) -----------------------------------------------------------------
    def call_rcu(self, cpu: CPU) -> None:
        self.timeline.call_rcu(cpu.id, self._lane(cpu), self.env.now)

    def softirq_begin(self, cpu: CPU) -> None:
        self.timeline.softirq_begin(cpu.id, self.env.active_process, self.env.now)

    def softirq_end(self, cpu: CPU) -> None:
        self.timeline.softirq_end(cpu.id, self.env.now)

    def callback(
        self, cpu: CPU, func: Callable, arg: object, t_queued: int, t0: int, cost: int
    ) -> None:
        self.timeline.callback(cpu.id, callback_name(func, arg), t_queued, t0, cost)

    def gp(self, number: int, t0: int, t1: int) -> None:
        self.timeline.gp(number, t0, t1)

    def fqs(self) -> None:
        self.timeline.instant(RCU_TRACK, "force quiescent states", self.env.now, "rcu")

    def qs(self, cpu: CPU) -> None:
        self.timeline.instant(Track(cpu.id, TASKS), "quiescent state", self.env.now, "rcu")

    def backlog(self, pending: int) -> None:
        self.timeline.count(RCU_TRACK, "callbacks pending", self.env.now, {"callbacks": pending})

    # -- output -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The trace as a JSON document (closing what is still open now)."""
        m = self.machine
        if m is None:
            raise RuntimeError("the tracer is not attached to a machine")
        tl = self.timeline
        tl.finish(self.env.now)
        cfg = m.config
        return chrome.encode(
            tl.records,
            len(m.cpus),
            {
                "generator": "desim",
                "allocator": cfg.allocator.name,
                "cpus": cfg.machine.cpus,
                "seed": cfg.seed,
                "window_ns": [tl.start, None if tl.end == float("inf") else tl.end],
                "truncated": tl.truncated,
            },
        )

    def summary(self) -> str:
        tl = self.timeline
        end = "end" if tl.end == float("inf") else f"{tl.end / 1e6:g} ms"
        more = ", truncated at the event cap" if tl.truncated else ""
        return f"{tl.events:,} events, {tl.start / 1e6:g} ms to {end}{more}"

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), separators=(",", ":")))
        return p
