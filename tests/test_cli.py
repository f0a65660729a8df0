"""The command line as a user meets it: good runs write results, bad input fails in one line."""

import json

import pytest
from click.testing import CliRunner

from desim.cli import main

GOOD = """
duration: 20ms
machine: {cpus: 2}
workload:
  processes: {initial: 4}
  faults: {}
"""


@pytest.fixture
def runner():
    return CliRunner()


def test_run_writes_a_complete_result_directory(runner, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD)
    out = tmp_path / "out"
    r = runner.invoke(main, ["run", str(cfg), "--out", str(out), "--seed", "3", "--set", "machine.cpus=4"])
    assert r.exit_code == 0, r.output
    for f in ("config.yaml", "manifest.json", "summary.json", "timeseries.parquet",
              "latency.parquet", "locks.parquet", "gp.parquet", "violations.json", "DONE"):
        assert (out / f).exists(), f
    man = json.loads((out / "manifest.json").read_text())
    assert man["seed"] == 3 and man["events"] > 0 and man["status"] == "ok"
    assert "page faults" in r.output
    # the resolved config is runnable as it stands and reproduces the run
    out2 = tmp_path / "out2"
    r2 = runner.invoke(main, ["run", str(out / "config.yaml"), "--out", str(out2), "--quiet"])
    assert r2.exit_code == 0, r2.output
    assert (out / "summary.json").read_text() == (out2 / "summary.json").read_text()


BAD = [
    ("duration: [1, 2\n", "malformed YAML"),
    ("allocator: {name: nosuch}\n", "unknown allocator 'nosuch' (allowed: "),
    ("duration: -5ms\n", "duration"),
    ("machine: {cpus: 8, colour: red}\n", "machine.colour: unknown field"),
    ("machine: {cpus: many}\n", "machine.cpus"),
    ("machine: {hz: 500}\n", "hz must be one of 100, 250, 300, 1000"),
    ("workload: {nosuch: {}}\n", "unknown workload element 'nosuch' (allowed: "),
    ("workload: {faults: {think: 3 apples}}\n", "workload.faults.think"),
    ("costs: {pte_walk: 5 KiB}\n", "costs.pte_walk"),
]


@pytest.mark.parametrize("text,needle", BAD)
def test_bad_config_one_line_error_nonzero_exit_nothing_written(runner, tmp_path, text, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    r = runner.invoke(main, ["run", str(cfg), "--out", str(out)])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("desim: error:"), r.stderr
    assert needle in lines[0]
    assert "Traceback" not in r.output
    assert not out.exists()


def test_validate_and_list(runner, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD)
    r = runner.invoke(main, ["validate", str(cfg)])
    assert r.exit_code == 0 and "ok" in r.output
    r = runner.invoke(main, ["list"])
    assert r.exit_code == 0
    assert "generic" in r.output and "khugepaged" in r.output


def test_bad_override_is_an_error(runner, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD)
    r = runner.invoke(main, ["run", str(cfg), "--set", "machine.cpus"])
    assert r.exit_code == 2 and "expected dotted.key=value" in r.stderr
