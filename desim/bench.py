"""On-demand benchmarks (``desim bench``): desim's speed against bare SimPy, in ratios.

Run on demand, never as timed tests. Each figure is a ratio measured in one process on one
machine, so a noisy or slow host shifts both sides alike:

* lock: lock cycles per wall second of ``SpinLock`` vs ``simpy.Resource`` vs a minimal lock on
  bare SimPy events, on the same closed queue (64 tasks, one lock);
* model: simulated page faults per wall second on ``configs/default.yaml`` and on the same
  machine with 16, 32 and 64 CPUs (cost per fault should stay flat as CPUs grow);
* sched: wall time per simulated context switch on ``configs/spawn-loop.yaml``;
* overhead: wall time with statistics and the safety checker on, against both off;
* memory: peak RSS of a run of about ten million events (in a child process);
* scaling: wall seconds per simulated second (steady part), and peak RSS, of the config on 8,
  64, 256 and 1024 CPUs (each a short run in its own child process, scaled up);
* sweep: ``--jobs 2`` against ``--jobs 1`` on a sweep of equal runs of the default config.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import simpy
from simpy.events import Timeout

from desim.distributions import Exponential
from desim.model.lock import SpinLock
from desim.model.stats import LockClassStats

HOLD = 100
THINK = 500
CHUNK = 1_000_000


class _BareLock:
    """The least a FIFO lock on bare SimPy events can do: one event per acquire."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.busy = False
        self.q: deque = deque()

    def acquire(self):
        ev = self.env.event()
        if self.busy:
            self.q.append(ev)
        else:
            self.busy = True
            ev.succeed()
        return ev

    def release(self) -> None:
        if self.q:
            self.q.popleft().succeed()
        else:
            self.busy = False


class BareCpu:
    """The least a lock holder needs: somewhere to charge lock costs, a count of the locks it
    holds, no tracer, and no fault lookahead holding a lock ahead of time."""

    __slots__ = ("debt", "trace", "locks", "la_lock")

    def __init__(self) -> None:
        self.debt = 0
        self.trace = None
        self.locks = 0
        self.la_lock = None


def _closed_queue(
    kind: str, tasks: int, sim_ns: int, think: int = THINK
) -> tuple[int, float, float]:
    """Lock cycles done and wall seconds for ``tasks`` tasks looping: exponential think, hold.

    Every kind of lock sees the same think times (one seeded stream per task), so the three
    runs simulate the same queue. Returns also the fraction of acquires that had to wait.
    """
    env = simpy.Environment()
    done = [0]
    if kind == "resource":
        res = simpy.Resource(env, capacity=1)

        def worker(_, pause):
            while True:
                with res.request() as req:
                    yield req
                    yield env.timeout(HOLD)
                done[0] += 1
                yield env.timeout(pause())
    elif kind == "bare":
        bare = _BareLock(env)

        def worker(_, pause):
            while True:
                yield bare.acquire()
                yield env.timeout(HOLD)
                bare.release()
                done[0] += 1
                yield env.timeout(pause())
    else:
        stats = LockClassStats("bench")
        lock = SpinLock(env, stats, 0, 0)

        def worker(cpu, pause):
            while True:
                ev = lock.acquire(cpu)
                if ev is not None:
                    yield ev
                yield env.timeout(HOLD)
                lock.release(cpu)
                done[0] += 1
                yield env.timeout(pause())

    for i in range(tasks):
        pause = Exponential(mean_=think).ns_sampler(np.random.default_rng(i))
        env.process(worker(BareCpu(), pause))
    t0 = time.perf_counter()
    # In 1 ms spans, like the engine's checkpoints: the spinlock's statistics are binned at each.
    for t in range(CHUNK, sim_ns + 1, CHUNK):
        env.run(until=t)
        if kind == "spinlock":
            stats.wait.flush()
    wall = time.perf_counter() - t0
    waited = stats.contended / max(stats.acquisitions, 1) if kind == "spinlock" else 0.0
    return done[0], wall, waited


def bench_lock(sim_ns: int, tasks: int = 64, repeat: int = 3) -> dict:
    """Lock cycles per wall second, saturated (think 500 ns) and at about half load (12.7 us).

    Think times are exponential. Saturated, nearly every acquire waits, so each lock pays one
    event per cycle like the bare lock; at half load most acquires find the lock free and
    ``SpinLock`` creates no event for them. The fraction of the spinlock's acquires that waited
    is reported with each load.
    """
    out = {}
    kinds = ("resource", "bare", "spinlock")
    for load, think in (("saturated", THINK), ("half", 12_700)):
        best = dict.fromkeys(kinds, 0.0)
        for _ in range(repeat):
            for kind in kinds:  # interleaved, so a host slowing down hits every kind alike
                n, wall, waited = _closed_queue(
                    kind, tasks, sim_ns if load == "saturated" else sim_ns * 10, think
                )
                best[kind] = max(best[kind], n / wall)
        for kind in kinds:
            out[f"lock.{load}.{kind}.cycles_per_s"] = best[kind]
        out[f"lock.{load}.spinlock.contended_fraction"] = waited
        r = out[f"lock.{load}.resource.cycles_per_s"]
        sp = out[f"lock.{load}.spinlock.cycles_per_s"]
        out[f"lock.{load}.spinlock_vs_resource"] = sp / r
        out[f"lock.{load}.bare_vs_spinlock"] = out[f"lock.{load}.bare.cycles_per_s"] / sp
    return out


def _run_config(path: str, overrides: list[str]) -> tuple[dict, float, int]:
    from desim.config import load_config
    from desim.engine import simulate

    cfg = load_config(path, overrides)
    t0 = time.perf_counter()
    r = simulate(cfg)
    return r.summary, time.perf_counter() - t0, r.events


def _bare_fault_loop(cpus: int, sim_ns: int) -> float:
    """Iterations per wall second of the least a fault costs on bare SimPy: per CPU, a loop of
    three timeouts (think 20 us, walk 150 ns, work 700 ns), no model at all."""
    env = simpy.Environment()
    done = [0]

    def loop():
        while True:
            yield Timeout(env, 20_000)
            yield Timeout(env, 150)
            yield Timeout(env, 700)
            done[0] += 1

    for _ in range(cpus):
        env.process(loop())
    t0 = time.perf_counter()
    env.run(until=sim_ns)
    return done[0] / (time.perf_counter() - t0)


def bench_model(config: str, duration: str, cpu_counts: tuple[int, ...], repeat: int = 3) -> dict:
    """Simulated faults per wall second (best of ``repeat``) at each CPU count, and the same
    figure for a bare SimPy loop of three timeouts per fault on 8 CPUs, the floor it is
    measured against."""
    out: dict = {}
    for n in cpu_counts:
        best = None
        for _ in range(repeat):
            s, wall, events = _run_config(
                config, [f"duration={duration}", "warmup=0", f"machine.cpus={n}"]
            )
            if best is None or wall < best[1]:
                best = (s, wall, events)
        assert best is not None  # repeat >= 1
        s, wall, events = best
        out[f"model.cpus{n}.faults_per_s"] = s["fault.count"] / wall
        out[f"model.cpus{n}.events_per_s"] = events / wall
        out[f"model.cpus{n}.events_per_fault"] = events / max(s["fault.count"], 1)
        out[f"model.cpus{n}.us_per_fault"] = 1e6 * wall / max(s["fault.count"], 1)
    base = out[f"model.cpus{cpu_counts[0]}.us_per_fault"]
    out["model.cost_per_fault_growth"] = out[f"model.cpus{cpu_counts[-1]}.us_per_fault"] / base
    bare = max(_bare_fault_loop(8, 200_000_000) for _ in range(repeat))
    out["model.bare_simpy.faults_per_s"] = bare
    if "model.cpus8.faults_per_s" in out:
        out["model.cpus8.vs_bare_simpy"] = out["model.cpus8.faults_per_s"] / bare
    return out


def bench_sched(duration: str, repeat: int = 3) -> dict:
    """desim's cost per simulated context switch: the spawn-loop preset (fork, exit and wait
    on 2 CPUs, every child a switch to it and back), best of ``repeat``, in CPU time of this
    process (a busy host moves wall time most). The time covers the whole run (forks, faults,
    exits too), so it is an upper bound on the scheduler's own share."""
    from desim.config import load_config
    from desim.engine import simulate

    cfg = load_config(
        str(REPO / "configs" / "spawn-loop.yaml"), [f"duration={duration}", "warmup=0"]
    )
    best = None
    for _ in range(repeat):
        t0 = time.process_time()
        r = simulate(cfg)
        cpu = time.process_time() - t0
        if best is None or cpu < best[0]:
            best = (cpu, r.summary["sched.ctx_switches"], r.events)
    cpu, n, events = best  # type: ignore[misc]  # repeat >= 1
    n = max(n, 1)
    return {
        "sched.switches_per_cpu_s": n / cpu,
        "sched.us_per_switch": 1e6 * cpu / n,
        "sched.events_per_switch": events / n,
    }


def bench_overhead(config: str, duration: str, repeat: int = 3) -> dict:
    """Best wall time with statistics and safety on, and with both off, runs interleaved (so a
    host slowing down in between hits both alike)."""
    walls: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(repeat):
        for key, flag in (("on", "true"), ("off", "false")):
            walls[key].append(
                _run_config(
                    config,
                    [
                        f"duration={duration}",
                        "warmup=0",
                        f"record.enabled={flag}",
                        f"safety.enabled={flag}",
                    ],
                )[1]
            )
    on, off = min(walls["on"]), min(walls["off"])
    return {"overhead.wall_on_s": on, "overhead.wall_off_s": off, "overhead.ratio": on / off}


def bench_memory(config: str, events: int) -> dict:
    """Peak RSS of a child process simulating about ``events`` events.

    Read from the child's ``VmHWM`` (the high-water mark of its own address space): its
    ``ru_maxrss`` would start from the RSS of this process, inherited across fork and exec.
    """
    code = (
        "import sys\n"
        "from desim.config import load_config\nfrom desim.engine import simulate\n"
        f"cfg = load_config({config!r}, ['duration=50ms', 'warmup=0'])\n"
        "r = simulate(cfg)\n"
        f"scale = {events} / max(r.events, 1)\n"
        "cfg = load_config(" + repr(config) + ", [f'duration={int(50e6 * scale)}ns', 'warmup=0'])\n"
        "r = simulate(cfg)\n"
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')]\n"
        "print(r.events, hwm[0].split()[1])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    ev, rss_kb = res.stdout.split()
    return {"memory.events": int(ev), "memory.peak_rss_mb": int(rss_kb) / 1024}


SCALING_CPUS = (8, 64, 256, 1024)

_SCALING_CHILD = """\
import sys, time
from desim.config import load_config
from desim.engine import simulate
out = []
simulate(load_config(sys.argv[1], ['duration=1ms', 'warmup=0']))  # first-use costs: not timed
for d in (int(sys.argv[2]), 2 * int(sys.argv[2])):
    cfg = load_config(sys.argv[1], [f'duration={d}ms', 'warmup=0', 'machine.cpus=' + sys.argv[3]])
    t0, c0 = time.perf_counter(), time.process_time()
    r = simulate(cfg)
    out += [time.perf_counter() - t0, time.process_time() - c0, r.events, r.summary['fault.count']]
hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')]
print(*out, hwm[0].split()[1])
"""


def scaling_run(config: str, sim_ms: int, cpus: int) -> dict:
    """Wall seconds per simulated second of ``config`` on ``cpus`` CPUs, with the events and
    faults per simulated second, and the peak RSS, in a child process. The child's CPU seconds
    per simulated second are given too: on a host shared with other work they move less than
    wall time does.

    The figures are the difference of a run of ``sim_ms`` and one of ``2 * sim_ms`` simulated
    ms: the start (building the machine, the initial processes populating their tables) cancels
    out, so what is scaled to one simulated second is the steady part. A child of its own, so
    that the peak RSS (``VmHWM``, of the longer run) is this CPU count's alone.
    """
    res = subprocess.run(
        [sys.executable, "-c", _SCALING_CHILD, config, str(sim_ms), str(cpus)],
        capture_output=True,
        text=True,
        check=True,
    )
    w1, c1, e1, f1, w2, c2, e2, f2, rss_kb = res.stdout.split()
    per_s = 1000 / sim_ms
    return {
        "wall_s_per_sim_s": (float(w2) - float(w1)) * per_s,
        "cpu_s_per_sim_s": (float(c2) - float(c1)) * per_s,
        "events_per_sim_s": (int(e2) - int(e1)) * per_s,
        "faults_per_sim_s": (float(f2) - float(f1)) * per_s,
        "peak_rss_mb": int(rss_kb) / 1024,
    }


def bench_scaling(config: str, sim_ms: int, cpu_counts: tuple[int, ...] = SCALING_CPUS) -> dict:
    """Wall seconds per simulated second at each CPU count (``scaling_run``), and peak RSS.

    ``scaling.cpu_growth_per_cpu`` is the CPU time per simulated second and per CPU at the
    largest count over the same at the smallest: 1 means cost linear in the CPU count (every
    CPU faults in a closed loop, so the work itself is linear). CPU time rather than wall time:
    the smallest run lasts seconds, where a busy host's share moves wall time the most.
    """
    out: dict = {}
    for n in cpu_counts:
        r = scaling_run(config, sim_ms, n)
        for k, v in r.items():
            out[f"scaling.cpus{n}.{k}"] = v
    lo, hi = cpu_counts[0], cpu_counts[-1]
    out["scaling.cpu_growth_per_cpu"] = (out[f"scaling.cpus{hi}.cpu_s_per_sim_s"] / hi) / (
        out[f"scaling.cpus{lo}.cpu_s_per_sim_s"] / lo
    )
    return out


def bench_sweep(config: str, duration: str, runs: int) -> dict:
    """``--jobs 2`` against ``--jobs 1`` on a sweep of ``runs`` equal runs of ``config``: mean
    wall times of two sweeps each."""
    try:
        from desim.sweep import runner  # noqa: F401
    except ImportError:
        return {}
    import tempfile

    import yaml

    walls: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as d:
        exp = Path(d) / "equal.yaml"
        exp.write_text(
            yaml.safe_dump(
                {
                    "base": str(Path(config).resolve()),
                    "set": {"duration": duration, "warmup": 0},
                    "replications": runs,
                }
            )
        )
        # In the order 1, 2, 2, 1: a host whose speed drifts steadily hits both alike.
        for i, jobs in enumerate((1, 2, 2, 1)):
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "desim.cli",
                    "sweep",
                    str(exp),
                    "--jobs",
                    str(jobs),
                    "--out",
                    str(Path(d) / f"out{i}"),
                ],
                check=True,
                capture_output=True,
            )
            walls[jobs] = walls.get(jobs, 0.0) + (time.perf_counter() - t0) / 2
    return {
        "sweep.runs": runs,
        "sweep.jobs1_s": walls[1],
        "sweep.jobs2_s": walls[2],
        "sweep.speedup": walls[1] / walls[2],
    }


REPO = Path(__file__).resolve().parents[1]


def run_all(
    quick: bool = False, config: str = str(REPO / "configs" / "default.yaml"), progress=print
) -> dict:
    results: dict = {"host.python": sys.version.split()[0]}
    steps = [
        ("lock", lambda: bench_lock(20_000_000 if quick else 100_000_000)),
        (
            "model",
            lambda: bench_model(
                config,
                "100ms" if quick else "500ms",
                (8, 16) if quick else (8, 16, 32, 64),
                1 if quick else 3,
            ),
        ),
        ("sched", lambda: bench_sched("50ms" if quick else "300ms", 1 if quick else 3)),
        (
            "overhead",
            lambda: bench_overhead(config, "100ms" if quick else "500ms", 1 if quick else 3),
        ),
        ("memory", lambda: bench_memory(config, 1_000_000 if quick else 10_000_000)),
        ("scaling", lambda: bench_scaling(config, 10 if quick else 25)),
        ("sweep", lambda: bench_sweep(config, "100ms" if quick else "2s", 4 if quick else 8)),
    ]
    for name, fn in steps:
        progress(f"bench: {name} ...")
        results.update(fn())
    results["host.maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


TARGETS = {
    "lock.saturated.spinlock_vs_resource": (">=", 2.0),
    "lock.saturated.bare_vs_spinlock": ("<=", 1.5),
    "lock.half.spinlock_vs_resource": (">=", 2.0),
    "lock.half.bare_vs_spinlock": ("<=", 1.5),
    "model.cpus8.faults_per_s": (">=", 150_000),
    "model.cost_per_fault_growth": ("<=", 1.5),
    "overhead.ratio": ("<=", 1.25),
    "memory.peak_rss_mb": ("<=", 500),
    "scaling.cpus256.wall_s_per_sim_s": ("<=", 60),
    "scaling.cpu_growth_per_cpu": ("<=", 1.5),
    "sweep.speedup": (">=", 1.8),
}


def verdicts(results: dict) -> dict[str, bool]:
    out = {}
    for key, (op, target) in TARGETS.items():
        if key in results:
            v = results[key]
            out[key] = v >= target if op == ">=" else v <= target
    return out


def write(results: dict, path: str | Path) -> None:
    Path(path).write_text(
        json.dumps({"results": results, "targets_met": verdicts(results)}, indent=1) + "\n"
    )
