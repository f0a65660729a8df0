"""One schedule of an explore scenario: build the machine, run a script, answer its choices.

A schedule is fully decided by a resolved script (which operation starts when, on which CPU,
on what) and by the answers to the choice points met while it runs, in order:

* ``order``: several events are due at the same instant (and priority); which goes first
  (``desim.model.simcore.tied`` / ``run_first``). 0 is SimPy's own order, the order they were
  scheduled in.
* ``cost.<name>``: a variable cost (``desim.model.costs.VARIABLE``: fault work, TLB flush,
  page allocation, IPI latency, munmap, exit) takes one of its distribution's quantiles,
  ``QUANTILES`` (0 is the median).

Ticks, grace periods and callbacks follow from those: ticks fall on the jiffy grid, and a step
may start exactly on a tick, where ``order`` decides whether the tick (its quiescent-state
report, the end of a grace period, the callbacks it invokes) lands before or after the step.

The schedule runs with the fault lookahead off (``mm_ops.LOOKAHEAD``), so that a walk's end is
an event of its own that other events may precede, and checks the design's invariants and
memory books after every event (``SafetyChecker.audit``). It stops at the first violation.

What each operation runs (``desim.model.mm_ops``), on the step's CPU as one task:

* ``fault``: ``handle_fault`` on the step's table (lockless walk under ``rcu_read_lock``, ptl,
  ``pmd_same`` re-check);
* ``retract``: khugepaged's ``retract_page_tables`` of that table (``pte_free_defer``);
* ``collapse``: ``MADV_COLLAPSE`` of it (``collapse_pte_mapped_thp``, under mmap_lock);
* ``munmap``: ``do_munmap`` of one table (mmu_gather);
* ``mmap``: a new range mapped and touched: a fault that allocates a table (``__pte_alloc``);
* ``exit``: ``exit_mmap`` and then the mm's final drop (the machine's ``mm_lifetime`` rule).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from simpy.events import Timeout

from desim.model import mm_ops
from desim.model.costs import VARIABLE, Draws
from desim.model.hooks import callback_name
from desim.model.machine import Machine
from desim.model.safety import SafetyStop
from desim.model.simcore import run_first, tied
from desim.trace import Tracer

if TYPE_CHECKING:
    from desim.model.memory import MM

QUANTILES = (0.5, 0.01, 0.99, 0.1, 0.9)
MAX_TIES = 8  # an order choice considers at most this many tied events
MAX_CHOICES = 2000  # past this many choice points in one schedule, every answer is 0
COLLAPSE_COST = 20_000  # building the huge page (khugepaged's collapse_cost default)


@dataclass(frozen=True)
class Op:
    """A resolved step: ``op`` on CPU ``cpu`` at ``at`` ns from the script's start."""

    at: int
    cpu: int
    op: str
    mm: int
    table: int

    def to_dict(self) -> dict:
        return {"at": self.at, "cpu": self.cpu, "op": self.op, "mm": self.mm, "table": self.table}


class Diverged(Exception):
    """A replay met a choice point other than the one recorded."""


class Chooser:
    """Answers a schedule's choice points and remembers them as ``(label, n, answer)``.

    A point with one option is no choice and is not recorded.
    """

    def __init__(self) -> None:
        self.made: list[tuple[str, int, int]] = []

    def choose(self, label: str, n: int) -> int:
        if n <= 1:
            return 0
        v = 0 if len(self.made) >= MAX_CHOICES else self.pick(label, n)
        self.made.append((label, n, v))
        return v

    def pick(self, label: str, n: int) -> int:
        return 0


class ReplayChooser(Chooser):
    """Gives back recorded answers, checking that each is asked the same question."""

    def __init__(self, recorded: list) -> None:
        super().__init__()
        self.recorded = [tuple(c) for c in recorded]

    def pick(self, label: str, n: int) -> int:
        i = len(self.made)
        if i >= len(self.recorded):
            raise Diverged(f"choice {i + 1}: {label} of {n} was not recorded")
        rl, rn, rv = self.recorded[i]
        if (rl, rn) != (label, n):
            raise Diverged(f"choice {i + 1}: recorded {rl} of {rn}, the run asks {label} of {n}")
        return int(rv)


def quantile(dist, q: float) -> float:
    """The ``q`` quantile of a cost: an int is itself; a distribution by its inverse CDF."""
    if isinstance(dist, int):
        return dist
    from scipy.special import ndtri

    kind = dist.dist
    if kind == "constant":
        v = dist.value
    elif kind == "uniform":
        v = dist.low + q * (dist.high - dist.low)
    elif kind == "exponential":
        v = -dist.mean() * math.log1p(-q)
    elif kind == "lognormal":
        v = math.exp(dist.mu + dist.sigma * float(ndtri(q)))
    else:  # empirical: its samples' quantile
        import numpy as np

        v = float(np.quantile(dist.data, q))
    return min(v, dist._cap)


@lru_cache(maxsize=256)
def levels(dist) -> tuple[int, ...]:
    """The durations a cost may take in a schedule: its ``QUANTILES``, duplicates dropped."""
    out: list[int] = []
    for q in QUANTILES:
        v = max(0, round(quantile(dist, q)))
        if v not in out:
            out.append(v)
    return tuple(out)


def _fixed(v: int):
    return lambda: v


def _chosen(chooser: Chooser, label: str, lv: tuple[int, ...]):
    n = len(lv)
    return lambda: lv[chooser.choose(label, n)]


def cost_draws(costs, chooser: Chooser) -> Draws:
    """Stands for ``machine.draw`` (``desim.model.costs.Draws``): each variable cost asks
    ``chooser`` which of its levels this draw takes."""
    d = Draws.__new__(Draws)  # its samplers set here, not drawn from the machine's streams
    for name in VARIABLE:
        lv = levels(getattr(costs, name))
        setattr(d, name, _fixed(lv[0]) if len(lv) == 1 else _chosen(chooser, f"cost.{name}", lv))
    return d


class StepLog(Tracer):
    """A tracer that also writes what happens as lines in the model's and designs' words.

    ``steps`` holds ``(t_ns, cpu id or -1, text)`` in the order things happened; ``callbacks``
    the RCU callbacks run, as ``(name, cpu id, start, end)``. The Chrome trace is recorded only
    within ``window`` (nothing, while searching).
    """

    def __init__(self, window: tuple[int, int | None]) -> None:
        super().__init__(window)
        self.steps: list[tuple[int, int, str]] = []
        self.callbacks: list[tuple[str, int, int, int]] = []
        self.origin = 0

    def add(self, cpu, text: str) -> None:
        self.steps.append((self.env.now, -1 if cpu is None else cpu.id, text))

    def note(self, t: int, cpu, obj, what: str) -> None:
        """``SafetyChecker.on_note``: the object histories, the designs' own terms."""
        self.steps.append((t, -1 if cpu is None else cpu.id, f"{obj!r}: {what}"))

    def op(self, cpu, name: str) -> None:
        super().op(cpu, name)
        if name == "populate":  # the others are the steps' own operations, logged by Schedule
            self.add(cpu, "__pte_alloc: a new table")

    def instant(self, cpu, name: str, args: dict | None = None, cat: str = "event") -> None:
        super().instant(cpu, name, args, cat)
        if name.startswith("VIOLATION"):
            return  # the violation itself is reported from the checker's record
        if name == "retracted: pte_free_defer" and args:
            name = f"pte_free_defer({args['table']})"
        self.add(cpu, name)

    def read_lock(self, cpu) -> None:
        super().read_lock(cpu)
        self.add(cpu, "rcu_read_lock")

    def read_unlock(self, cpu) -> None:
        super().read_unlock(cpu)
        self.add(cpu, "rcu_read_unlock")

    def spin_begin(self, cpu, ev) -> None:
        super().spin_begin(cpu, ev)
        self.add(cpu, "spin_lock: contended, spins")

    def handoff(self, lock, src, dst, ev, t_wait: int, grant: int) -> None:
        super().handoff(lock, src, dst, ev, t_wait, grant)
        self.add(src, f"spin_unlock({lock.stats.name}): cpu{dst.id} gets it")

    def call_rcu(self, cpu) -> None:
        super().call_rcu(cpu)
        self.add(cpu, "call_rcu")

    def callback(self, cpu, func, arg, t_queued: int, t0: int, cost: int) -> None:
        super().callback(cpu, func, arg, t_queued, t0, cost)
        name = callback_name(func, arg)
        self.callbacks.append((name, cpu.id, t0, t0 + cost))
        if isinstance(arg, tuple) and len(arg) == 3 and callable(arg[1]):
            arg = arg[2]  # a page's rcu_head callback: the design's own argument
        shown = ", ".join(repr(a) for a in (arg if isinstance(arg, tuple) else (arg,)) if _named(a))
        self.add(cpu, f"RCU callback {name}({shown})")

    def gp(self, number: int, t0: int, t1: int) -> None:
        super().gp(number, t0, t1)
        self.steps.append(
            (t1, -1, f"grace period {number} ends (began at {t0 - self.origin:+,} ns)")
        )


def _named(obj) -> bool:
    """Objects a reader can follow through a log: pages, tables, mms."""
    return type(obj).__name__ in ("Page", "PageTable", "MM")


def _val(v):
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | tuple):
        return tuple(_val(x) for x in v)
    i = getattr(v, "id", None)
    return ("mm", i) if isinstance(i, int) else type(v).__name__


def _data_key(data):
    """A design's per-page state as plain values (times left out: they always differ)."""
    if data is None:
        return None
    slots = getattr(type(data), "__slots__", ())
    return tuple(_val(getattr(data, s, None)) for s in slots if not s.startswith("t_"))


@dataclass
class Outcome:
    """What one schedule did."""

    script: list[Op]
    choices: list[tuple[str, int, int]]
    failure: dict | None  # the first violation record, or a model error
    steps: list[tuple[int, int, str]]  # the log from the script's start, times from it
    setup: list[str]
    states: set = field(default_factory=set)
    pairs: set = field(default_factory=set)
    ops_run: Counter = field(default_factory=Counter)
    events: int = 0
    end_ns: int = 0
    log: StepLog | None = None


class Schedule:
    """Build the scenario's machine, populate it, and run ``script`` answering ``chooser``."""

    def __init__(self, scenario, script: list[Op], chooser: Chooser, trace: bool = False):
        self.scenario = scenario
        self.script = sorted(script, key=lambda s: s.at)  # stable: equal times keep their order
        self.chooser = chooser
        cfg = scenario.config
        m = self.m = Machine(cfg)
        m.draw = cost_draws(cfg.costs, chooser)
        for c in m.cpus:  # a fault's work is one of the choices too, whichever CPU draws it
            c.fault_work = m.draw.fault_work
        self.env = m.env
        self.log = StepLog((0, None) if trace else (0, 0))
        self.log.attach(m)
        assert m.safety is not None  # a scenario always runs the checker (explore.spec)
        m.safety.on_note = self.log.note
        self.mms: list[MM] = []
        self.exiting: set = set()
        self.intervals: list[tuple[str, int, int, int]] = []
        self.ops_run: Counter = Counter()
        self.t0 = 0

    # -- setup ------------------------------------------------------------------------------
    def _setup(self):
        """The starting mms and their tables, populated on CPU 0 before anything is explored."""
        m = self.m
        spec = self.scenario.spec
        cpu = m.cpus[0]
        task = object()
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        for _ in range(spec.mms):
            mm = m.new_mm(spec.tables)
            mm.shmem_fraction = 1.0
            self.mms.append(mm)
            for _ in range(spec.tables):
                yield from mm_ops.populate(m, cpu, task, mm, True)
        cpu.release()

    # -- the steps --------------------------------------------------------------------------
    def _table(self, mm, k: int):
        tables = mm.tables
        return tables[k % len(tables)] if tables else None

    def _describe(self, s: Op, mm, table) -> str:
        t = "no table" if table is None else repr(table)
        return {
            "fault": f"fault({mm!r}, {t})",
            "retract": f"khugepaged retract_page_tables({mm!r}, {t})",
            "collapse": f"MADV_COLLAPSE({mm!r}, {t})",
            "munmap": f"munmap({mm!r}, 1 table)",
            "mmap": f"mmap + fault({mm!r}): a new range",
            "exit": f"exit_mmap({mm!r})",
        }[s.op]

    def _body(self, s: Op, cpu, task, mm, table):
        m = self.m
        op = s.op
        if op == "fault":
            n = len(mm.tables)
            pick = ((s.table % n) + 0.5) / n if n else 0.0
            yield from mm_ops.handle_fault(m, cpu, task, mm, pick, True)
        elif op == "retract":
            if table is not None:
                yield from mm_ops.retract_page_tables(m, cpu, task, [(mm, table)])
        elif op == "collapse":
            if table is not None:
                yield from mm_ops.collapse_pte_mapped_thp(m, cpu, task, mm, table, COLLAPSE_COST)
        elif op == "munmap":
            yield from mm_ops.do_munmap(m, cpu, task, mm, 1)
        elif op == "mmap":
            mm.target_tables += 1
            yield from mm_ops.handle_fault(m, cpu, task, mm, 0.0, True)
        elif op == "exit":
            yield from mm_ops.exit_mmap(m, cpu, task, mm)

    def _step(self, s: Op):
        env = self.env
        m = self.m
        # Always an event, even at delay 0: steps due together are tied, and ordered by choice.
        yield Timeout(env, self.t0 + s.at - env.now)
        mm = self.mms[s.mm]
        cpu = m.cpus[s.cpu]
        if s.op == "exit":
            if mm in self.exiting:
                self.log.add(cpu, f"exit_mmap({mm!r}): already exiting, nothing to do")
                return
            self.exiting.add(mm)
        task = object()
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        t_start = env.now
        table = self._table(mm, s.table) if mm.alive else None
        what = self._describe(s, mm, table)
        if not mm.alive and s.op != "exit":
            what += f": {mm!r} has exited"
        self.log.add(cpu, what)
        self.ops_run[s.op] += 1
        yield from self._body(s, cpu, task, mm, table)
        cpu.release()
        if s.op == "exit":
            m.mm_life.final_drop(cpu, mm)
        self.log.add(cpu, f"{s.op} done")
        self.intervals.append((s.op, s.cpu, t_start, env.now))

    # -- running ----------------------------------------------------------------------------
    def run(self) -> Outcome:
        saved = mm_ops.LOOKAHEAD
        mm_ops.LOOKAHEAD = False  # every walk ends in an event of its own, to be ordered
        try:
            return self._run()
        finally:
            mm_ops.LOOKAHEAD = saved

    def _run(self) -> Outcome:
        m = self.m
        env = self.env
        safety = m.safety
        assert safety is not None
        setup = env.process(self._setup())
        env.run(until=setup)  # SimPy's own order: the start is not explored
        jiffy = m.config.machine.jiffy_ns
        self.t0 = t0 = -(-env.now // jiffy) * jiffy  # the script starts on a tick
        self.log.origin = t0
        self.log.steps.clear()
        setup_lines = [f"{mm!r}: {', '.join(repr(t) for t in mm.tables)}" for mm in self.mms]
        for s in self.script:
            env.process(self._step(s))
        end = t0 + (self.script[-1].at if self.script else 0) + self.scenario.spec.horizon
        choose = self.chooser.choose
        states: set = set()
        failure: dict[str, Any] | None = None
        events = 0
        while True:
            if env.peek() > end:
                break
            k = tied(env)
            if k > 1:
                run_first(env, choose("order", min(k, MAX_TIES)))
            try:
                env.step()
                events += 1
                if not safety.total:
                    safety.audit()
            except SafetyStop:
                pass
            except Diverged:
                raise
            except Exception as exc:  # the model met a state it cannot handle: a finding too
                if not safety.total:
                    failure = {
                        "kind": "model_error",
                        "t_ns": env.now,
                        "cpu": -1,
                        "message": f"{type(exc).__name__}: {exc}",
                        "objects": [],
                        "history": [],
                    }
                    break
            except BaseException as exc:
                # SimPy re-raises what a process raised as a copy; the search's own control
                # flow (hypothesis ending an example) and Ctrl-C must leave as they came.
                raise exc.__cause__ or exc from None
            if safety.total:
                failure = dict(safety.records[0])
                break
            states.add(self._fingerprint())
        steps = [(t - t0, c, text) for t, c, text in self.log.steps]
        if failure is not None:
            failure["t_ns"] -= t0
            for h in failure.get("history", ()):
                h["t_ns"] -= t0
        return Outcome(
            script=self.script,
            choices=list(self.chooser.made),
            failure=failure,
            steps=steps,
            setup=setup_lines,
            states=states,
            pairs=self._pairs(),
            ops_run=self.ops_run,
            events=events,
            end_ns=env.now - t0,
            log=self.log,
        )

    def _fingerprint(self) -> tuple:
        """The machine's state, abstracted from time and object identity: what the designs, the
        locks and RCU hold. Two schedules that pass through equal fingerprints explored the same
        state."""
        m = self.m
        rcu = m.rcu
        cpus = tuple(
            (c.owner is not None, c.nesting, c.idle, c.cbs.n, c.softirq_running) for c in m.cpus
        )
        mms = tuple(
            (mm.alive, mm.freed, mm.target_tables, tuple(t.state for t in mm.tables))
            for mm in self.mms
        )
        pages = tuple(
            (
                p.flags,
                p.rcu_queued,
                p.on_list is not None,
                p.frag_refcount,
                tuple(-1 if t is None else t.state for t in p.tables),
                -1 if p.ptl is None or p.ptl.holder is None else p.ptl.holder.id,
                _data_key(p.data),
            )
            for p in m.allocator.held_pages
        )
        return (cpus, (rcu.gp_active, rcu.pending), mms, pages)

    def _pairs(self) -> set:
        """Operation pairs that overlapped in time: on two CPUs, or a callback under a task."""
        spans = list(self.intervals)
        spans += [(name, cpu, a, b) for name, cpu, a, b in self.log.callbacks]
        ops = set(self.scenario.spec.ops) | {s.op for s in self.script}
        out = set()
        for i, (n1, c1, a1, b1) in enumerate(spans):
            for n2, c2, a2, b2 in spans[i + 1 :]:
                if a1 < b2 and a2 < b1 and (c1 != c2 or n1 not in ops or n2 not in ops):
                    out.add(tuple(sorted((n1, n2))))
        return out
