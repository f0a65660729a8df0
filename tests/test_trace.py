"""Timeline traces: Chrome/Perfetto JSON structure, exact slices on small scenarios, the window."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from click.testing import CliRunner
from conftest import make_config, make_machine

from desim.cli import main
from desim.engine import simulate
from desim.model.hooks import USER_TASK
from desim.trace import Tracer, parse_window

WORKLOAD = {
    "processes": {"initial": 8, "fork_rate": "300/s", "lifetime": "8ms"},
    "faults": {},
    "munmap": {},
    "khugepaged": {"scan_sleep": "2ms"},
}


@pytest.fixture(scope="module")
def traced():
    # an x86-64 guest: mmu_gather frees generic's tables by RCU batch (tlb_remove_table_rcu),
    # where bare metal frees them after the flush with no grace period
    cfg = make_config(
        {"duration": "30ms", "machine.cpus": 4, "machine.arch": "x86-64-guest"}, workload=WORKLOAD
    )
    tracer = Tracer(parse_window("10ms:20ms"))
    result = simulate(cfg, trace=tracer)
    doc = json.loads(json.dumps(tracer.to_dict()))  # what a viewer would load
    return cfg, result, doc


def _tracks(doc):
    names = {}
    for e in doc["traceEvents"]:
        if e["ph"] == "M" and e["name"] == "process_name":
            names[e["pid"]] = e["args"]["name"]
    return names


def test_one_named_track_group_per_cpu_plus_rcu(traced):
    cfg, _, doc = traced
    names = _tracks(doc)
    assert sorted(names.values()) == ["CPU 0", "CPU 1", "CPU 2", "CPU 3", "RCU"]
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in doc["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    for pid, name in names.items():
        if name.startswith("CPU"):
            assert threads[(pid, 1)] == "tasks" and threads[(pid, 2)] == "softirq"
    # every CPU faults, so every CPU track has task slices and read-side sections
    for pid, name in names.items():
        if name.startswith("CPU"):
            kinds = {
                e["name"]
                for e in doc["traceEvents"]
                if e["pid"] == pid and e["ph"] == "X" and e["tid"] == 1
            }
            assert "fault" in kinds and "rcu_read_lock" in kinds, (name, kinds)


def test_window_respected_and_durations_non_negative(traced):
    _, _, doc = traced
    timed = [e for e in doc["traceEvents"] if e["ph"] != "M"]
    assert timed
    for e in timed:
        assert 10_000 <= e["ts"] <= 20_000, e
        if e["ph"] == "X":
            assert e["dur"] >= 0 and e["ts"] + e["dur"] <= 20_000 + 1e-6, e
    assert doc["otherData"]["window_ns"] == [10_000_000, 20_000_000]
    assert not doc["otherData"]["truncated"]


def test_slices_on_a_track_nest_properly(traced):
    """Perfetto needs slices of one track to nest: no two may partially overlap."""
    _, _, doc = traced
    by_track = defaultdict(list)
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            by_track[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"], e["name"]))
    assert len(by_track) >= 5
    eps = 1e-6
    for track, slices in by_track.items():
        stack: list[tuple] = []
        for a, b, name in sorted(slices, key=lambda s: (s[0], -(s[1] - s[0]))):
            while stack and stack[-1][1] <= a + eps:
                stack.pop()
            if stack:
                assert b <= stack[-1][1] + eps, (track, stack[-1], (a, b, name))
            stack.append((a, b, name))


def test_flows_pair_up(traced):
    _, _, doc = traced
    starts = {e["id"]: e for e in doc["traceEvents"] if e["ph"] == "s"}
    ends = {e["id"]: e for e in doc["traceEvents"] if e["ph"] == "f"}
    assert starts and set(starts) == set(ends)
    for i, s in starts.items():
        assert s["ts"] <= ends[i]["ts"] and s["name"] == ends[i]["name"]
    # a callback's arrow runs from its call_rcu to the softirq of the same CPU
    cb = [i for i, s in starts.items() if s["name"] == "call_rcu"]
    assert cb
    for i in cb:
        assert ends[i]["pid"] == starts[i]["pid"] and ends[i]["tid"] == 2


def test_grace_periods_are_exactly_the_runs_gp_spans(traced):
    _, result, doc = traced
    gps = sorted(
        (round(e["ts"] * 1000), round((e["ts"] + e["dur"]) * 1000))
        for e in doc["traceEvents"]
        if e["ph"] == "X" and e["name"].startswith("GP ")
    )
    want = sorted(
        (max(a, 10_000_000), min(b, 20_000_000))
        for a, b in result.gp_spans
        if b >= 10_000_000 and a < 20_000_000
    )
    assert gps == want and len(gps) >= 2


def test_tracing_does_not_change_the_run():
    cfg = make_config({"duration": "20ms", "machine.cpus": 4}, workload=WORKLOAD)
    plain = simulate(cfg).summary
    traced = simulate(cfg, trace=Tracer()).summary
    assert plain == traced


def test_lock_handoff_exact():
    """cpu0 holds a lock 1000 ns from t=0; cpu1 asks at t=200: a spin slice and one arrow."""
    m = make_machine({"costs.lock_uncontended": 25, "costs.lock_handoff": 100})
    tracer = Tracer()
    tracer.attach(m)
    lock = m.lock("demo")
    env = m.env

    def worker(cpu, start, hold):
        yield env.timeout(start)
        cpu.acquire(USER_TASK())
        ev = lock.acquire(cpu)
        if ev is not None:
            yield ev
        yield cpu.compute(hold)
        lock.release(cpu)
        cpu.release()

    env.process(worker(m.cpus[0], 0, 1000))
    env.process(worker(m.cpus[1], 200, 10))
    env.run(until=100_000)
    doc = tracer.to_dict()
    spins = [e for e in doc["traceEvents"] if e["ph"] == "X" and e["name"] == "spin demo"]
    # cpu0 releases at 1025 (1000 held + 25 uncontended cost); cpu1 gets the lock one
    # cache-line transfer and one lock cost later, at 1150: it spun 950 ns from t=200. Its
    # task slice also starts at 200, so the spin is drawn from 201 to stay inside it.
    assert spins == [
        {
            "ph": "X",
            "pid": 2,
            "tid": 1,
            "name": "spin demo",
            "cat": "lock",
            "ts": 0.201,
            "dur": 0.949,
            "args": {"waited_ns": 950, "from": "cpu0"},
        }
    ]
    s = [e for e in doc["traceEvents"] if e["ph"] == "s"]
    f = [e for e in doc["traceEvents"] if e["ph"] == "f"]
    assert [(e["pid"], e["ts"]) for e in s] == [(1, 1.025)]
    assert [(e["pid"], e["ts"]) for e in f] == [(2, 1.15)]
    tasks = sorted(
        (e["pid"], e["ts"], e["dur"])
        for e in doc["traceEvents"]
        if e["ph"] == "X" and e["cat"] == "task"
    )
    assert tasks == [(1, 0.0, 1.025), (2, 0.2, 0.96)]


def test_event_cap_truncates():
    cfg = make_config({"duration": "10ms", "machine.cpus": 2}, workload=WORKLOAD)
    tracer = Tracer(max_events=200)
    simulate(cfg, trace=tracer)
    doc = tracer.to_dict()
    assert doc["otherData"]["truncated"] is True
    assert len([e for e in doc["traceEvents"] if e["ph"] != "M"]) <= 200


@pytest.mark.parametrize(
    "text,want",
    [
        (None, (0, None)),
        ("5ms:7ms", (5_000_000, 7_000_000)),
        (":2ms", (0, 2_000_000)),
        ("1ms:", (1_000_000, None)),
    ],
)
def test_parse_window(text, want):
    assert parse_window(text) == want


@pytest.mark.parametrize("bad", ["5ms", "7ms:5ms", "x:y"])
def test_cli_bad_window_is_one_line(tmp_path, bad):
    cfgfile = tmp_path / "c.yaml"
    cfgfile.write_text("duration: 5ms\nmachine: {cpus: 2}\nworkload: {}\n")
    r = CliRunner().invoke(
        main,
        [
            "run",
            str(cfgfile),
            "--quiet",
            "--out",
            str(tmp_path / "o"),
            "--trace",
            str(tmp_path / "t.json"),
            "--trace-window",
            bad,
        ],
    )
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("desim: error: --trace-window")


def test_cli_writes_trace(tmp_path):
    cfgfile = tmp_path / "c.yaml"
    cfgfile.write_text(
        "duration: 6ms\nmachine: {cpus: 2}\nworkload:\n  faults: {}\n  processes: {initial: 4}\n"
    )
    out = tmp_path / "t.json"
    r = CliRunner().invoke(
        main,
        [
            "run",
            str(cfgfile),
            "--quiet",
            "--out",
            str(tmp_path / "o"),
            "--trace",
            str(out),
            "--trace-window",
            "1ms:3ms",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["displayTimeUnit"] == "ns"
    assert any(e["ph"] == "X" and e["name"] == "fault" for e in doc["traceEvents"])


def test_read_side_sections_sit_strictly_inside_their_task_slice(traced):
    """Viewers nest equal slices arbitrarily: every rcu_read_lock must be strictly inside."""
    _, _, doc = traced
    body = [e for e in doc["traceEvents"] if e["ph"] == "X" and e["tid"] == 1]
    tasks = defaultdict(list)
    for i, e in enumerate(body):
        if e["cat"] == "task":
            tasks[e["pid"]].append((round(e["ts"] * 1000), round((e["ts"] + e["dur"]) * 1000), i))
    readers = [(i, e) for i, e in enumerate(body) if e["name"] == "rcu_read_lock"]
    assert len(readers) > 100
    coincide = 0
    for i, e in readers:
        a, b = round(e["ts"] * 1000), round((e["ts"] + e["dur"]) * 1000)
        parents = [t for t in tasks[e["pid"]] if t[0] <= a and b <= t[1]]
        assert len(parents) == 1, e
        pa, pb, pi = parents[0]
        assert pi < i  # the parent comes first in the file
        assert (pa, pb) != (a, b), e  # and is never the same span
        coincide += pa + 1 == a
    assert coincide > 0  # the case that needed moving does occur in this scenario


def test_slice_names_are_kernel_terms_not_python_names(traced):
    _, _, doc = traced
    names = {e["name"] for e in doc["traceEvents"] if e["ph"] in "Xi"}
    names |= {
        e["args"]["task"]
        for e in doc["traceEvents"]
        if e["ph"] == "X" and "task" in e.get("args", {})
    }
    import re

    # leading underscores, dotted qualnames, CamelCase classes (RCU_SOFTIRQ is the kernel's)
    python_like = {
        n
        for n in names
        if n.startswith("_") or "._" in n or "<locals>" in n or re.search(r"[a-z][A-Z]", n)
    }
    assert not python_like, python_like
    assert {"fault", "rcu_read_lock", "pte_free_now", "tlb_remove_table_rcu"} <= names
    assert "user task" in names


def test_tasks_and_callbacks_carry_the_names_given_where_they_are_made():
    from desim.model.hooks import USER_TASK, callback_name, task_name, thread_kind, traced_as

    kworker = thread_kind("kworker")
    assert task_name(kworker()) == "kworker" and task_name(USER_TASK()) == "user task"
    assert kworker() is not kworker()  # tasks are told apart by identity
    assert task_name(object()) == "task"  # an unnamed owner (tests) still traces

    @traced_as("pte_free_now")
    def _free(cpu, arg):
        pass

    class Design:
        @traced_as("pte_free_half")
        def _half(self, cpu, arg):
            pass

    from desim.model.machine import _rcu_head_cb

    assert callback_name(_free, None) == "pte_free_now"
    assert callback_name(Design()._half, None) == "pte_free_half"  # bound methods too
    assert callback_name(_rcu_head_cb, ("page", Design()._half, None)) == "pte_free_half"


def test_every_element_names_its_tasks_in_kernel_terms():
    """Every element at once: the task names are the ones given where tasks are made."""
    cfg = make_config(
        {"duration": "12ms", "machine.cpus": 4, "mm_lifetime": "mmdrop_async"},
        workload={
            "rcu_callers": {},
            "gup_fast": {},
            "lockstress": {},
            "kernel_work": {},
            "faults": {},
            "processes": {"initial": 4, "lifetime": "3ms", "fork_rate": "1000/s"},
            "madv_collapse": {"rate": "2000/s"},
            "munmap": {},
            "khugepaged": {"scan_sleep": "2ms"},
        },
    )
    tracer = Tracer()
    simulate(cfg, trace=tracer)
    doc = tracer.to_dict()
    tasks = {e["args"]["task"] for e in doc["traceEvents"] if e.get("cat") == "task"}
    assert tasks == {
        "user task",
        "process",
        "khugepaged",
        "lockstress",
        "syscall (non-preemptible)",
        "synchronize_rcu caller",
        "kworker (mmdrop_async)",
    }
    names = {e["name"] for e in doc["traceEvents"] if e["ph"] == "X" and e.get("cat") == "task"}
    assert {"get_user_pages_fast", "munmap", "fault", "retract_page_tables"} <= names


def test_the_timeline_pairs_and_nests_on_its_own():
    """No model: a fault whose read-side section starts and ends with its task's slice, a
    call_rcu and its callback in the softirq, a grace period clipped by the window."""
    from desim.trace.timeline import RCU_TRACK, SOFTIRQ, TASKS, Flow, Slice, Timeline, Track

    tl = Timeline((50, 2000))
    tl.task_seen("t", "user task")
    tl.task_runs(0, "t", 100)
    tl.op(0, "fault")
    tl.read_lock(0, 100)
    tl.call_rcu(0, tl.lane(0, "t"), 150)
    tl.read_unlock(0, 400)
    tl.task_switch(0, None, 400)
    tl.softirq_begin(0, "softirq0", 500)
    assert tl.lane(0, "softirq0") == SOFTIRQ and tl.lane(0, "t") == TASKS
    tl.callback(0, "pte_free_now", 150, 500, 40)
    tl.softirq_end(0, 540)
    tl.gp(1, 0, 450)
    tl.task_seen("k", "khugepaged")
    tl.task_runs(1, "k", 1500)
    tl.finish(2500)
    t0, s0 = Track(0, TASKS), Track(0, SOFTIRQ)
    assert tl.records == [
        Slice(t0, "rcu_read_lock", 101, 399, "rcu", None),  # 1 ns inside its task's slice
        Slice(t0, "fault", 100, 400, "task", {"task": "user task", "ops": {"fault": 1}}),
        # inside its softirq run, which it fills: 1 ns in at each end, its arrow's head too
        Slice(s0, "pte_free_now", 501, 539, "rcu", {"queued_ns_ago": 350}),
        Flow(1, "call_rcu", "rcu", t0, 150, s0, 501),
        Slice(s0, "RCU_SOFTIRQ", 500, 540, "rcu", {"callbacks": 1}),
        Slice(RCU_TRACK, "GP 1", 50, 450, "rcu", {"length_ns": 450}),  # clipped at 50
        Slice(Track(1, TASKS), "khugepaged", 1500, 2000, "task", {"task": "khugepaged"}),
    ]
    assert tl.events == 8 and not tl.truncated  # the flow is two events


def test_the_timeline_stops_at_its_cap():
    from desim.trace.timeline import RCU_TRACK, Timeline

    tl = Timeline(max_events=3)
    for t in range(5):
        tl.instant(RCU_TRACK, "fqs", t, "rcu")
    assert tl.events == 3 and tl.truncated and len(tl.records) == 3


def test_the_chrome_encoder_on_its_own():
    from desim.trace import chrome
    from desim.trace.timeline import RCU_TRACK, SOFTIRQ, TASKS, Count, Flow, Slice, Track

    doc = chrome.encode(
        [
            Slice(Track(1, TASKS), "fault", 1000, 2500, "task", {"task": "user task"}),
            Flow(1, "call_rcu", "rcu", Track(1, TASKS), 1200, Track(1, SOFTIRQ), 3000),
            Count(RCU_TRACK, "callbacks pending", 1000, {"callbacks": 2}),
        ],
        cpus=2,
        other={"generator": "desim"},
    )
    meta = [e for e in doc["traceEvents"] if e["ph"] == "M"]
    assert {(e["pid"], e["args"].get("name")) for e in meta if e["name"] == "process_name"} == {
        (1, "CPU 0"),
        (2, "CPU 1"),
        (3, "RCU"),
    }
    assert [e for e in doc["traceEvents"] if e["ph"] != "M"] == [
        {
            "ph": "X",
            "pid": 2,
            "tid": 1,
            "name": "fault",
            "cat": "task",
            "ts": 1.0,
            "dur": 1.5,
            "args": {"task": "user task"},
        },
        {
            "ph": "C",
            "pid": 3,
            "tid": 1,
            "name": "callbacks pending",
            "ts": 1.0,
            "args": {"callbacks": 2},
        },
        {"ph": "s", "id": 1, "pid": 2, "tid": 1, "name": "call_rcu", "cat": "rcu", "ts": 1.2},
        {
            "ph": "f",
            "bp": "e",
            "id": 1,
            "pid": 2,
            "tid": 2,
            "name": "call_rcu",
            "cat": "rcu",
            "ts": 3.0,
        },
    ]
    assert doc["otherData"] == {"generator": "desim", "events": 4}


def test_the_tracer_implements_the_models_hooks():
    import inspect

    from desim.model.hooks import TraceHooks

    for name, hook in inspect.getmembers(TraceHooks, inspect.isfunction):
        if not name.startswith("_"):
            assert inspect.signature(getattr(Tracer, name)) == inspect.signature(hook), name
