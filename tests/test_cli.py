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
    r = runner.invoke(
        main, ["run", str(cfg), "--out", str(out), "--seed", "3", "--set", "machine.cpus=4"]
    )
    assert r.exit_code == 0, r.output
    for f in (
        "config.yaml",
        "manifest.json",
        "summary.json",
        "timeseries.parquet",
        "latency.parquet",
        "locks.parquet",
        "gp.parquet",
        "violations.json",
        "DONE",
    ):
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


def test_run_prints_plain_progress_lines_without_a_terminal(runner, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD)
    r = runner.invoke(main, ["run", str(cfg), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("simulating:")]
    # one line per tenth of the run (the wall-clock fallback cannot fire in a 20 ms run)
    assert [ln.split("%")[0].split()[-1] for ln in lines] == [str(10 * i) for i in range(1, 11)]
    assert lines[-1].startswith("simulating: 100% (20 ms of 20 ms simulated")
    assert r.stdout.rstrip().endswith(f"results: {tmp_path / 'o'}/")


def test_progress_lines_every_tenth_or_every_ten_seconds():
    import io

    from desim.progress import ProgressLines

    now = [0.0]
    buf = io.StringIO()
    p = ProgressLines(1000, lambda d: f"{d:g} done", buf, clock=lambda: now[0])
    for done, t in (
        (50, 1),
        (99, 2),
        (100, 3),
        (150, 4),
        (150, 15),
        (151, 16),
        (1000, 17),
        (1000, 18),
    ):
        now[0] = t
        p(done)
    assert buf.getvalue().splitlines() == [
        "simulating:  10% (100 done, 3 s)",  # the first tenth
        "simulating:  15% (150 done, 15 s)",  # ten seconds since the last line
        "simulating: 100% (1000 done, 17 s)",
    ]


def test_summary_table_headers_and_micro_sign(runner, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD)
    r = runner.invoke(main, ["run", str(cfg), "--out", str(tmp_path / "o")], env={"COLUMNS": "120"})
    head = next(ln for ln in r.stdout.splitlines() if "metric" in ln)
    assert [h.strip() for h in head.split("┃")[1:4]] == ["metric", "value", "detail"]
    assert " us" not in r.stdout
    from desim.units import format_ns

    assert [format_ns(v) for v in (999, 1300, 2.5e6)] == ["999 ns", "1.3 µs", "2.5 ms"]


def test_validate_and_run_point_an_experiment_file_to_sweep(runner, tmp_path):
    exp = tmp_path / "e.yaml"
    exp.write_text("name: e\nbase: {duration: 5ms}\nsweep: {grid: {machine.cpus: [1, 2]}}\n")
    r = runner.invoke(main, ["validate", str(exp)])
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        f"desim: error: {exp} is an experiment file (it has name:, base:), not a config; "
        f"check it with: desim sweep {exp} --dry-run"
    ]
    r = runner.invoke(main, ["run", str(exp), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and r.stderr.strip().endswith(f"run it with: desim sweep {exp}")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("window", ["10ms:30ms", "25ms:", "20ms:21ms"])
def test_trace_window_beyond_the_run_is_refused(runner, tmp_path, window):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD)
    r = runner.invoke(
        main,
        [
            "run",
            str(cfg),
            "--out",
            str(tmp_path / "o"),
            "--trace",
            str(tmp_path / "t.json"),
            "--trace-window",
            window,
        ],
    )
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        f"desim: error: --trace-window {window}: reaches beyond the run, which lasts 20 ms "
        "(duration); give START:END within 0:20ms"
    ]
    assert not (tmp_path / "o").exists() and not (tmp_path / "t.json").exists()


def test_trace_window_inside_the_run_is_accepted(runner, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD)
    r = runner.invoke(
        main,
        [
            "run",
            str(cfg),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
            "--trace",
            str(tmp_path / "t.json"),
            "--trace-window",
            "5ms:20ms",
        ],
    )
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "t.json").exists()


def test_a_config_without_workload_says_so_and_runs(runner, tmp_path):
    cfg = tmp_path / "idle.yaml"
    cfg.write_text("duration: 5ms\nmachine: {cpus: 2}\n")
    for args in (
        ["validate", str(cfg)],
        ["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet"],
    ):
        r = runner.invoke(main, args)
        assert r.exit_code == 0, r.stderr
        assert r.stderr.splitlines() == [
            f"note: {cfg} has no workload: section, so the machine runs idle "
            "(configs/default.yaml has one to copy)"
        ]
    good = tmp_path / "c.yaml"
    good.write_text(GOOD)
    assert "note:" not in runner.invoke(main, ["validate", str(good)]).stderr
    chosen = tmp_path / "chosen.yaml"  # an explicit empty workload is a choice: no note
    chosen.write_text("duration: 5ms\nworkload: {}\n")
    assert runner.invoke(main, ["validate", str(chosen)]).stderr == ""


def test_list_wraps_preset_descriptions_instead_of_cutting_them(runner):
    from desim.workloads.presets import presets

    r = runner.invoke(main, ["list"], env={"COLUMNS": "80"})
    assert r.exit_code == 0
    text = " ".join(r.stdout.split())
    for name, _path, desc in presets():
        assert desc.endswith("."), (name, desc)  # a whole first sentence
        assert " ".join(desc.split()) in text, name


def test_default_config_comment_is_true():
    from pathlib import Path

    from desim.config import Config, load_config
    from desim.report.load import flatten

    path = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    text = path.read_text()
    ours = flatten(load_config(path).to_dict())
    defaults = flatten(Config().to_dict())
    marked = {ln.split(":")[0].strip() for ln in text.splitlines() if "(default:" in ln}
    differ = {k for k in ours if not k.startswith("workload") and ours[k] != defaults.get(k)}
    assert differ == marked == {"warmup"}


def test_list_runs_in_a_fresh_interpreter():
    # CliRunner shares this process's imports; `desim list` as a user runs it starts from none
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", "from desim.cli import main; main(['list'])"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "server-db" in r.stdout and "percpu-pool" in r.stdout
