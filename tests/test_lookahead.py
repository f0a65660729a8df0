"""The fault's lookahead path (one event for walk and ptl section) changes no outcome.

A fault whose walk nothing can interrupt takes the ptl as of the walk's end and sleeps once, to
the end of its critical section: either no event at all is due before the walk ends, or none
that can reach its ptl (walkers and retractions on their way are counted) or its CPU (time
stolen during the walk lengthens the section; a retraction first to the ptl undoes the
lookahead). Every figure of the run (summary, series, histograms, lock statistics, grace
periods, violations) must be the same with the path off, and only the count of SimPy events
may drop; the unit tests below take each of the lookahead's turns on both paths.
"""

from pathlib import Path

import pytest
from conftest import make_machine, run_outcome, run_task

from desim.config import load_config
from desim.engine import simulate
from desim.model import mm_ops

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _outcome(r):
    # the lookahead changes the event count and nothing else
    return run_outcome(r, drop=("sim.events", "sim.wall_s")), r.summary["sim.events"]


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("default", ["duration=60ms", "seed=3"]),
        ("default", ["duration=40ms", "machine.cpus=2", "workload.faults.think=2us"]),
        ("powerpc", ["duration=60ms"]),
        ("s390", ["duration=60ms", "allocator.name=s390-hh"]),
        ("race-hunt", ["duration=20ms", "allocator.name=unsafe-immediate"]),
        ("race-hunt", ["duration=20ms", "allocator.name=unsafe-shared-rcuhead"]),
        ("shmem-thp-db", ["duration=40ms"]),
        # an RCU callback taking a lock in softirq runs on the debt of the fault it interrupts
        ("race-hunt", ["duration=10ms", "machine.cpus=8", "allocator.name=unsafe-callback-mm"]),
        # s390-hh's relink takes a list lock in the softirq callback
        (
            "s390",
            [
                "duration=15ms",
                "machine.cpus=16",
                "machine.hz=1000",
                "workload.munmap.rate=20000/s",
                "workload.khugepaged.scan_sleep=1ms",
                "allocator.name=s390-hh",
            ],
        ),
        # the run stops at the first violation, with faults in their walks
        (
            "race-hunt",
            ["duration=20ms", "allocator.name=unsafe-immediate", "safety.stop_on_first=true"],
        ),
    ],
)
def test_lookahead_changes_nothing_but_the_event_count(monkeypatch, name, overrides):
    cfg = load_config(CONFIGS / f"{name}.yaml", ["warmup=0", *overrides])
    fast, n_fast = _outcome(simulate(cfg))
    monkeypatch.setattr(mm_ops, "LOOKAHEAD", False)
    slow, n_slow = _outcome(simulate(cfg))
    assert fast == slow
    assert n_fast <= n_slow


def test_lookahead_saves_events_on_a_quiet_machine():
    # 2 CPUs faulting every ~20 us: most walks end before anything else is due.
    # Steady state only (the second 20 ms): populating the first tables pays each page
    # allocation before taking the PMD lock, one more event per table.
    runs = [
        simulate(
            load_config(CONFIGS / "default.yaml", [f"duration={d}", "warmup=0", "machine.cpus=2"])
        ).summary
        for d in ("20ms", "40ms")
    ]
    faults = runs[1]["fault.count"] - runs[0]["fault.count"]
    assert faults > 1000
    # think, then (walk + work): about two events per fault instead of three
    assert runs[1]["sim.events"] - runs[0]["sim.events"] < 2.5 * faults


def test_lookahead_leaves_the_trace_unchanged(monkeypatch, tmp_path):
    from desim.trace import Tracer

    cfg = load_config(CONFIGS / "default.yaml", ["duration=5ms", "warmup=0", "machine.cpus=4"])
    traces = []
    for on in (True, False):
        monkeypatch.setattr(mm_ops, "LOOKAHEAD", on)
        t = Tracer()
        simulate(cfg, trace=t)
        out = tmp_path / f"{on}.json"
        t.write(out)
        traces.append(out.read_text())
    assert traces[0] == traces[1]


@pytest.mark.parametrize("on", [True, False])
def test_an_event_due_when_the_walk_ends_runs_first(monkeypatch, on):
    """An event already queued for the very ns the walk ends is older than the walk's own end,
    so it runs first: here it takes the ptl, and the fault must wait for it, lookahead or not."""
    monkeypatch.setattr(mm_ops, "LOOKAHEAD", on)
    m = make_machine()
    c = m.costs
    mm = m.new_mm(1)
    table = run_task(m, 0, lambda cpu, t: mm_ops.populate(m, cpu, t, mm, True))
    env, ptl = m.env, table.page.ptl
    t0 = env.now
    start, hold = 1000, 500
    done = {}

    def rival(cpu):  # cpu0 takes the ptl at exactly the walk's end, from an event queued first
        yield env.timeout(start + c.pte_walk)
        assert ptl.acquire(cpu) is None
        yield env.timeout(hold)
        ptl.release(cpu)

    def faulter(cpu):
        yield env.timeout(start)
        assert cpu.acquire("task") is None
        yield from mm_ops.handle_fault(m, cpu, "task", mm, 0.0, True)
        cpu.release()
        done["t"] = env.now - t0 - start

    env.process(rival(m.cpus[0]))
    p = env.process(faulter(m.cpus[1]))
    env.run(until=p)
    assert ptl.stats.contended == 1
    assert done["t"] == c.pte_walk + hold + c.lock_handoff + c.lock_uncontended + c.fault_work


@pytest.mark.parametrize("on", [True, False])
def test_a_walk_starting_on_a_reused_page_is_reported_on_either_path(monkeypatch, on):
    """A buggy design left a live table whose page was freed and reused as a page table: the
    fault's walk reads it and writes it, two use-after-free reports, lookahead or not."""
    monkeypatch.setattr(mm_ops, "LOOKAHEAD", on)
    m = make_machine({"allocator.name": "unsafe-immediate"})
    mm = m.new_mm(1)
    table = run_task(m, 0, lambda cpu, t: mm_ops.populate(m, cpu, t, mm, True))
    cpu0 = m.cpus[0]
    m.allocator.release_table_page(cpu0, table.page)  # freed behind the table's back ...
    assert m.allocator.new_table_page(cpu0) is table.page  # ... and reused at once
    run_task(m, 1, lambda cpu, t: mm_ops.handle_fault(m, cpu, t, mm, 0.0, True))
    what = [r["message"].split(" of ")[0] for r in m.safety.records]
    assert what == ["cpu1 pte read", "cpu1 pte write"]
    assert m.safety.counts["use_after_free"] == 2


# The local lookahead: other events run during the walk, none of which can reach the fault's
# ptl or change its CPU's time unseen. Each test makes the heap busy during the walk (so the
# global condition fails), runs with the lookahead on and off, and wants the same figures.


def _count_turns(monkeypatch) -> dict:
    """Count the lookahead's slow turns: ``undone`` (SpinLock._undo_lookahead) and ``delayed``
    (CPU._delay_lookahead), each still doing its work."""
    from desim.model.cpu import CPU
    from desim.model.lock import SpinLock

    calls = {"undone": 0, "delayed": 0}
    undo, delay = SpinLock._undo_lookahead, CPU._delay_lookahead

    def count_undo(self, f):
        calls["undone"] += 1
        undo(self, f)

    def count_delay(self, ns):
        calls["delayed"] += 1
        delay(self, ns)

    monkeypatch.setattr(SpinLock, "_undo_lookahead", count_undo)
    monkeypatch.setattr(CPU, "_delay_lookahead", count_delay)
    return calls


def _busy_fault(monkeypatch, on, during):
    """A fault on cpu1 at 1000 ns, a no-op event due during its walk, and ``during(m, table)``:
    extra processes. Returns (fault latency, ptl stats, calls of the lookahead's slow turns)."""
    calls = _count_turns(monkeypatch)
    monkeypatch.setattr(mm_ops, "LOOKAHEAD", on)
    m = make_machine()
    mm = m.new_mm(1)
    table = run_task(m, 0, lambda cpu, t: mm_ops.populate(m, cpu, t, mm, True))
    env = m.env
    t0 = env.now
    m.fence = t0 + 10**9  # as the engine sets it between checkpoints
    done = {}

    def faulter(cpu):
        yield env.timeout(1000)
        assert cpu.acquire("task") is None
        yield from mm_ops.handle_fault(m, cpu, "task", mm, 0.0, True)
        cpu.release()
        done["t"] = env.now - t0 - 1000

    env.process(faulter(m.cpus[1]))
    env.timeout(1000 + m.costs.pte_walk // 3)  # an unrelated event inside the walk
    during(m, table, t0)
    env.run(until=t0 + 100_000)
    st = table.page.ptl.stats
    return done["t"], (st.uncontended, st.contended, st.hold_total, st.free_handoffs), calls


@pytest.mark.parametrize(
    "armed,at,first",
    [(0, 50, "cpu0"), (0, 149, "cpu0"), (0, 150, "cpu0"), (1010, 150, "fault")],
)
def test_a_retraction_reaching_the_ptl_during_a_lookahead_walk(monkeypatch, armed, at, first):
    """cpu0 takes the ptl ``at`` ns into the fault's 150 ns walk, from a timer set at ``armed``.
    Before the walk's end it gets the ptl first and the fault waits, as on the slow path. At
    the very ns the walk ends the older event goes first: cpu0's timer set before the walk
    began (the fault waits), or the walk's end before a timer set during the walk (cpu0 waits).
    """

    def rival(m, table, t0):
        def body():
            yield m.env.timeout(t0 + armed - m.env.now)
            yield m.env.timeout(t0 + 1000 + at - m.env.now)
            cpu = m.cpus[0]
            ev = table.page.ptl.acquire(cpu)
            if ev is not None:
                yield ev
            yield m.env.timeout(500)
            table.page.ptl.release(cpu)

        m.env.process(body())

    on = _busy_fault(monkeypatch, True, rival)
    off = _busy_fault(monkeypatch, False, rival)
    assert on[:2] == off[:2]
    assert on[1][1] == 1  # one of the two waited for the other
    assert on[2]["undone"] == (1 if first == "cpu0" else 0)
    c = make_machine().costs
    if first == "fault":
        assert on[0] == c.pte_walk + c.lock_uncontended + c.fault_work


def test_time_stolen_during_a_lookahead_walk_lengthens_the_ptl_section(monkeypatch):
    def ipi(m, table, t0):
        def body():
            yield m.env.timeout(t0 + 1050 - m.env.now)
            m.cpus[1].steal(700)  # an IPI handler on the walking CPU

        m.env.process(body())

    on = _busy_fault(monkeypatch, True, ipi)
    off = _busy_fault(monkeypatch, False, ipi)
    assert on[:2] == off[:2]
    assert on[2]["delayed"] == 1
    c = make_machine().costs
    assert on[0] == c.pte_walk + c.lock_uncontended + c.fault_work + 700 + 0


def test_lookahead_equivalence_exercises_its_slow_turns(monkeypatch):
    """A busy 16-CPU retraction stress: whole runs equal with the lookahead on and off, and
    the lookahead's undo (a retraction first to the ptl) and delay (time stolen during the
    walk) both happened."""
    calls = _count_turns(monkeypatch)
    cfg = load_config(
        CONFIGS / "race-hunt.yaml",
        [
            "warmup=0",
            "duration=20ms",
            "allocator.name=unsafe-immediate",
            "workload.rcu_callers={kind: expedited, rate: 5000/s}",  # IPIs to every CPU
        ],
    )
    fast, n_fast = _outcome(simulate(cfg))
    monkeypatch.setattr(mm_ops, "LOOKAHEAD", False)
    slow, n_slow = _outcome(simulate(cfg))
    assert fast == slow
    assert n_fast < n_slow
    assert calls["undone"] > 0 and calls["delayed"] > 0, calls
