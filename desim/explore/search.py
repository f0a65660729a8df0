"""The search: hypothesis draws schedules, runs them, and shrinks the first failing one.

Every schedule is one hypothesis example. Its script is drawn first (``script_strategy``: which
operations, on which CPUs and objects, and when each starts after the one before: within
``fine`` of it, on one of the next ``max_ticks`` jiffy boundaries, or anywhere within
``max_delay``); then the machine runs and asks its choice points (``desim.explore.run``) of
``data.draw``, interactively. Hypothesis keeps the whole run as one sequence of choices, so
when a schedule fails it shrinks that sequence: fewer steps first, then smaller answers. A
smaller answer is a simpler schedule: delay 0, the first CPU, the first mm, SimPy's own order,
the median cost. The last run hypothesis makes is the shrunk failing schedule, which is what
``explore`` returns, and what its replay file records.

Runs are deterministic: the seed is hypothesis's (``@seed``), there is no example database,
no deadline, and no phase that depends on earlier runs of the process. ``budget`` schedules
are one hypothesis run; ``time_limit`` runs batches of ``BATCH`` schedules with seeds
``seed``, ``seed + 1``... until the time is up, which is as deterministic as the clock.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from desim.explore.run import Chooser, Op, Outcome, ReplayChooser, Schedule
from desim.explore.spec import Scenario

BATCH = 50  # schedules per hypothesis run when searching for a time


class DataChooser(Chooser):
    """Answers choice points with hypothesis draws, so that they shrink with the rest."""

    def __init__(self, data) -> None:
        super().__init__()
        self.data = data

    def pick(self, label: str, n: int) -> int:
        return self.data.draw(_answers(n))


@lru_cache(maxsize=64)
def _answers(n: int):
    return st.integers(0, n - 1)


NEXT = "next"  # a step's CPU: the one after the previous step's (so the two may race)
SAME = "same"  # a step's mm and table: the previous step's (so the two touch one object)


def _timing(spec):
    # The first branch is the simplest schedule, and where shrinking leads: the same instant.
    return st.one_of(
        st.just(("fine", 0)),
        st.tuples(st.just("fine"), st.integers(0, spec.fine)),
        st.tuples(st.just("tick"), st.integers(1, spec.max_ticks)),
        st.tuples(st.just("any"), st.integers(0, spec.max_delay)),
    )


def _start(prev: int, timing: tuple[str, int], jiffy: int) -> int:
    how, v = timing
    if how == "at":
        return v
    if how == "tick":
        return (prev // jiffy + v) * jiffy  # the script's start is on a tick
    return prev + v


def script_strategy(scenario: Scenario):
    """Scripts of the scenario: its fixed script with the fields left out drawn, or a random
    list of steps from its ``ops``; each resolved to ``Op``\\ s with start times.

    Races need two steps on one object, on two CPUs, close in time; drawing each field
    independently would make that rare. So a step's CPU may be ``NEXT`` (the one after the
    previous step's), its object ``SAME`` (the previous step's mm and table), and its start the
    same instant as the previous step's; these come first, so a shrunk script uses them.
    """
    spec = scenario.spec
    cfg = scenario.config
    ncpus = cfg.machine.cpus
    jiffy = cfg.machine.jiffy_ns
    cpu = st.one_of(st.just(NEXT), st.integers(0, ncpus - 1))
    mm = st.integers(0, spec.mms - 1)
    table = st.integers(0, spec.tables - 1)
    target = st.one_of(st.just(SAME), st.tuples(mm, table))

    if spec.script is None:
        step = st.tuples(st.sampled_from(spec.ops), cpu, target, _timing(spec))
        raw = st.lists(step, min_size=1, max_size=spec.steps)
    else:

        def fixed(s):
            return st.tuples(
                st.just(s.op),
                st.just(s.cpu) if s.cpu is not None else cpu,
                st.tuples(
                    st.just(s.mm) if s.mm is not None else mm,
                    st.just(s.table) if s.table is not None else table,
                ),
                st.just(("at", s.at)) if s.at is not None else _timing(spec),
            )

        raw = st.tuples(*(fixed(s) for s in spec.script)).map(list)

    def resolve(steps) -> list[Op]:
        out = []
        prev, prev_cpu, prev_target = 0, -1, (0, 0)
        for op, c, tgt, timing in steps:
            c = (prev_cpu + 1) % ncpus if c == NEXT else c
            tgt = prev_target if tgt == SAME else tgt
            at = _start(prev, timing, jiffy)
            out.append(Op(at, c, op, tgt[0], tgt[1]))
            prev, prev_cpu, prev_target = at, c, tgt
        return out

    return raw.map(resolve)


@dataclass
class Coverage:
    """What the schedules run so far covered."""

    schedules: int = 0
    states: set = field(default_factory=set)
    pairs: Counter = field(default_factory=Counter)  # pair -> schedules where it interleaved
    ops_run: Counter = field(default_factory=Counter)
    choices: int = 0
    orders: int = 0  # of which: events due together, ordered
    reordered: int = 0  # of those, answered other than SimPy's own order
    events: int = 0

    def add(self, out: Outcome) -> None:
        self.schedules += 1
        self.states |= out.states
        self.pairs.update(out.pairs)
        self.ops_run.update(out.ops_run)
        self.events += out.events
        for label, _n, v in out.choices:
            self.choices += 1
            if label == "order":
                self.orders += 1
                self.reordered += v != 0

    def to_dict(self, ops: tuple[str, ...]) -> dict:
        missing = [
            f"{a} x {b}"
            for i, a in enumerate(ops)
            for b in ops[i:]
            if tuple(sorted((a, b))) not in self.pairs
        ]
        return {
            "schedules": self.schedules,
            "distinct_states": len(self.states),
            "events": self.events,
            "choice_points": self.choices,
            "order_choices": self.orders,
            "reordered": self.reordered,
            "operations_run": dict(sorted(self.ops_run.items())),
            "pairs_interleaved": {
                f"{a} x {b}": n for (a, b), n in sorted(self.pairs.items(), key=lambda kv: kv[0])
            },
            "pairs_never_interleaved": missing,
        }


@dataclass
class Result:
    scenario: Scenario
    seed: int
    found: Outcome | None
    coverage: Coverage
    wall_s: float
    first_found_s: float | None = None  # wall time until the first failing schedule
    first_found_after: int | None = None  # schedules run until then
    shrink_runs: int = 0  # schedules run while shrinking


class _Found(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.failure["kind"] if outcome.failure else "")
        self.outcome = outcome


def explore(
    scenario: Scenario,
    seed: int,
    budget: int | None = None,
    time_limit: float | None = None,
    progress: Callable[[Coverage], None] | None = None,
) -> Result:
    """Search ``scenario``'s schedules: ``budget`` of them, or batches until ``time_limit`` s."""
    cov = Coverage()
    t_start = time.perf_counter()
    res = Result(scenario, seed, None, cov, 0.0)
    strategy = script_strategy(scenario)

    def one(data) -> None:
        script = data.draw(strategy)
        out = Schedule(scenario, script, DataChooser(data)).run()
        cov.add(out)
        if progress is not None:
            progress(cov)
        if out.failure is not None:
            if res.first_found_s is None:
                res.first_found_s = time.perf_counter() - t_start
                res.first_found_after = cov.schedules
            raise _Found(out)

    def batch(s: int, n: int) -> Outcome | None:
        @settings(
            database=None,
            max_examples=n,
            deadline=None,
            derandomize=False,
            phases=(Phase.generate, Phase.shrink),
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
            report_multiple_bugs=False,
            print_blob=False,
        )
        @hypothesis_seed(s)
        @given(st.data())
        def schedule(data):
            one(data)

        try:
            schedule()
        except _Found as exc:
            return exc.outcome
        return None

    if time_limit is None:
        res.found = batch(seed, budget or scenario.spec.budget)
    else:
        s = seed
        while res.found is None and time.perf_counter() - t_start < time_limit:
            res.found = batch(s, BATCH)
            s += 1
    res.wall_s = time.perf_counter() - t_start
    if res.found is not None:
        res.shrink_runs = cov.schedules - (res.first_found_after or 0)
    return res


def replay(scenario: Scenario, script: list[Op], choices: list, trace: bool = True) -> Outcome:
    """Run one schedule again from its script and recorded choices (``Diverged`` if the model
    asks other questions than were recorded)."""
    return Schedule(scenario, script, ReplayChooser(choices), trace=trace).run()
