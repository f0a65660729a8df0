"""``desim probe``: measure the Linux host desim runs on, unprivileged, as figures desim can model.

What is measured, and how (each scenario as a distribution, repeated to show its spread):

* **the machine**: online CPUs, page size, kernel release and build string, and from the kernel
  config (``/proc/config.gz`` or ``/boot/config-$(uname -r)``) HZ, the preemption model, the RCU
  flavour (``CONFIG_PREEMPT_RCU``), lazy RCU, callback offloading and NO_HZ; the live RCU module
  parameters under ``/sys/module/rcutree/parameters`` (FQS delays, ``blimit``, lazy on/off) and
  the boot command line's ``rcu*``/``nohz*``/``preempt=`` options;
* **synchronize_rcu()**: ``membarrier(MEMBARRIER_CMD_GLOBAL)`` is implemented with it
  (kernel/sched/membarrier.c, ``membarrier_global_expedited`` is the *expedited* command; the
  plain ``MEMBARRIER_CMD_GLOBAL`` calls ``synchronize_rcu()``), timed with ``ctypes`` around the
  system call alone: Python adds about a microsecond to a figure of milliseconds. Idle, and with
  every CPU busy in user mode (one spinning helper process per CPU, started and stopped here);
* **first-touch anonymous page faults**: an anonymous mapping touched one byte per page by
  numpy (the loop runs in C), in batches; a batch's time minus the same loop over pages already
  present, divided by the batch size, is one sample of the fault cost (allocation and zeroing
  included). Per-fault figures are batch means, not single faults: the distribution is narrower
  than that of single faults;
* **fork + exit + waitpid**: the parent forks, the child ``_exit``\\ s at once, the parent waits;
  and the same with the child calling ``membarrier(MEMBARRIER_CMD_GLOBAL)`` first: a grace period
  on the exit path, on a real kernel. The child is a fork of this Python process (tens of MB
  mapped), so the figures include copying and tearing down its page tables.

Nothing here needs root; what cannot be read is reported with the reason.

Then desim models the same machine (``profile``: CPUs, HZ, RCU flavour and FQS delays read from
the host; fault, fork and exit costs fitted to the measurements), runs the same scenarios
(``scenarios``) and sets each figure beside the measured one (``compare``): a fitted figure is
marked so, a predicted one agrees within ``TOLERANCE`` or differs, with what the model leaves
out that can account for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import mmap
import os
import platform
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SYS_MEMBARRIER = {"x86_64": 324, "aarch64": 283, "ppc64le": 365, "ppc64": 365, "s390x": 356}
MEMBARRIER_CMD_QUERY = 0
MEMBARRIER_CMD_GLOBAL = 1

CONFIG_KEYS = (
    "CONFIG_HZ",
    "CONFIG_PREEMPT_RCU",
    "CONFIG_PREEMPT_NONE",
    "CONFIG_PREEMPT_VOLUNTARY",
    "CONFIG_PREEMPT",
    "CONFIG_PREEMPT_DYNAMIC",
    "CONFIG_PREEMPT_COUNT",
    "CONFIG_RCU_LAZY",
    "CONFIG_RCU_NOCB_CPU",
    "CONFIG_NO_HZ_IDLE",
    "CONFIG_NO_HZ_FULL",
    "CONFIG_NR_CPUS",
    "CONFIG_TREE_RCU",
)
RCU_PARAMS = (
    "jiffies_till_first_fqs",
    "jiffies_till_next_fqs",
    "jiffies_till_sched_qs",
    "jiffies_to_sched_qs",
    "blimit",
    "qhimark",
    "rcu_divisor",
    "enable_rcu_lazy",
    "use_softirq",
    "rcu_normal_wake_from_gp",
)


@dataclass
class Dist:
    """A figure as a distribution: every sample (ns), and the medians of each repeat."""

    samples: list[float]
    repeat_medians: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        s = sorted(self.samples)
        n = len(s)
        if not n:
            return {"n": 0}

        def q(p: float) -> float:
            return s[min(n - 1, int(p * n))]

        out = {
            "n": n,
            "mean": statistics.fmean(s),
            "p50": q(0.5),
            "p90": q(0.9),
            "p99": q(0.99),
            "min": s[0],
            "max": s[-1],
        }
        if len(self.repeat_medians) > 1:
            out["repeat_p50_min"] = min(self.repeat_medians)
            out["repeat_p50_max"] = max(self.repeat_medians)
        return out


# -- the machine --------------------------------------------------------------------------------------


def kernel_config() -> tuple[dict[str, str], str | None]:
    """The kernel's build config (``CONFIG_*`` values desim needs) and where it came from."""
    release = platform.release()
    for path in (Path("/proc/config.gz"), Path(f"/boot/config-{release}")):
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except OSError:
            continue
        cfg = {}
        for line in raw.decode(errors="replace").splitlines():
            key, sep, val = line.partition("=")
            if sep and key in CONFIG_KEYS:
                cfg[key] = val.strip('"')
        return cfg, str(path)
    return {}, None


def machine_facts() -> dict:
    cfg, cfg_src = kernel_config()
    facts: dict = {
        "cpus": len(os.sched_getaffinity(0)),
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "release": platform.release(),
        "version": platform.version(),
        "machine": platform.machine(),
        "config_source": cfg_src,
        "config": cfg,
        "missing": [],
    }
    if cfg_src is None:
        facts["missing"].append(
            "kernel config: neither /proc/config.gz nor /boot/config-"
            f"{platform.release()} is readable; HZ and the RCU flavour are "
            "guessed from the build string"
        )
    params = {}
    for name in RCU_PARAMS:
        with contextlib.suppress(OSError):
            params[name] = Path(f"/sys/module/rcutree/parameters/{name}").read_text().strip()
    facts["rcu_params"] = params
    if not params:
        facts["missing"].append("rcutree parameters: /sys/module/rcutree/parameters unreadable")
    try:
        cmdline = Path("/proc/cmdline").read_text().split()
    except OSError:
        cmdline = []
    facts["cmdline"] = [w for w in cmdline if w.startswith(("rcu", "nohz", "preempt=", "isolcpus"))]
    facts["hz"] = int(cfg["CONFIG_HZ"]) if "CONFIG_HZ" in cfg else None
    facts["rcu_flavour"] = (
        "preemptible"
        if cfg.get("CONFIG_PREEMPT_RCU") == "y"
        else "non-preemptible"
        if cfg
        else "preemptible"
        if "PREEMPT" in platform.version()
        else "unknown"
    )
    facts["preempt"] = next(
        (w.split("=", 1)[1] for w in facts["cmdline"] if w.startswith("preempt=")), None
    ) or (
        "dynamic"
        if cfg.get("CONFIG_PREEMPT_DYNAMIC") == "y"
        else "full"
        if cfg.get("CONFIG_PREEMPT") == "y"
        else "voluntary"
        if cfg.get("CONFIG_PREEMPT_VOLUNTARY") == "y"
        else "none"
        if cfg.get("CONFIG_PREEMPT_NONE") == "y"
        else None
    )
    facts["rcu_lazy"] = cfg.get("CONFIG_RCU_LAZY") == "y" and params.get(
        "enable_rcu_lazy", "Y"
    ) in ("Y", "1")
    return facts


# -- system calls -----------------------------------------------------------------------------------

_LIBC = ctypes.CDLL(None, use_errno=True)


def membarrier_available() -> str | None:
    """Why ``membarrier(MEMBARRIER_CMD_GLOBAL)`` cannot be used here, or None."""
    nr = SYS_MEMBARRIER.get(platform.machine())
    if nr is None or platform.system() != "Linux":
        return (
            f"membarrier: no system call number known for {platform.system()} {platform.machine()}"
        )
    mask = _LIBC.syscall(nr, MEMBARRIER_CMD_QUERY, 0, 0)
    if mask < 0:
        return f"membarrier: {os.strerror(ctypes.get_errno())}"
    if not mask & MEMBARRIER_CMD_GLOBAL:
        return "membarrier: MEMBARRIER_CMD_GLOBAL not supported (nohz_full CPUs?)"
    return None


def _sync_rcu() -> None:
    _LIBC.syscall(SYS_MEMBARRIER[platform.machine()], MEMBARRIER_CMD_GLOBAL, 0, 0)


def time_calls(fn: Callable[[], None], n: int) -> list[float]:
    out: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t = clock()
        fn()
        out.append(clock() - t)
    return out


def repeated(measure: Callable[[], list[float]], repeats: int) -> Dist:
    d = Dist([])
    for _ in range(repeats):
        s = measure()
        d.samples.extend(s)
        d.repeat_medians.append(statistics.median(s))
    return d


@contextlib.contextmanager
def busy_cpus(n: int):
    """``n`` helper processes spinning in user mode, stopped (and reaped) on leaving."""
    pids = []
    try:
        for _ in range(n):
            pid = os.fork()
            if pid == 0:  # the child spins in user mode until killed
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                x = 0
                while True:
                    x += 1
            pids.append(pid)
        time.sleep(0.05)
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def fault_batches(pages: int, batch: int) -> list[float]:
    """Per-fault cost (ns) of first-touch anonymous faults, one sample per batch of pages."""
    import numpy as np

    ps = os.sysconf("SC_PAGE_SIZE")
    out = []
    clock = time.perf_counter_ns
    for _ in range(max(1, pages // batch)):
        with mmap.mmap(-1, batch * ps, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as mm:
            a = np.frombuffer(mm, dtype=np.uint8)
            t0 = clock()
            a[::ps] = 1  # one first-touch fault per page
            t1 = clock()
            a[::ps] = 2  # the same loop with the pages present
            t2 = clock()
            out.append(max(0.0, ((t1 - t0) - (t2 - t1)) / batch))
            del a
    return out


def spawn_loop(n: int, child: Callable[[], None] | None = None) -> list[float]:
    """fork + exit + waitpid, ``n`` times; ``child`` runs in the child before it exits."""
    out: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t = clock()
        pid = os.fork()
        if pid == 0:
            if child is not None:
                child()
            os._exit(0)
        os.waitpid(pid, 0)
        out.append(clock() - t)
    return out


@dataclass
class Sizes:
    sync_calls: int = 100
    fault_pages: int = 16384
    fault_batch: int = 64
    spawns: int = 300
    repeats: int = 3


QUICK = Sizes(sync_calls=15, fault_pages=2048, fault_batch=64, spawns=40, repeats=2)


def measure(
    sizes: Sizes, progress: Callable[[str], None] = lambda s: None
) -> tuple[dict[str, Dist], list[str]]:
    """Every scenario's distribution (ns), and what could not be measured, with why."""
    out: dict[str, Dist] = {}
    missing: list[str] = []
    ncpu = len(os.sched_getaffinity(0))
    why = membarrier_available()
    if why is None:
        progress("synchronize_rcu, idle")
        out["sync_rcu_idle"] = repeated(
            lambda: time_calls(_sync_rcu, sizes.sync_calls), sizes.repeats
        )
        progress(f"synchronize_rcu, {ncpu} CPUs busy in user mode")
        with busy_cpus(ncpu):
            out["sync_rcu_busy"] = repeated(
                lambda: time_calls(_sync_rcu, sizes.sync_calls), sizes.repeats
            )
    else:
        missing.append(f"sync_rcu_idle, sync_rcu_busy, spawn_sync: {why}")
    progress("first-touch anonymous faults")
    out["fault"] = repeated(
        lambda: fault_batches(sizes.fault_pages, sizes.fault_batch), sizes.repeats
    )
    progress("fork + exit + waitpid")
    out["spawn"] = repeated(lambda: spawn_loop(sizes.spawns), sizes.repeats)
    if why is None:
        progress("fork + synchronize_rcu + exit + waitpid")
        out["spawn_sync"] = repeated(
            lambda: spawn_loop(max(5, sizes.spawns // 10), _sync_rcu), sizes.repeats
        )
    return out, missing


# -- desim's model of the same machine ------------------------------------------------------------------

TOLERANCE = 0.25  # |simulated p50 / measured p50 - 1| within this: "agrees"
ARCH_OF = {"x86_64": "x86-64", "aarch64": "arm64", "ppc64le": "powerpc-radix", "s390x": "s390"}


def page_tables_of_this_process() -> int:
    """PTE tables this process holds (``VmPTE`` / page size): what each forked child copies."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmPTE:"):
                return max(1, int(line.split()[1]) * 1024 // os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        pass
    return 8


def profile(facts: dict, measured: dict) -> dict:
    """A desim machine profile of the host: what was read, and costs fitted to what was measured.

    Read: CPUs, HZ, the RCU flavour, the live FQS delay, laziness (lazy RCU needs offloaded CPUs:
    ``rcu_nocbs=`` on the command line). Fitted (and so not evidence of anything when compared
    back): ``costs.fault_work`` from the fault p50; ``costs.fork``/``costs.exit`` from the plain
    spawn loop (``fit_spawn``).
    """
    cfg = facts.get("config", {})
    params = facts.get("rcu_params", {})
    rcu: dict = {
        "flavor": "preemptible" if facts.get("rcu_flavour") == "preemptible" else "non-preemptible"
    }
    fqs = params.get("jiffies_till_first_fqs", "")
    if fqs.isdigit() and 0 < int(fqs) <= (facts.get("hz") or 1000):
        rcu["fqs_jiffies"] = int(fqs)
    nxt = params.get("jiffies_till_next_fqs", "")
    if nxt.isdigit() and 0 < int(nxt) <= (facts.get("hz") or 1000):
        rcu["next_fqs_jiffies"] = int(nxt)
    if facts.get("rcu_lazy") and any(w.startswith("rcu_nocbs") for w in facts.get("cmdline", [])):
        rcu.update(lazy=True, nocb_cpus="all")
    hz = facts.get("hz") or 1000
    costs: dict = {}
    if "fault" in measured:
        costs["fault_work"] = f"{max(50, round(measured['fault']['p50'] - 175))}ns"
    return {
        "seed": 1,
        "machine": {
            "cpus": facts["cpus"],
            "hz": hz if hz in (100, 250, 300, 1000) else 1000,
            "arch": ARCH_OF.get(facts.get("machine", ""), "x86-64"),
            "page_size": facts.get("page_size", 4096),
        },
        "rcu": rcu,
        "costs": costs,
        "_read": {
            "kernel": facts.get("release"),
            "config": bool(cfg),
            "tables_per_child": page_tables_of_this_process(),
        },
    }


def _scenario(prof: dict, duration: str, workload: dict, **extra) -> dict:
    cfg = {k: v for k, v in prof.items() if not k.startswith("_")}
    return {**cfg, "duration": duration, "warmup": "20ms", "workload": workload, **extra}


def scenarios(prof: dict, quick: bool) -> dict[str, dict]:
    """The probe's scenarios as desim configs of ``prof``'s machine."""
    long, short = ("600ms", "300ms") if quick else ("3s", "1s")
    busy = {"faults": {"think": "10s", "gaps": "user"}, "processes": {"initial": 1}}
    spawn = {
        "spawn": {
            "mode": "per_task",
            "tasks": 1,
            "work": 0,
            "tables": prof["_read"]["tables_per_child"],
        }
    }
    return {
        "sync_rcu_idle": _scenario(prof, long, {"rcu_callers": {"loop": True}}),
        "sync_rcu_busy": _scenario(prof, long, {"rcu_callers": {"loop": True}, **busy}),
        "fault": _scenario(
            prof, short, {"processes": {"initial": 4}, "faults": {"cpus": 1, "think": "20us"}}
        ),
        "spawn": _scenario(prof, short, spawn, mm_lifetime="none"),
        "spawn_sync": _scenario(prof, long, spawn, mm_lifetime="synchronize_rcu_exit_mmap"),
    }


METRIC = {
    "sync_rcu_idle": "rcu.synchronize",
    "sync_rcu_busy": "rcu.synchronize",
    "fault": "fault",
    "spawn": "spawn.latency",
    "spawn_sync": "spawn.latency",
}
FITTED = {
    "fault": "costs.fault_work fitted to this figure",
    "spawn": "costs.fork and costs.exit fitted to this figure",
}


def _run(cfg: dict) -> dict:
    from desim.config import validate
    from desim.engine import simulate

    return simulate(validate(cfg)).summary


def fit_spawn(prof: dict, measured_p50: float, tables: int) -> None:
    """Fit fork (2/3) and exit (1/3) costs so the plain spawn loop's p50 matches: one trial
    run with a first guess, then both scaled by what is left to explain (the loop's other
    costs, page tables and context switches, are the model's own)."""

    def trial(fork: int, exit_: int) -> float:
        p = {**prof, "costs": {**prof["costs"], "fork": f"{fork}ns", "exit": f"{exit_}ns"}}
        cfg = _scenario(
            p,
            "200ms",
            {"spawn": {"mode": "per_task", "tasks": 1, "work": 0, "tables": tables}},
            mm_lifetime="none",
        )
        return _run(cfg)["spawn.latency.p50_ns"]

    fork, exit_ = round(measured_p50 * 2 / 3), round(measured_p50 / 3)
    got = trial(fork, exit_)
    other = max(0.0, got - fork - exit_)
    scale = max(0.05, (measured_p50 - other) / (fork + exit_))
    prof["costs"].update(
        fork=f"{max(1, round(fork * scale))}ns", exit=f"{max(1, round(exit_ * scale))}ns"
    )


def simulate_probe(
    prof: dict, measured: dict, quick: bool, progress: Callable[[str], None] = lambda s: None
) -> dict[str, dict]:
    """desim's figures for each measured scenario: {name: {p50, p90, p99, mean, n}}."""
    if "spawn" in measured:
        progress("fitting fork and exit costs to the plain spawn loop")
        fit_spawn(prof, measured["spawn"]["p50"], prof["_read"]["tables_per_child"])
    out = {}
    for name, cfg in scenarios(prof, quick).items():
        if name not in measured:
            continue
        progress(f"simulating {name}")
        s = _run(cfg)
        key = METRIC[name]
        out[name] = {
            "n": s.get(f"{key}.count", 0),
            "p50": s.get(f"{key}.p50_ns"),
            "p99": s.get(f"{key}.p99_ns"),
            "mean": s.get(f"{key}.mean_ns"),
        }
    return out


def explain(name: str, facts: dict, ratio: float) -> str:
    """What the model leaves out that can move this scenario, as far as the probe can tell."""
    params = facts.get("rcu_params", {})
    notes = []
    if name.startswith(("sync", "spawn_sync")) and params.get("rcu_normal_wake_from_gp") == "1":
        notes.append(
            "likely: the host wakes synchronize_rcu() callers from the GP kthread at "
            "the GP's end (rcu_normal_wake_from_gp=1, Linux 6.9+); desim models v6.6, "
            "where the wake-up is a callback its CPU notices at a tick and invokes "
            "after the GP, about two jiffies more (as root, writing 0 to "
            "/sys/module/rcutree/parameters/rcu_normal_wake_from_gp makes the host "
            "wake callers that way too)"
        )
    if name == "sync_rcu_idle" and ratio < 1:
        notes.append(
            "an idle host's CPUs also wake for timers and housekeeping desim does not model"
        )
    if name in ("spawn", "spawn_sync"):
        notes.append(
            "the child is a fork of the probe's Python process; desim's child has the "
            "same number of PTE tables but no other fork/exit work than the fitted cost"
        )
    return "; ".join(notes)


def compare(facts: dict, measured: dict, simulated: dict) -> list[dict]:
    rows = []
    for name, m in measured.items():
        s = simulated.get(name)
        if s is None or not s.get("p50"):
            rows.append(
                {
                    "scenario": name,
                    "measured_p50": m["p50"],
                    "simulated_p50": None,
                    "ratio": None,
                    "verdict": "not simulated",
                    "why": "",
                }
            )
            continue
        ratio = s["p50"] / m["p50"]
        if name in FITTED:
            verdict, why = "fitted", FITTED[name]
        elif abs(ratio - 1) <= TOLERANCE:
            verdict, why = "agrees", ""
        else:
            verdict, why = "differs", explain(name, facts, ratio)
        rows.append(
            {
                "scenario": name,
                "measured_p50": m["p50"],
                "simulated_p50": s["p50"],
                "measured_p99": m["p99"],
                "simulated_p99": s["p99"],
                "ratio": ratio,
                "verdict": verdict,
                "why": why,
            }
        )
    return rows
