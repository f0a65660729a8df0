"""Big machines: what makes them cheaper to simulate changes no outcome.

Each test runs the same small configurations both ways and compares every figure of the run
(summary, series, histograms, lock statistics, grace-period spans, violations).
"""

import json
from pathlib import Path

import pytest

from desim import rng
from desim.config import load_config
from desim.engine import simulate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _outcome(r):
    s = dict(r.summary)
    s.pop("sim.wall_s", None)
    return json.dumps({"summary": s, "series": r.series, "hist": r.latency_hist, "locks": r.locks,
                       "gp": r.gp_spans, "violations": r.violations}, sort_keys=True, default=str)


# Every distribution the presets draw from, through both kinds of sampler (element uniforms and
# distribution samplers), and a long enough run that blocks are refilled many times.
BLOCK_CASES = [
    ("default", ["duration=30ms", "machine.cpus=4"]),
    ("kernel-build", ["duration=30ms"]),
    ("spawn-loop", ["duration=30ms"]),
    ("race-hunt", ["duration=15ms", "allocator.name=unsafe-immediate"]),
    ("s390", ["duration=30ms", "allocator.name=s390-hh"]),
]


@pytest.mark.parametrize("name,overrides", BLOCK_CASES)
def test_the_sampler_block_size_changes_no_value_drawn(monkeypatch, name, overrides):
    cfg = load_config(CONFIGS / f"{name}.yaml", ["warmup=0", *overrides])
    monkeypatch.setattr(rng, "BLOCK", 4096)
    big = _outcome(simulate(cfg))
    monkeypatch.setattr(rng, "BLOCK", 7)   # odd and tiny: many refills, none aligned
    small = _outcome(simulate(cfg))
    assert big == small
