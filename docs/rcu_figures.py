"""Grace-period and CPU-time figures of the RCU model, as tables (issue 16's before/after).

Run from the repository root (short runs; a few minutes on a quiet machine)::

    PYTHONPATH=$PWD python docs/rcu_figures.py            # every table
    PYTHONPATH=$PWD python docs/rcu_figures.py gp s390     # some of them

Tables:

* ``gp``: GP length and ``synchronize_rcu`` latency (p50, p99) on 4, 16 and 64 CPUs at HZ 1000,
  250 and 100, for each RCU flavour the model knows: a light fault workload (every CPU faulting
  with 200 us of user-mode think time, 8 processes) plus 100 ``synchronize_rcu`` calls per
  second, 200 ms simulated.
* ``s390``: the s390 point of ``experiments/pte-free-defer.yaml`` at 64 CPUs, shortened to
  100 ms: table-alloc p99 and the ``context.lock`` figures.
* ``lazy``: pending page-table memory of ``configs/default.yaml`` (mean and peak), as it is and,
  when the model has lazy RCU, with every CPU offloaded (nocb) and lazy ``call_rcu`` on.
"""

from __future__ import annotations

import sys
from pathlib import Path

from desim.config import RcuConfig, load_config, validate
from desim.engine import simulate

ROOT = Path(__file__).resolve().parents[1]
MS = 1e6


def flavours() -> list[str | None]:
    if "flavor" in RcuConfig.model_fields:
        return ["non-preemptible", "preemptible"]
    return [None]


def gp_table() -> None:
    print("## GP length and synchronize_rcu (ms), light faults + 100 synchronize_rcu/s, 200 ms")
    print()
    print("| flavour | CPUs | HZ | GPs | GP p50 | GP p99 | sync n | sync p50 | sync p99 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for fl in flavours():
        for cpus in (4, 16, 64):
            for hz in (1000, 250, 100):
                data = {
                    "seed": 1,
                    "duration": "200ms",
                    "warmup": "20ms",
                    "machine": {"cpus": cpus, "hz": hz},
                    "workload": {
                        "processes": {
                            "initial": 8,
                            "tables": {"dist": "uniform", "low": 16, "high": 32},
                        },
                        "faults": {"think": {"dist": "exponential", "mean": "200us"}},
                        "rcu_callers": {"rate": "100/s", "kind": "synchronize"},
                    },
                    "safety": {"enabled": False},
                }
                if fl is not None:
                    data["rcu"] = {"flavor": fl}
                s = simulate(validate(data)).summary
                print(
                    f"| {fl or 'as is'} | {cpus} | {hz} | {s['rcu.gp.count']} "
                    f"| {s['rcu.gp.p50_ns'] / MS:.2f} | {s['rcu.gp.p99_ns'] / MS:.2f} "
                    f"| {s['rcu.synchronize.count']} | {s['rcu.synchronize.p50_ns'] / MS:.2f} "
                    f"| {s['rcu.synchronize.p99_ns'] / MS:.2f} |",
                    flush=True,
                )
    print()


def s390_table() -> None:
    print("## s390 (6.6), experiments/pte-free-defer.yaml point at 64 CPUs, 100 ms")
    print()
    sets = [
        "duration=100ms",
        "warmup=20ms",
        "seed=2023",
        "workload.processes.fork_rate=400/s",
        "workload.processes.lifetime={dist: exponential, mean: 50ms}",
        "machine.cpus=64",
        "allocator.name=s390",
    ]
    cfg = load_config(ROOT / "configs" / "default.yaml", sets)
    s = simulate(cfg).summary
    p = "lock.context.lock"
    print(
        "| alloc p50 ns | alloc p99 ns | lock acq | contention | wait mean ns | wait p99 (cont.) ns"
        " | hold mean ns | hold max ns | GP p50 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {s['alloc.p50_ns']:.0f} | {s['alloc.p99_ns']:.0f} | {s[p + '.acquisitions']} "
        f"| {s[p + '.contention_ratio']:.4f} | {s[p + '.wait_mean_ns']:.2f} "
        f"| {s[p + '.wait_p99_contended_ns']:.0f} | {s[p + '.hold_mean_ns']:.1f} "
        f"| {s[p + '.hold_max_ns']:.0f} | {s['rcu.gp.p50_ns'] / MS:.2f} |"
    )
    print()


def lazy_table() -> None:
    print("## Pending page-table memory, configs/default.yaml (500 ms)")
    print()
    print("| RCU | pending mean KiB | pending peak KiB | held mean KiB | GPs | cbs pending max |")
    print("|---|---|---|---|---|---|")
    variants: list[tuple[str, list[str]]] = [("as configured", [])]
    if "lazy" in RcuConfig.model_fields:
        variants.append(("lazy, all CPUs nocb", ["rcu.nocb_cpus=all", "rcu.lazy=true"]))
    for label, sets in variants:
        s = simulate(load_config(ROOT / "configs" / "default.yaml", sets)).summary
        print(
            f"| {label} | {s['mem.pending.mean_bytes'] / 1024:.0f} "
            f"| {s['mem.pending.peak_bytes'] / 1024:.0f} | {s['mem.held.mean_bytes'] / 1024:.0f} "
            f"| {s['rcu.gp.count']} | {s['rcu.callbacks_pending_max']} |",
            flush=True,
        )
    print()


TABLES = {"gp": gp_table, "s390": s390_table, "lazy": lazy_table}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(TABLES):
        TABLES[name]()
