"""Shared fixtures: small configs, machines, and a way to drive kernel operations step by step."""

from __future__ import annotations

import copy
import json

import pytest

from desim.config import Config, set_dotted, validate
from desim.model.machine import Machine

BASE = {
    "seed": 1,
    "duration": "50ms",
    "machine": {"cpus": 4, "hz": 1000, "page_size": "4KiB"},
    # constant costs, so that unit tests can state exact times (runs of the example configs
    # use each arch's cost profile)
    "costs": {"profile": "flat"},
    "workload": {},
    # The periodic invariant auditor never runs out of events; tests that call env.run() with
    # no end time need it off, and tests of the auditor turn it on.
    "safety": {"audit_interval": 0},
}


def make_config(overrides: dict | None = None, **sections) -> Config:
    """A small config; ``overrides`` maps dotted keys to values, ``sections`` replace sections."""
    data = copy.deepcopy(BASE)
    data.update(sections)
    for k, v in (overrides or {}).items():
        set_dotted(data, k, v)
    return validate(data)


def make_machine(overrides: dict | None = None, **sections) -> Machine:
    return Machine(make_config(overrides, **sections))


def start_task(m: Machine, cpu_id: int, body_fn, *args):
    """Start ``body_fn(cpu, task, *args)`` as a task owning CPU ``cpu_id``; returns its process.

    Nothing runs until the caller runs the environment; the process's value is the generator's
    return value. Tasks started before one ``env.run`` begin at the same instant, in order.
    """
    cpu = m.cpus[cpu_id]
    task = object()

    def proc():
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        value = yield from body_fn(cpu, task, *args)
        cpu.release()
        return value

    return m.env.process(proc())


def run_task(m: Machine, cpu_id: int, body_fn, *args):
    """Run ``body_fn(cpu, task, *args)`` as a task owning CPU ``cpu_id`` until it finishes.

    Returns the generator's return value. The clock advances only as far as the task needs,
    plus whatever other processes do meanwhile.
    """
    p = start_task(m, cpu_id, body_fn, *args)
    m.env.run(until=p)
    return p.value


def run_together(m: Machine, *jobs) -> list:
    """Start ``(cpu_id, body_fn)`` tasks at the same instant and run until all have finished.

    ``body_fn(cpu, task)`` as for ``run_task``; returns their return values, in order.
    """
    procs = [start_task(m, cpu_id, body_fn) for cpu_id, body_fn in jobs]
    m.env.run(until=m.env.all_of(procs))
    return [p.value for p in procs]


def settle(m: Machine, ns: int = 50_000_000) -> None:
    """Let RCU finish: run until no callback is pending (or ``ns`` more simulated time)."""
    end = m.env.now + ns
    while m.rcu.pending and m.env.now < end:
        m.env.run(until=min(end, m.env.now + 1_000_000))


def check(m: Machine, violations: int | None = None) -> None:
    """An allocator's books agree with its pages, its invariants hold, no (or N) violations.

    By default the violations expected are those the design as merged is known to commit
    (``known_violations``: v6.6 powerpc's bad_page_state), and its invariants must hold.
    """
    a = m.allocator
    assert a.account.as_tuple() == a.audit().as_tuple()
    assert a.account.held == len(a.held_pages) * a.page_size
    assert m.pages.pages_held("pgtable") == len(a.held_pages)
    if violations is None:
        violations = sum(m.safety.counts[k] for k in a.known_violations)
        assert a.invariant_errors() == []
    elif not violations:
        assert a.invariant_errors() == []
    assert m.safety.total == violations, m.safety.records[:2]


def split(m: Machine) -> dict:
    """The allocator's non-zero memory kinds, in bytes."""
    acc = m.allocator.account
    return {
        k: v
        for k, v in zip(
            ("live", "pending", "stranded", "spare", "internal"), acc.as_tuple(), strict=True
        )
        if v
    }


@pytest.fixture
def machine():
    return make_machine()


def run_outcome(r, drop: tuple[str, ...] = ("sim.wall_s",)) -> str:
    """Everything a run computed, as one JSON text to compare runs with (NaN == NaN, and an
    int drifting to a float shows): summary less ``drop``, series, histograms, locks, grace
    periods and violations."""
    s = {k: v for k, v in r.summary.items() if k not in drop}
    return json.dumps(
        {
            "summary": s,
            "series": r.series,
            "hist": r.latency_hist,
            "locks": r.locks,
            "gp": r.gp_spans,
            "violations": r.violations,
        },
        sort_keys=True,
        default=str,
    )
