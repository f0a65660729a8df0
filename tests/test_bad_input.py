"""Bad input, as an adversarial user writes it: one line naming the field, exit 2, nothing written.

Every case is driven through the command line (``desim validate``, ``desim run``, ``desim sweep
--dry-run``). Cases that used to hang (an evaluated ``9**9**9``, a billion processes built at
validation, ``/dev/zero``, a FIFO, an alias bomb) run in a subprocess under a timeout, so that a
regression fails instead of blocking the suite; ``desim run`` in-process has its simulation
replaced by a failure, so a zero gap that slipped through cannot loop for ever either.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desim.cli import main
from desim.config import ConfigError, set_dotted, validate
from desim.engine import build
from desim.inputs import InputError, load_yaml

ROOT = Path(__file__).resolve().parents[1]
BASE = "duration: 20ms\nmachine: {cpus: 2}\n"
W = BASE + "workload:\n  processes: {initial: 2}\n"

# (id, config text, --set values, what the error line must contain)
CASES = [
    # zero gaps: the run would stay at t=0 for ever
    ("think-0", W + "  faults: {think: 0}\n", [], "workload.faults.think"),
    (
        "think-uniform-0",
        W + "  faults: {think: {dist: uniform, low: 0, high: 0}}\n",
        [],
        "workload.faults.think",
    ),
    (
        "think-empirical-0",
        W + "  faults: {think: {dist: empirical, values: [0, 0]}}\n",
        [],
        "workload.faults.think",
    ),
    (
        "think-sub-ns",
        W + "  faults: {think: {dist: exponential, mean: 0.01}}\n",
        [],
        "workload.faults.think",
    ),
    ("rate-too-fast", W + "  munmap: {rate: 5e9/s}\n", [], "workload.munmap.rate"),
    (
        "fork-gap-0",
        BASE + "workload:\n  processes: {fork_rate: {dist: constant, value: 0}}\n",
        [],
        "workload.processes.fork_rate",
    ),
    (
        "kernel-work-0",
        BASE + "workload:\n  kernel_work: {gap: 0, section: 0}\n",
        [],
        "workload.kernel_work.gap",
    ),
    (
        "lockstress-0",
        BASE + "workload:\n  lockstress: {think: 0, hold: 0}\n",
        [],
        "workload.lockstress.think",
    ),
    ("scan-sleep-0", W + "  khugepaged: {scan_sleep: 0}\n", [], "workload.khugepaged.scan_sleep"),
    (
        "mix-huge",
        W + "  faults: {}\n  phases: [{duration: 1ms, mix: {faults: 1e6}}]\n",
        [],
        "mix.faults",
    ),
    # counts and sizes beyond their bounds
    (
        "tables-huge",
        BASE + "workload:\n  processes: {tables: 1e12}\n",
        [],
        "workload.processes.tables",
    ),
    (
        "tables-mean-huge",
        BASE + "workload:\n  processes: {tables: {dist: exponential, mean: 1e12}}\n",
        [],
        "workload.processes.tables",
    ),
    ("gup-pages", W + "  gup_fast: {pages: 100000}\n", [], "workload.gup_fast.pages"),
    (
        "hog-pages",
        BASE + "workload:\n  memory_pressure: {hog_pages: 1e15}\n",
        [],
        "workload.memory_pressure.hog_pages",
    ),
    ("seed-huge", "seed: 100000000000000000000\n", [], "seed"),
    ("blimit-huge", "rcu: {blimit: 1e12}\n", [], "rcu.blimit"),
    (
        "samples-huge",
        "duration: 1 day\nrecord: {sample_interval: 1ns}\n",
        [],
        "record.sample_interval",
    ),
    ("fqs-above-hz", "machine: {hz: 250}\nrcu: {fqs_jiffies: 1000}\n", [], "rcu.fqs_jiffies"),
    ("page-size-huge", "machine: {page_size: 1GiB}\n", [], "machine.page_size"),
    ("memory-limit-sub-page", "machine: {memory_limit: 100}\n", [], "machine.memory_limit"),
    (
        "placement-cpu-huge",
        W + "  faults: {mode: per_process, placement: {policy: pinned, cpus: [1000000]}}\n",
        [],
        "workload.faults.placement",
    ),
    # infinite, overflowing, of the wrong shape
    ("duration-inf", "duration: .inf\n", [], "duration"),
    ("duration-1e400", "duration: 1e400\n", [], "duration"),
    ("duration-1e30s", "duration: 1e30 s\n", [], "duration"),
    ("duration-2-days", "duration: 2 days\n", [], "duration"),
    ("duration-list", "duration: [1, 2]\n", [], "duration"),
    ("walk-mapping", "costs: {pte_walk: {a: 1}}\n", [], "costs.pte_walk"),
    ("cost-profile", "costs: {profile: sparc}\n", [], "costs.profile"),
    (
        "cost-tail-below-median",
        "costs: {fault_work: {dist: lognormal, median: 1us, p95: 500ns}}\n",
        [],
        "costs.fault_work",
    ),
    (
        "lognormal-inf-mean",
        W + "  faults: {think: {dist: lognormal, mu: 10, sigma: 1000}}\n",
        [],
        "workload.faults.think",
    ),
    (
        "sigma-nan",
        W + "  faults: {think: {dist: lognormal, mu: 10, sigma: .nan}}\n",
        [],
        "workload.faults.think",
    ),
    (
        "fraction-inf",
        BASE + "workload:\n  processes: {shmem_fraction: .inf}\n",
        [],
        "workload.processes.shmem_fraction",
    ),
    ("dist-kind-list", W + "  faults: {think: {dist: [a]}}\n", [], "workload.faults.think"),
    ("allocator-name-list", "allocator: {name: [generic]}\n", [], "allocator.name"),
    (
        "csv-column-list",
        BASE + "workload:\n  processes: {tables: {dist: empirical, file: t.csv, column: [1]}}\n",
        [],
        "workload.processes.tables",
    ),
    # silent nonsense
    ("ms-per-s", "duration: 20 ms / s\n", [], "duration"),
    ("size-percent", "machine: {page_size: 1 percent}\n", [], "machine.page_size"),
    ("limit-percent", "machine: {memory_limit: 1 percent}\n", [], "machine.memory_limit"),
    ("time-percent", "costs: {pte_walk: 5 percent}\n", [], "costs.pte_walk"),
    (
        "duplicate-section",
        "machine: {cpus: 2}\nmachine: {cpus: 4}\n",
        [],
        "line 2: duplicate key 'machine' (first at line 1)",
    ),
    ("duplicate-field", "machine:\n  cpus: 2\n  cpus: 4\n", [], "duplicate key 'cpus'"),
    ("cpus-true", "machine: {cpus: true}\n", [], "machine.cpus"),
    ("cpus-fraction", "machine: {cpus: 8.5}\n", [], "machine.cpus"),
    (
        "cpu-id-true",
        W + "  faults: {placement: {policy: pinned, cpus: [true]}}\n",
        [],
        "workload.faults.placement.cpus",
    ),
    (
        "fraction-true",
        BASE + "workload:\n  processes: {pgste_fraction: true}\n",
        [],
        "workload.processes.pgste_fraction",
    ),
    # YAML that desim refuses outright
    ("alias", "m: &m {cpus: 2}\nmachine: *m\n", [], "anchors and aliases"),
    ("merge-key", "machine: {<<: {cpus: 2}}\n", [], "merge keys"),
    ("deep", "a: " + "[" * 10_000 + "]" * 10_000 + "\n", [], "nested deeper than 64"),
    ("two-documents", "seed: 1\n---\nseed: 2\n", [], "malformed YAML"),
    ("control-char", "seed: 1\x07\n", [], "malformed YAML"),
    ("huge-int", "seed: " + "9" * 5000 + "\n", [], "malformed YAML value"),
    # --set values
    ("set-unclosed", BASE, ["a=[1"], "--set 'a=[1'"),
    ("set-empty", BASE, ["="], "--set '='"),
    ("set-no-equals", BASE, ["machine.cpus"], "--set 'machine.cpus'"),
    ("set-alias", BASE, ["machine.cpus=*x"], "--set 'machine.cpus=*x'"),
    ("set-blank-key", BASE, [" =1"], "--set ' =1'"),
    ("set-empty-part", BASE, ["machine..cpus=4"], "--set 'machine..cpus=4'"),
    ("set-deep-key", BASE, [".".join(["a"] * 100) + "=1"], "expected dotted.key=value"),
    ("set-bool-count", BASE, ["machine.cpus=true"], "machine.cpus"),
    ("set-dup-key", BASE, ["machine={cpus: 2, cpus: 4}"], "duplicate key 'cpus'"),
]


@pytest.fixture
def runner():
    return CliRunner()


def _one_line(stderr: str, needle: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("desim: error: "), stderr
    assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in stderr
    return lines[0]


def _write(tmp_path: Path, text: str | bytes) -> Path:
    cfg = tmp_path / "c.yaml"
    if isinstance(text, bytes):
        cfg.write_bytes(text)
    else:
        cfg.write_text(text)
    (tmp_path / "t.csv").write_text("1\n2\n")
    return cfg


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_value_is_one_line_naming_the_field(runner, tmp_path, monkeypatch, case, command):
    _, text, sets, needle = case

    def no_simulation(*a, **k):
        raise AssertionError("a refused config reached the simulation")

    monkeypatch.setattr("desim.engine.simulate", no_simulation)
    cfg = _write(tmp_path, text)
    before = sorted(tmp_path.iterdir())
    out = tmp_path / "out"
    args = [command, str(cfg)] + [a for s in sets for a in ("--set", s)]
    if command == "run":
        args += ["--out", str(out), "--quiet"]
    r = runner.invoke(main, args)
    assert r.exit_code == 2, (r.output, r.exception)
    _one_line(r.stderr, needle)
    assert sorted(tmp_path.iterdir()) == before  # nothing written, no results directory


def test_non_utf8_config_names_the_byte_and_line(runner, tmp_path):
    cfg = _write(tmp_path, b"seed: 1\nduration: \xff\xfe\n")
    r = runner.invoke(main, ["validate", str(cfg)])
    assert r.exit_code == 2
    _one_line(r.stderr, "not UTF-8 text (byte 0xff at line 2)")


def test_oversized_config_is_refused_unread(runner, tmp_path):
    cfg = tmp_path / "big.yaml"
    with cfg.open("wb") as fh:
        fh.truncate((16 << 20) + 1)  # sparse: costs no disk
    r = runner.invoke(main, ["validate", str(cfg)])
    assert r.exit_code == 2
    _one_line(r.stderr, "too large")


def test_missing_config_is_one_line(runner, tmp_path):
    r = runner.invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 2
    _one_line(r.stderr, "cannot read (No such file or directory)")


def test_a_time_needs_its_unit_but_a_size_and_zero_do_not(runner, tmp_path):
    cfg = _write(tmp_path, "duration: 5000000\nmachine: {cpus: 2.0, page_size: 4096}\n")
    r = runner.invoke(main, ["validate", str(cfg)])
    assert r.exit_code == 2
    assert r.output.strip().endswith(
        "duration: 5000000 has no unit: write 5000000ns, 5000000us, 5000000ms or 5000000s"
    )
    cfg = _write(tmp_path, "duration: 5ms\nwarmup: 0\nmachine: {cpus: 2.0, page_size: 4096}\n")
    r = runner.invoke(main, ["validate", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "ok (2 CPUs, allocator generic, workload none, 5 ms)" in " ".join(r.output.split())


@pytest.mark.parametrize(
    "where",
    [
        ["--set", "costs.page_free=150"],
        ["--set", "workload.faults.think={dist: exponential, mean: 20}"],
    ],
)
def test_a_bare_time_in_an_override_is_refused_with_its_field(runner, tmp_path, where):
    cfg = _write(tmp_path, "duration: 5ms\n")
    r = runner.invoke(main, ["validate", str(cfg), *where])
    assert r.exit_code == 2
    field = where[1].split("=")[0]
    assert f"{field}" in r.output and "has no unit" in r.output


# --- experiments ---------------------------------------------------------------------------


def _exp(tmp_path: Path, body: str, name: str = "exp") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"base: {ROOT / 'configs' / 'default.yaml'}\n{body}")
    return p


EXP_CASES = [
    ("name-parent", "name: ../../x\n", "name: '../../x' is no safe directory name"),
    ("name-absolute", "name: /tmp/x\n", "name: '/tmp/x' is no safe directory name"),
    ("name-slash", "name: a/b\n", "name: 'a/b'"),
    ("name-hidden", "name: .x\n", "name: '.x'"),
    ("name-bool", "name: true\n", "name: True"),
    ("duplicate-set", "set: {duration: 1ms}\nset: {duration: 2ms}\n", "duplicate key 'set'"),
    ("set-bad-key", "set: {'a..b': 1}\n", "set: 'a..b'"),
    ("sweep-key-not-text", "sweep: {list: [{1: 2}]}\n", "sweep.list: 1 is not a dotted key"),
    (
        "grid-explodes",
        "sweep:\n  grid: {" + ", ".join(f"k{i}: [1,2,3,4,5,6,7,8,9,10]" for i in range(12)) + "}\n",
        "sweep: 1,000,000,000,000 points",
    ),
    ("replications-huge", "replications: 1000000000\n", "replications"),
    ("seed-huge", "seed: 100000000000000000000\n", "seed"),
    ("alias-in-set", "set:\n  a: &a [1, 1]\n  b: [*a, *a]\n", "anchors and aliases"),
]


@pytest.mark.parametrize("case", EXP_CASES, ids=[c[0] for c in EXP_CASES])
def test_bad_experiment_is_one_line(runner, tmp_path, case):
    _, body, needle = case
    exp = _exp(tmp_path, body)
    out = tmp_path / "out"
    r = runner.invoke(main, ["sweep", "--dry-run", "--out", str(out), str(exp)])
    assert r.exit_code == 2, r.output
    line = _one_line(r.stderr, needle)
    assert str(exp) in line
    assert not out.exists()


def test_unsafe_file_stem_needs_a_name(runner, tmp_path):
    exp = _exp(tmp_path, "", name="..")  # "...yaml": its stem is ".."
    r = runner.invoke(main, ["sweep", "--dry-run", str(exp)])
    assert r.exit_code == 2
    _one_line(r.stderr, "the file name '..' is no safe directory name")


# --- cases that used to hang: a subprocess under a timeout -------------------------------


def _desim(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}  # tables on one line
    return subprocess.run(
        [sys.executable, "-m", "desim.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


HANGS = [
    ("evaluated-power", "validate", "duration: 9**9**9 ns\n", "duration: cannot read"),
    (
        "billion-processes",
        "validate",
        "workload: {processes: {initial: 1000000000}}\n",
        "workload.processes.initial",
    ),
    (
        "billion-locks",
        "validate",
        "workload: {lockstress: {locks: 1e9}}\n",
        "workload.lockstress.locks",
    ),
    ("think-0-run", "run", W + "  faults: {think: 0}\n", "workload.faults.think"),
]


@pytest.mark.parametrize("case", HANGS, ids=[c[0] for c in HANGS])
def test_former_hang_ends_at_once(tmp_path, case):
    _, command, text, needle = case
    cfg = _write(tmp_path, text)
    r = _desim(tmp_path, command, str(cfg), *(["--out", "out"] if command == "run" else []))
    assert r.returncode == 2, r.stderr
    _one_line(r.stderr, needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make", ["dev-zero", "fifo"])
def test_only_regular_files_are_read(tmp_path, make):
    if make == "dev-zero":
        r = _desim(tmp_path, "validate", "/dev/zero")
        needle = "/dev/zero: not a regular file"
    else:
        os.mkfifo(tmp_path / "f.yaml")  # nobody writes: a blocking open would wait for ever
        r = _desim(tmp_path, "validate", "f.yaml")
        needle = "f.yaml: not a regular file"
    assert r.returncode == 2, r.stderr
    _one_line(r.stderr, needle)


def test_a_directory_as_base_config_is_one_line(runner, tmp_path):
    exp = tmp_path / "e.yaml"
    exp.write_text(f"base: {tmp_path}\n")
    r = runner.invoke(main, ["sweep", "--dry-run", str(exp)])
    assert r.exit_code == 2
    _one_line(r.stderr, f"{tmp_path}: not a regular file")


def test_alias_bomb_in_an_experiment_is_refused_unexpanded(tmp_path):
    # nine levels of nine: 9^9 = 387 million strings if expanded
    lines = ["set:", '  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    exp = _exp(tmp_path, "\n".join(lines) + "\n")
    r = _desim(tmp_path, "sweep", "--dry-run", "--out", "out", str(exp))
    assert r.returncode == 2, r.stderr
    _one_line(r.stderr, "line 3: anchors and aliases (&name, *name) are not accepted")
    assert not (tmp_path / "out").exists()


def test_sweep_point_with_a_billion_processes_is_invalid_not_built(tmp_path):
    # A point's config error is recorded against the point (the sweep goes on with the others);
    # checking it used to build the billion processes.
    exp = _exp(tmp_path, "set: {workload.processes.initial: 1000000000}\n")
    r = _desim(tmp_path, "sweep", "--dry-run", "--jobs", "1", "--out", "out", str(exp))
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if "p000-r00" in ln]
    assert len(rows) == 1, r.stdout
    assert (
        "invalid: workload.processes.initial: Input should be less than or equal to 100000"
        in rows[0]
    ), r.stdout
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "out").exists()


# --- invariants: junk anywhere is a ConfigError, never another exception -------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "0",
            "1e9",
            "3ms",
            "-1ms",
            "1 percent",
            "5 KiB",
            "500/s",
            "2 days",
            "inf",
            "nan",
            "1e400 s",
            "20 ms / s",
            "9**9 ns",
            "exponential",
            "empirical",
            "lognormal",
            "uniform",
            "constant",
            "pinned",
        ]
    )
)
_junk = st.recursive(
    _scalars,
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "dist",
                    "mean",
                    "value",
                    "low",
                    "high",
                    "median",
                    "p99",
                    "mu",
                    "sigma",
                    "values",
                    "policy",
                    "cpus",
                    "name",
                    "x",
                ]
            ),
            kids,
            max_size=4,
        )
    ),
    max_leaves=8,
)
FIELDS = [
    "duration",
    "warmup",
    "seed",
    "machine.cpus",
    "machine.page_size",
    "machine.memory_limit",
    "machine.hz",
    "costs.pte_walk",
    "rcu.fqs_jiffies",
    "rcu.blimit",
    "allocator",
    "allocator.params.table_size",
    "workload.faults.think",
    "workload.faults.rate",
    "workload.processes.tables",
    "workload.processes.initial",
    "workload.processes.placement",
    "workload.processes.lifetime",
    "workload.munmap.rate",
    "workload.phases",
    "workload.kernel_work.gap",
    "record.sample_interval",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(FIELDS), _junk), min_size=1, max_size=3))
def test_junk_values_validate_or_raise_config_error(assignments):
    data = {
        "duration": "2ms",
        "machine": {"cpus": 2},
        "workload": {"processes": {"initial": 2}, "faults": {}},
    }
    for key, value in assignments:
        set_dotted(data, key, value)
    # ConfigError is the one expected failure; anything else propagates and fails the test, and
    # a config that validates must build (every requirement is checked at load time)
    try:
        cfg = validate(data)
    except ConfigError:
        return
    build(cfg)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_junk_yaml_text_loads_or_raises_input_error(text):
    try:
        load_yaml(text)
    except InputError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["machine", "duration", "seed", "workload"]), _junk, max_size=3
    ).map(lambda d: yaml.safe_dump(d))
)
def test_junk_yaml_documents_load_back(text):
    # anything yaml.safe_dump writes (no anchors for trees) is accepted by the strict loader
    load_yaml(text)
