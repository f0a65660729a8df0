"""Every preset runs with every allocator through ``desim run``, and shows what it promises."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from desim.allocators import ALLOCATORS
from desim.cli import main
from desim.config import ConfigError, load_config
from desim.engine import build, simulate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = [
    "kernel-build",
    "shmem-thp-db",
    "fork-server",
    "lockstress",
    "spawn-loop",
    "server-db",
    "s390-lpar",
    "madv-collapse",
    "replay-example",
]
# shortened: the structure of each preset is kept, its run is cut to a few ms and its
# populations shrunk so 4 presets x every design stay within a few seconds
SHORT = ["duration=8ms", "warmup=1ms"]
SHRINK = {
    "kernel-build": ["machine.cpus=8", "workload.build.slots=8", "workload.build.jobs=8"],
    "spawn-loop": [],
    "shmem-thp-db": ["workload.processes.tables=16", "machine.cpus=8"],
    "fork-server": [],
    "lockstress": [],
    # the scaled presets at a few processes of a few tables (their structure kept: backends
    # on their own CPUs, KVM guests, per-process rates)
    "server-db": [
        "machine.cpus=8",
        "workload.processes.scale=0.02",
        "workload.processes.tables=16",
    ],
    "s390-lpar": [
        "machine.cpus=8",
        "workload.processes.scale=0.02",
        "workload.processes.tables=16",
        "workload.processes.guest_tables=32",
    ],
    "madv-collapse": [
        "machine.cpus=8",
        "workload.processes.initial=8",
        "workload.processes.persistent=8",
        "workload.processes.tables=16",
    ],
    "replay-example": ["workload.replay.timing=closed"],
}


@pytest.mark.parametrize("allocator", ALLOCATORS.names())
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_with_every_allocator(preset, allocator, tmp_path):
    path = CONFIGS / f"{preset}.yaml"
    sets = [*SHORT, *SHRINK[preset], f"allocator.name={allocator}"]
    try:
        build(load_config(path, sets))
    except (ConfigError, ValueError) as exc:
        # a design for another page size (powerpc 64 KiB, sparc64 8 KiB) runs at its own size
        need = re.search(r"needs (\d+KiB) pages", str(exc))
        if need is None:
            pytest.skip(f"{allocator} refuses {preset}: {exc}")
        sets.append(f"machine.page_size={need.group(1)}")
        build(load_config(path, sets))
    args = ["run", str(path), "--quiet", "--out", str(tmp_path / "r")]
    for s in sets:
        args += ["--set", s]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r" / "DONE").exists()


def test_presets_are_commented_and_listed():
    r = CliRunner().invoke(main, ["list"])
    assert r.exit_code == 0
    for p in PRESETS:
        first = (CONFIGS / f"{p}.yaml").read_text().splitlines()[0]
        assert first.startswith(f"# {p}: ")
        assert p in r.output
    for element in ("lockstress", "gup_fast", "madv_collapse", "memory_pressure", "phases"):
        assert element in r.output


def _run(preset, sets):
    return simulate(load_config(CONFIGS / f"{preset}.yaml", sets)).summary


def test_kernel_build_is_a_closed_loop_whose_exits_wait():
    # 16 jobs of 5 processes on 8 CPUs: every process is forked, exits and is reaped
    sets = ["machine.cpus=8", "workload.build.slots=8", "workload.build.jobs=16"]
    s = _run("kernel-build", sets)
    assert s["build.jobs_done"] == 16
    assert s["count.mm.created"] == s["count.mm.exited"] == s["count.mm.freed"] == 80
    assert s["sched.ctx_switches"] > 0 and s["safety.violations"] == 0
    slow = _run("kernel-build", [*sets, "mm_lifetime=synchronize_rcu_exit_mmap"])
    assert slow["build.makespan_ns"] > s["build.makespan_ns"]
    assert slow["rcu.synchronize.count"] == 80


def test_spawn_loop_pays_a_grace_period_per_iteration():
    s = _run("spawn-loop", ["duration=60ms", "warmup=10ms"])
    slow = _run(
        "spawn-loop", ["duration=60ms", "warmup=10ms", "mm_lifetime=synchronize_rcu_exit_mmap"]
    )
    assert s["spawn.per_s"] > 5000  # ~150 us per fork+exit+wait per CPU
    assert slow["spawn.per_s"] < s["spawn.per_s"] / 20  # a GP is milliseconds at HZ=250


def test_shmem_thp_db_defers_many_tables():
    s = _run("shmem-thp-db", ["duration=60ms", "warmup=10ms", "workload.processes.tables=64"])
    # 8 ranges per 10 ms wake-up x up to 32 mappers: thousands of deferrals per second
    assert s["count.tables.deferred"] >= 500
    assert s["count.khugepaged.collapses"] >= 30
    assert s["rcu.callbacks_invoked"] > 0 and s["mem.pending.peak_bytes"] > 0
    assert s["count.gup_fast.walks"] > 0
    assert s["safety.violations"] == 0


def test_fork_server_forks_a_worker_per_request():
    s = _run("fork-server", ["duration=150ms", "warmup=0ms", "workload.faults.rate=1000/s"])
    assert 200 <= s["count.mm.created"] - 8 <= 420  # 2000/s x 0.15 s, Poisson
    assert s["count.mm.exited"] > 150 and s["mm.alive_end"] >= 8


def test_lockstress_preset_saturates_its_lock():
    s = _run("lockstress", ["duration=20ms", "warmup=2ms"])
    assert s["lock.lockstress.contention_ratio"] > 0.9
    assert s.get("count.tables.allocated", 0) == 0


def test_server_db_backends_live_on_their_own_cpus_and_map_what_they_promise():
    sets = ["duration=30ms", "warmup=0ms", "machine.cpus=16", "workload.processes.scale=0.03125"]
    cfg = load_config(CONFIGS / "server-db.yaml", sets)
    m = build(cfg)
    m.env.run(until=1_000_000)
    assert len(m.mms) == 16  # 512 x 1/32: one backend per CPU
    from desim.workloads.base import shared

    assert sorted(c.id for c in shared(m).homes.values()) == list(range(16))
    tables = sum(len(mm.tables) for mm in m.mms)
    assert 16 * 1024 <= tables <= 16 * 3072
    s = simulate(cfg).summary
    assert s["mem.live.peak_bytes"] >= tables * 4096
    assert s["count.munmap.count"] > 0 and s["count.gup_fast.walks"] > 0
    assert s["safety.violations"] == 0


def test_s390_lpar_guests_take_full_pages_and_are_never_collapsed():
    sets = [
        "duration=60ms",
        "warmup=0ms",
        "machine.cpus=8",
        "workload.processes.scale=0.05",
        "workload.processes.guest_tables=64",
        "workload.madv_collapse={rate: 2000/s}",
    ]
    cfg = load_config(CONFIGS / "s390-lpar.yaml", sets)
    m = build(cfg)
    m.env.run(until=1_000_000)
    guests = [mm for mm in m.mms if mm.pgste]
    assert len(guests) == 2 and all(len(mm.tables) == 64 for mm in guests)
    s = simulate(cfg).summary
    assert s["count.s390.pgste_pages"] >= 128  # a page per guest table
    assert s.get("count.s390.pgste_defer", 0) == 0  # no guest table ever retracted
    assert s["count.collapse.madvise"] > 0 and s["safety.violations"] == 0


def test_madv_collapse_frees_every_table_it_retracts_with_pte_free_defer():
    sets = ["duration=50ms", "warmup=0ms", "workload.processes.tables=64"]
    s = _run("madv-collapse", sets)
    # 64 processes x 20/s x 50 ms, each call retracting one table
    assert abs(s["count.tables.deferred"] - 64) <= 5 * 8
    assert s["count.tables.deferred"] == s["count.collapse.madvise"]
    assert s.get("count.tables.gathered", 0) == 0 and s["safety.violations"] == 0
