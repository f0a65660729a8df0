"""Real workloads: trace files (desim.hosttrace), their import from tracer text, and the
``replay`` element that drives the model from them.

The two traces in tests/data/replay were recorded on a 2-CPU Linux 6.18 VM with ``desim
record`` (tests/data/replay/README.md says how): a ``make -j2`` of the C program in cbuild/ and
a pytest run of pysuite/. Tolerance of the replay against its trace: exact. Every count the
trace holds is replayed event for event, and the tables a replay allocates follow the same
per-mm first-fault rule the trace's estimate used, so on ``generic`` (no memory limit, no
allocation failures, no collapses by other elements) nothing can differ.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from desim.allocators import ALLOCATORS
from desim.cli import main
from desim.config import ConfigError, validate
from desim.engine import build, simulate
from desim.hosttrace import events as hev
from desim.hosttrace import format as hfmt

DATA = Path(__file__).resolve().parent / "data" / "replay"
TRACES = ["make-j2", "pytest"]
MiB2 = 1 << 21


def _config(trace: str, timing: str, duration: str, **extra) -> dict:
    cfg = {
        "seed": 1,
        "duration": duration,
        "machine": {"cpus": 2, "hz": 250, "page_size": "4KiB"},
        "allocator": {"name": "generic"},
        "workload": {"replay": {"file": str(DATA / f"{trace}.parquet"), "timing": timing}},
    }
    for k, v in extra.items():
        cfg[k] = v
    return cfg


# -- the recorded traces, replayed


@pytest.mark.parametrize("timing", ["recorded", "closed"])
@pytest.mark.parametrize("trace", TRACES)
def test_replay_on_generic_reproduces_the_traces_counts(trace, timing):
    tr = hfmt.read(DATA / f"{trace}.parquet")
    c = tr.counts()
    assert len(tr) < 50_000 and (DATA / f"{trace}.parquet").stat().st_size < 1 << 20
    dur = c["duration_ns"] + 100_000_000 if timing == "recorded" else 300_000_000
    s = simulate(validate(_config(trace, timing, f"{dur}ns"))).summary
    assert s["replay.complete"] == 1 and s["replay.events"] == c["events"]
    assert s["fault.count"] == s.get("count.replay.faults", 0) == c["faults"]
    assert s.get("count.replay.forks", 0) == c["forks"]
    assert s.get("count.replay.clones", 0) == c["clones"]
    assert s.get("count.replay.execs", 0) == c["execs"]
    assert s.get("count.replay.exits", 0) == c["exits"]
    assert s["count.mm.exited"] == s.get("count.replay.mm_exits", 0) == c["mm_exits"]
    assert s["count.tables.allocated"] == c["tables"]
    assert s.get("count.munmap.count", 0) == c["munmaps"]
    # every table comes back: freed by munmap or at exit, through mmu_gather
    assert s["count.tables.gathered"] == c["tables"]
    assert s["mm.alive_end"] == 0 and s["safety.violations"] == 0
    if timing == "recorded":  # the last event at its recorded time, or a little after
        assert c["duration_ns"] <= s["replay.end_ns"] < c["duration_ns"] + 50_000_000
    else:  # user time left out: far shorter than the recording
        assert s["replay.end_ns"] < c["duration_ns"] / 4


def _design_config(name: str, trace: str) -> dict:
    cfg = _config(trace, "closed", "300ms", allocator={"name": name})
    try:
        build(validate(cfg))
    except (ConfigError, ValueError) as exc:
        need = re.search(r"needs (\d+KiB) pages", str(exc))
        assert need is not None, exc
        cfg["machine"]["page_size"] = need.group(1)
    return cfg


@pytest.mark.parametrize("trace", TRACES)
@pytest.mark.parametrize("name", ALLOCATORS.names())
def test_every_design_runs_the_traces(name, trace):
    r = simulate(validate(_design_config(name, trace)))
    s = r.summary
    c = hfmt.read(DATA / f"{trace}.parquet").counts()
    assert s["replay.complete"] == 1
    assert s["fault.count"] == c["faults"]
    assert s["count.mm.exited"] == c["mm_exits"]
    if not name.startswith("unsafe-"):  # the controls' bugs may or may not fire here
        known = ALLOCATORS.get(name).known_violations
        assert s["safety.violations"] == sum(s.get(f"safety.{k}", 0) for k in known)


def test_closed_timing_keeps_wait4_and_vfork_order():
    """A parent's event recorded after its child's exit waits for that exit, so the closed
    replay of a build never has more mms alive than the recording had."""
    s = simulate(validate(_config("make-j2", "closed", "300ms"))).summary
    tr = hfmt.read(DATA / "make-j2.parquet")
    ev = tr.columns["event"]
    alive = np.cumsum((ev == "exec").astype(int) - (ev == "mm_exit").astype(int))
    assert s["mm.alive_peak"] <= alive.max()


def test_cpu_map_places_traced_cpus():
    cfg = _config("pytest", "closed", "200ms")
    cfg["machine"]["cpus"] = 4
    cfg["workload"]["replay"]["cpu_map"] = [3]
    s = simulate(validate(cfg)).summary
    assert s["replay.complete"] == 1
    # everything ran on CPU 3: the others stayed idle
    assert 0 < s["cpu.busy_fraction"] <= 0.25


# -- what the rows estimate: exact, on a small hand-made trace


def _line(ts_us: int, pid: int, cpu: int, event: str, args: str, comm: str = "t") -> str:
    return f"  {comm}-{pid}  [{cpu:03d}] .....  100.{ts_us:06d}: {event}: {args}"


def _hand_made_lines() -> list[str]:
    base = 0x7F0000000000
    return [
        _line(1, 10, 0, "page_fault_user", f"address={base:#x} ip=0x1 error_code=0x6"),
        _line(2, 10, 0, "page_fault_user", f"address={base + 4096:#x} ip=0x1 error_code=0x6"),
        _line(3, 10, 0, "page_fault_user", f"address={base + MiB2:#x} ip=0x1 error_code=0x6"),
        _line(4, 10, 0, "page_fault_user", f"address={base + 5 * MiB2:#x} ip=0x1 error_code=0x6"),
        # fork: a copy of the three tables; a thread shares the mm
        _line(5, 10, 0, "task_newtask", "pid=11 comm=t clone_flags=1200011 oom_score_adj=0"),
        _line(6, 10, 0, "sched_process_fork", "comm=t pid=10 child_comm=t child_pid=11"),
        _line(7, 10, 0, "task_newtask", "pid=12 comm=t clone_flags=3d0f00 oom_score_adj=0"),
        _line(8, 10, 0, "sched_process_fork", "comm=t pid=10 child_comm=t child_pid=12"),
        # the child's fault in a copied range allocates nothing
        _line(9, 11, 1, "page_fault_user", f"address={base + 8:#x} ip=0x1 error_code=0x7"),
        # munmap of [base + 1 MiB, base + 12 MiB): ranges 1 to 5 wholly inside, so the tables
        # of 1 and 5 go; range 0 is only partly covered and keeps its table
        _line(10, 12, 1, "sys_enter_munmap", f"addr: {base + MiB2 // 2:#x}, len: {11 * MiB2 // 2:#x}"),
        # a collapse frees its range's table; later faults there allocate nothing
        _line(11, 12, 1, "mm_khugepaged_collapse_file",
              f"mm=0x1, hpage_pfn=0x1, index=0, addr={base:x}, is_shmem=1, filename=x, nr=512, "
              "result=succeeded"),
        _line(12, 10, 0, "page_fault_user", f"address={base + 64:#x} ip=0x1 error_code=0x6"),
        _line(13, 12, 1, "sched_process_exit", "comm=t pid=12 prio=120 group_dead=false"),
        _line(14, 11, 1, "sched_process_exec", "filename=/bin/x pid=11 old_pid=11"),
        _line(15, 11, 1, "sched_process_exit", "comm=x pid=11 prio=120 group_dead=true"),
        _line(16, 10, 0, "sched_process_exit", "comm=t pid=10 prio=120 group_dead=true"),
        "CPU:1 [LOST 3 EVENTS]",
    ]  # fmt: skip


def test_rows_estimate_tables_per_mm():
    cols, meta, notes = hev.from_text(_hand_made_lines())
    got = [
        (e, t, mm, ch, tb)
        for e, t, mm, ch, tb in zip(
            cols["event"], cols["task"], cols["mm"], cols["child"], cols["tables"], strict=True
        )
    ]
    assert got == [
        ("start", 0, 0, -1, 0),
        ("fault", 0, 0, -1, 1),
        ("fault", 0, 0, -1, 0),
        ("fault", 0, 0, -1, 1),
        ("fault", 0, 0, -1, 1),
        ("fork", 0, 1, 1, 3),  # a new mm with a copy of the 3 tables
        ("fork", 0, 0, 2, 0),  # CLONE_VM: the same mm
        ("fault", 1, 1, -1, 0),
        ("munmap", 2, 0, -1, 2),
        ("collapse", 2, 0, -1, 1),
        ("fault", 0, 0, -1, 0),  # PMD-mapped now
        ("exit", 2, 0, -1, 0),  # mm 0 still has task 0
        ("mm_exit", 1, 1, -1, 3),  # exec: the forked copy's last user left it
        ("exec", 1, 2, -1, 0),
        ("exit", 1, 2, -1, 0),
        ("mm_exit", 1, 2, -1, 0),
        ("exit", 0, 0, -1, 0),
        ("mm_exit", 0, 0, -1, 0),  # 3 tables, 2 unmapped, 1 collapsed
    ]
    assert cols["time_ns"][:3] == [0, 0, 1000] and meta["lost_events"] == 3
    assert any("3 events were lost" in n for n in notes)


def test_the_hand_made_trace_replays_its_fork_copy_munmap_and_collapse(tmp_path):
    cols, meta, _ = hev.from_text(_hand_made_lines())
    hfmt.write(tmp_path / "h.parquet", cols, meta)
    c = hfmt.read(tmp_path / "h.parquet").counts()
    assert (c["tables"], c["tables_forked"], c["tables_unmapped"], c["collapses"]) == (6, 3, 2, 1)
    cfg = _config("pytest", "recorded", "1ms")
    cfg["workload"]["replay"]["file"] = str(tmp_path / "h.parquet")
    s = simulate(validate(cfg)).summary
    assert s["replay.complete"] == 1
    assert s["count.tables.allocated"] == 6  # 3 first faults, 3 copied by the fork
    assert s["count.replay.forks"] == s["count.replay.clones"] == s["count.replay.starts"] == 1
    assert s["count.collapse.madvise"] == s["count.tables.deferred"] == 1  # pte_free_defer
    assert s["count.munmap.count"] == 1
    # 2 by munmap, 3 at the copy's exit (at exec), none left in mm 0 at its exit
    assert s["count.tables.gathered"] == 5 and s["count.mm.exited"] == 3
    assert s["fault.count"] == 6 and s["safety.violations"] == 0


def _builder_invariant_lines(ops) -> list[str]:
    lines = [_line(0, 1, 0, "sched_process_exec", "filename=/x pid=1 old_pid=1")]
    for k, (op, a, b) in enumerate(ops, start=1):
        addr = 0x400000000000 + a * (MiB2 // 4)
        if op == "fault":
            lines.append(_line(k, 1, 0, "page_fault_user", f"address={addr:#x} ip=0 error_code=6"))
        else:
            lines.append(_line(k, 1, 0, "sys_enter_munmap", f"addr: {addr:#x}, len: {b * 4096:#x}"))
    lines.append(
        _line(len(ops) + 1, 1, 0, "sched_process_exit", "comm=x pid=1 prio=1 group_dead=1")
    )
    return lines


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["fault", "munmap"]), st.integers(0, 40), st.integers(1, 2048)),
        max_size=60,
    )
)
def test_tables_held_at_exit_are_those_allocated_less_those_unmapped(ops):
    cols, _, _ = hev.from_text(_builder_invariant_lines(ops))
    ev = np.asarray(cols["event"])
    tb = np.asarray(cols["tables"])
    assert list(ev[-2:]) == ["exit", "mm_exit"]
    held = tb[ev == "fault"].sum() - tb[ev == "munmap"].sum()
    assert tb[-1] == held >= 0
    # a table is never counted twice: at most one per 2 MiB range alive at once
    assert held <= len({(0x400000000000 + a * (MiB2 // 4)) >> 21 for _, a, _ in ops})


# -- import of tracer text


@pytest.mark.parametrize(
    "fixture, source, faults",
    [("trace-cmd-report.txt", "trace-cmd report", 157), ("perf-script.txt", "perf script", 159)],
)
def test_import_of_tracer_text(fixture, source, faults, tmp_path):
    out = tmp_path / "t.parquet"
    r = CliRunner().invoke(main, ["record", "--import", str(DATA / fixture), "--out", str(out)])
    assert r.exit_code == 0, r.output
    tr = hfmt.read(out)
    assert tr.meta["source"] == source
    c = tr.counts()
    # sh -c 'ls / > /dev/null; true': sh vforks ls, which execs and exits; then sh exits
    assert (c["execs"], c["clones"], c["forks"], c["exits"], c["mm_exits"]) == (2, 1, 0, 2, 2)
    assert c["faults"] == faults and c["munmaps"] == 2 and c["tasks"] == 2
    ev = list(tr.columns["event"])
    assert ev[0] == "exec" and ev[-2:] == ["exit", "mm_exit"]
    fork = ev.index("fork")
    assert tr.columns["flags"][fork] & hfmt.CLONE_VM


def test_record_refuses_to_overwrite_and_bad_input_is_one_line(tmp_path):
    out = tmp_path / "t.parquet"
    out.write_text("mine")
    fixture = str(DATA / "perf-script.txt")
    cases = [
        (["record", "--import", fixture, "--out", str(out)], "exists; give --force"),
        (["record", "--import", str(tmp_path / "none.txt"), "--out", str(tmp_path / "n")],
         "cannot read"),
        (["record", "--out", str(tmp_path / "x")], "nothing to record"),
        (["record", "--import", fixture, "--out", str(tmp_path / "x"), "--", "true"], "not both"),
        (["record", "--import", str(DATA / "cbuild" / "main.c"), "--out", str(tmp_path / "y")],
         "no process events"),
    ]  # fmt: skip
    for args, fragment in cases:
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2, (args, r.output)
        assert fragment in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert out.read_text() == "mine"
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    r = CliRunner().invoke(main, ["record", "--import", fixture, "--out", str(out), "--force"])
    assert r.exit_code == 0 and hfmt.read(out).counts()["faults"] == 159


# -- the file and the config


def _parquet(path: Path, cols: dict, meta: dict | None) -> None:
    t = pa.table(cols)
    if meta is not None:
        t = t.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    pq.write_table(t, path)


def _good_cols() -> dict:
    return {
        "time_ns": [0],
        "event": ["exec"],
        "task": [0],
        "pid": [1],
        "cpu": [0],
        "mm": [0],
        "child": [-1],
        "addr": [0],
        "length": [0],
        "tables": [0],
        "flags": [0],
    }


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: None, "no trace file"),
        (lambda p: p.write_text("cpus=2\n"), "not a parquet file (desim record --import"),
        (lambda p: _parquet(p, _good_cols(), None), "not a desim trace (no desim.trace"),
        (
            lambda p: _parquet(p, {"time_ns": [0]}, {"desim.trace": "1"}),
            "missing columns event, task",
        ),
        (lambda p: _parquet(p, _good_cols(), {"desim.trace": "9"}), "trace format 9"),
    ],
)
def test_a_bad_trace_file_is_refused_in_one_line(make, fragment, tmp_path):
    trace = tmp_path / "t.parquet"
    make(trace)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("duration: 1ms\nworkload:\n  replay: {file: t.parquet}\n")
    r = CliRunner().invoke(main, ["validate", str(cfg)])
    assert r.exit_code == 2
    line = r.output.strip()
    assert "\n" not in line and "workload.replay.file:" in line and fragment in line, line


def test_rows_are_checked_when_read(tmp_path):
    bad = _good_cols() | {"event": ["teleport"]}
    _parquet(tmp_path / "e.parquet", bad, {"desim.trace": "1"})
    with pytest.raises(hfmt.TraceFileError, match="unknown events teleport"):
        hfmt.read(tmp_path / "e.parquet")
    order = {k: v * 2 for k, v in _good_cols().items()} | {"time_ns": [5, 1]}
    _parquet(tmp_path / "o.parquet", order, {"desim.trace": "1"})
    with pytest.raises(hfmt.TraceFileError, match="not in time order"):
        hfmt.read(tmp_path / "o.parquet")


def test_a_relative_trace_is_found_next_to_the_config_and_saved_absolute(tmp_path):
    import shutil

    shutil.copy(DATA / "pytest.parquet", tmp_path / "w.parquet")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("duration: 1ms\nworkload:\n  replay: {file: w.parquet}\n")
    from desim.config import load_config

    c = load_config(cfg)
    assert c.workload["replay"].file == str((tmp_path / "w.parquet").resolve())
    r = CliRunner().invoke(main, ["validate", str(cfg), "--set", "workload.replay.cpu_map=[9]"])
    assert r.exit_code == 2 and "workload.replay.cpu_map: CPU 9" in r.output


def test_a_sweep_runs_digest_covers_the_trace_it_replays(tmp_path):
    """A replayed trace is one of the run's input files: change its contents and the run's
    digest changes, so a resumed sweep redoes the run instead of keeping a stale result."""
    import shutil

    from desim.sweep.experiment import load_experiment

    shutil.copy(DATA / "make-j2.parquet", tmp_path / "t.parquet")
    base = tmp_path / "base.yaml"
    base.write_text("duration: 20ms\nworkload: {replay: {file: t.parquet, timing: closed}}\n")
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: e\nbase: base.yaml\nsweep: {list: [{machine.cpus: 2}]}\n")
    before = load_experiment(exp).runs()[0]
    assert any(p.endswith("t.parquet") for p in before.inputs)
    shutil.copy(DATA / "pytest.parquet", tmp_path / "t.parquet")
    after = load_experiment(exp).runs()[0]
    assert before.digest != after.digest


def _fork_rows(cols):
    return np.flatnonzero(cols["event"] == "fork")


def _bad_cpu(cols):
    cols["cpu"][5] = -3


def _forked_twice(cols):
    a, b = _fork_rows(cols)[:2]
    cols["child"][b] = cols["child"][a]


def _forks_the_root(cols):
    root = cols["task"][0]
    i = next(i for i in _fork_rows(cols) if cols["task"][i] != root)
    cols["child"][i] = root


def _negative_time(cols):
    cols["time_ns"] = cols["time_ns"] - cols["time_ns"][0] - 1


@pytest.mark.parametrize(
    "spoil, said",
    [
        (_bad_cpu, "row 5: cpu -3 is negative"),
        (_forked_twice, "forks again"),
        (_forks_the_root, "is forked after its first row"),
        (_negative_time, "time_ns -1 is negative"),
    ],
)
def test_rows_a_replay_cannot_follow_are_one_line_at_validate(tmp_path, spoil, said):
    trace = hfmt.read(DATA / "make-j2.parquet")
    cols = {k: v.copy() for k, v in trace.columns.items()}
    spoil(cols)
    hfmt.write(tmp_path / "t.parquet", cols, dict(trace.meta))
    (tmp_path / "c.yaml").write_text("workload: {replay: {file: t.parquet}}\n")
    r = CliRunner().invoke(main, ["validate", str(tmp_path / "c.yaml")])
    assert r.exit_code == 2
    assert "workload.replay.file" in r.output and said in r.output
    assert "Traceback" not in r.output


def test_a_sweep_run_replays_the_trace_its_digest_covers(tmp_path):
    """The run reads the copy of the trace planned with it, not the disk: a trace replaced
    after planning does not leak into a run whose digest names the old one."""
    import shutil

    from desim.sweep.experiment import load_experiment
    from desim.sweep.worker import compute_run

    shutil.copy(DATA / "make-j2.parquet", tmp_path / "t.parquet")
    (tmp_path / "base.yaml").write_text(
        "duration: 2s\nworkload: {replay: {file: t.parquet, timing: closed}}\n"
    )
    (tmp_path / "exp.yaml").write_text(
        "name: e\nbase: base.yaml\nsweep: {list: [{machine.cpus: 2}]}\n"
    )
    spec = load_experiment(tmp_path / "exp.yaml").runs()[0]
    shutil.copy(DATA / "pytest.parquet", tmp_path / "t.parquet")
    out = compute_run(spec)
    assert out.error is None, out.error
    assert out.result.summary["count.replay.faults"] == 17_666  # make -j2's, not pytest's
