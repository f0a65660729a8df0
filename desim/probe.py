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

CONFIG_KEYS = ("CONFIG_HZ", "CONFIG_PREEMPT_RCU", "CONFIG_PREEMPT_NONE", "CONFIG_PREEMPT_VOLUNTARY",
               "CONFIG_PREEMPT", "CONFIG_PREEMPT_DYNAMIC", "CONFIG_PREEMPT_COUNT", "CONFIG_RCU_LAZY",
               "CONFIG_RCU_NOCB_CPU", "CONFIG_NO_HZ_IDLE", "CONFIG_NO_HZ_FULL", "CONFIG_NR_CPUS",
               "CONFIG_TREE_RCU")
RCU_PARAMS = ("jiffies_till_first_fqs", "jiffies_till_next_fqs", "jiffies_till_sched_qs",
              "jiffies_to_sched_qs", "blimit", "qhimark", "rcu_divisor", "enable_rcu_lazy",
              "use_softirq", "rcu_normal_wake_from_gp")


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

        out = {"n": n, "mean": statistics.fmean(s), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99),
               "min": s[0], "max": s[-1]}
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
        facts["missing"].append("kernel config: neither /proc/config.gz nor /boot/config-"
                                f"{platform.release()} is readable; HZ and the RCU flavour are "
                                "guessed from the build string")
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
    facts["cmdline"] = [w for w in cmdline
                        if w.startswith(("rcu", "nohz", "preempt=", "isolcpus"))]
    facts["hz"] = int(cfg["CONFIG_HZ"]) if "CONFIG_HZ" in cfg else None
    facts["rcu_flavour"] = ("preemptible" if cfg.get("CONFIG_PREEMPT_RCU") == "y"
                            else "non-preemptible" if cfg else
                            "preemptible" if "PREEMPT" in platform.version() else "unknown")
    facts["preempt"] = next((w.split("=", 1)[1] for w in facts["cmdline"]
                             if w.startswith("preempt=")), None) or (
        "dynamic" if cfg.get("CONFIG_PREEMPT_DYNAMIC") == "y" else
        "full" if cfg.get("CONFIG_PREEMPT") == "y" else
        "voluntary" if cfg.get("CONFIG_PREEMPT_VOLUNTARY") == "y" else
        "none" if cfg.get("CONFIG_PREEMPT_NONE") == "y" else None)
    facts["rcu_lazy"] = (cfg.get("CONFIG_RCU_LAZY") == "y"
                         and params.get("enable_rcu_lazy", "Y") in ("Y", "1"))
    return facts


# -- system calls -----------------------------------------------------------------------------------

_LIBC = ctypes.CDLL(None, use_errno=True)


def membarrier_available() -> str | None:
    """Why ``membarrier(MEMBARRIER_CMD_GLOBAL)`` cannot be used here, or None."""
    nr = SYS_MEMBARRIER.get(platform.machine())
    if nr is None or platform.system() != "Linux":
        return f"membarrier: no system call number known for {platform.system()} {platform.machine()}"
    mask = _LIBC.syscall(nr, MEMBARRIER_CMD_QUERY, 0, 0)
    if mask < 0:
        return f"membarrier: {os.strerror(ctypes.get_errno())}"
    if not mask & MEMBARRIER_CMD_GLOBAL:
        return "membarrier: MEMBARRIER_CMD_GLOBAL not supported (nohz_full CPUs?)"
    return None


def _sync_rcu() -> None:
    _LIBC.syscall(SYS_MEMBARRIER[platform.machine()], MEMBARRIER_CMD_GLOBAL, 0, 0)


def time_calls(fn: Callable[[], None], n: int) -> list[float]:
    out = []
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
            a[::ps] = 1          # one first-touch fault per page
            t1 = clock()
            a[::ps] = 2          # the same loop with the pages present
            t2 = clock()
            out.append(max(0.0, ((t1 - t0) - (t2 - t1)) / batch))
            del a
    return out


def spawn_loop(n: int, child: Callable[[], None] | None = None) -> list[float]:
    """fork + exit + waitpid, ``n`` times; ``child`` runs in the child before it exits."""
    out = []
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


def measure(sizes: Sizes, progress: Callable[[str], None] = lambda s: None
            ) -> tuple[dict[str, Dist], list[str]]:
    """Every scenario's distribution (ns), and what could not be measured, with why."""
    out: dict[str, Dist] = {}
    missing: list[str] = []
    ncpu = len(os.sched_getaffinity(0))
    why = membarrier_available()
    if why is None:
        progress("synchronize_rcu, idle")
        out["sync_rcu_idle"] = repeated(lambda: time_calls(_sync_rcu, sizes.sync_calls),
                                        sizes.repeats)
        progress(f"synchronize_rcu, {ncpu} CPUs busy in user mode")
        with busy_cpus(ncpu):
            out["sync_rcu_busy"] = repeated(lambda: time_calls(_sync_rcu, sizes.sync_calls),
                                            sizes.repeats)
    else:
        missing.append(f"sync_rcu_idle, sync_rcu_busy, spawn_sync: {why}")
    progress("first-touch anonymous faults")
    out["fault"] = repeated(lambda: fault_batches(sizes.fault_pages, sizes.fault_batch),
                            sizes.repeats)
    progress("fork + exit + waitpid")
    out["spawn"] = repeated(lambda: spawn_loop(sizes.spawns), sizes.repeats)
    if why is None:
        progress("fork + synchronize_rcu + exit + waitpid")
        out["spawn_sync"] = repeated(lambda: spawn_loop(max(5, sizes.spawns // 10), _sync_rcu),
                                     sizes.repeats)
    return out, missing
