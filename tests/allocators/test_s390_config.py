"""configs/s390.yaml, shortened, under each s390 design: it runs clean and its books balance."""

from pathlib import Path

import pytest

from desim.config import load_config
from desim.engine import simulate

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "s390.yaml"
# KVM guests are 10% of the mms in the config; a guest allocates its PGSTE tables when it
# populates, and a collapsed range stays PMD-mapped, so in 50 ms after warmup only guests forked
# then allocate any. A larger share makes some of those forks guests.
SHORT = [
    "duration=60ms",
    "warmup=10ms",
    "machine.cpus=4",
    "workload.processes.initial=12",
    "workload.processes.pgste_fraction=0.3",
]


@pytest.mark.parametrize(
    "name, extra",
    [
        ("s390", []),
        ("s390-fullpage", []),
        ("s390-hh", []),
        ("s390-hh", ["allocator.params.mm_lifetime=synchronize_rcu"]),
    ],
)
def test_s390_config_runs_clean(name, extra):
    cfg = load_config(CONFIG, [*SHORT, f"allocator.name={name}", *extra])
    assert cfg.machine.hz == 100 and cfg.machine.page_size == 4096
    r = simulate(cfg)
    s = r.summary
    assert s["safety.violations"] == 0, r.violations[:2]
    assert s["count.tables.deferred"] > 0 and s["count.tables.gathered"] > 0
    assert s["count.s390.pgste_pages" if name != "s390-fullpage" else "mm.alive_end"] > 0
    assert s["mem.held_end_bytes"] == s["pages.pgtable_held_end"] * 4096
    if name == "s390-fullpage":
        assert s["mem.internal.mean_bytes"] > 0 and s["mem.spare.peak_bytes"] == 0
    else:
        assert s["mem.internal.peak_bytes"] == 0
