"""runs.parquet and points.parquet as data: one type per column, base units, integer seeds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep_out(tmp_path_factory):
    from desim.sweep.command import sweep

    tmp = tmp_path_factory.mktemp("types")
    exp = tmp / "exp.yaml"
    exp.write_text(
        yaml.safe_dump(
            {
                "base": str(ROOT / "configs" / "default.yaml"),
                "set": {"duration": "6ms", "warmup": "1ms", "machine.cpus": 2},
                "seed": 11,
                "replications": 2,
                "sweep": {
                    "grid": {"costs.fault_work": ["700ns", "1us"]},
                    "list": [
                        {"allocator.name": "generic"},
                        {"allocator.name": "powerpc", "machine.page_size": "64KiB"},
                    ],
                },
            }
        )
    )
    quiet = Console(file=open("/dev/null", "w"))  # noqa: SIM115
    assert sweep(str(exp), 1, str(tmp / "out"), None, False, False, quiet, quiet) == 0
    return tmp / "out"


def test_swept_columns_hold_resolved_values_in_base_units(sweep_out):
    runs = pd.read_parquet(sweep_out / "runs.parquet")
    assert len(runs) == 8
    # A point that leaves the key to the base config shows the base's value, not a missing one.
    assert runs.groupby("allocator.name")["machine.page_size"].unique().map(list).to_dict() == {
        "generic": [4096],
        "powerpc": [65536],
    }
    assert sorted(runs["costs.fault_work"].unique()) == [700, 1000]
    for c in ("machine.page_size", "costs.fault_work", "seed", "seed_entropy", "point"):
        assert pd.api.types.is_integer_dtype(runs[c]), c
    # A groupby over the swept keys keeps every row.
    assert (
        runs.groupby(["allocator.name", "machine.page_size", "costs.fault_work"]).size().sum() == 8
    )


def test_units_are_in_the_schema(sweep_out):
    for name in ("runs.parquet", "points.parquet"):
        schema = pq.read_schema(sweep_out / name)
        assert schema.field("machine.page_size").metadata == {b"unit": b"bytes"}
        assert schema.field("costs.fault_work").metadata == {b"unit": b"ns"}
        assert not schema.field("allocator.name").metadata


def test_seeds_are_integers(sweep_out):
    runs = pd.read_parquet(sweep_out / "runs.parquet")
    assert set(runs["seed"]) == {11} and set(runs["seed_entropy"]) == {11}
    assert sorted({tuple(k) for k in runs["seed_spawn_key"]}) == [(0,), (1,)]
    schema = pq.read_schema(sweep_out / "runs.parquet")
    assert str(schema.field("seed_spawn_key").type) == "list<element: int64>"
    assert str(schema.field("error").type) in ("string", "large_string")


def test_points_table_has_every_point(sweep_out):
    points = pd.read_parquet(sweep_out / "points.parquet")
    assert points["point"].nunique() == 4
    assert pd.api.types.is_integer_dtype(points["machine.page_size"])


def test_a_whole_swept_section_is_plain_data():
    # Sweeping a whole section (`workload: {...}` in a list entry) resolves to a dict of the
    # elements' validated parameter models: the cell must hold them as JSON, not fail.
    import json

    from desim.config import validate
    from desim.sweep.aggregate import _cell, _resolved

    cfg = validate(
        {"machine": {"cpus": 2}, "workload": {"faults": {"mode": "per_process", "rate": "5/s"}}}
    )
    value, unit = _resolved(cfg, "workload")
    assert unit is None
    cell = json.loads(_cell(value))
    assert cell["faults"]["mode"] == "per_process"
    assert cell["faults"]["rate"] == {"dist": "exponential", "mean": 2e8}
