"""desim explore: exact schedules, the search's determinism, every unsafe scenario caught with
its shortest counterexample, replays that repeat exactly, coverage, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from desim.cli import main
from desim.explore import output as O
from desim.explore.run import Chooser, Diverged, Op, ReplayChooser, Schedule
from desim.explore.search import explore, replay
from desim.explore.spec import from_dicts, load_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "configs" / "explore"
CHECKED_IN = Path(__file__).resolve().parent / "explore"

UNSAFE = sorted(p.stem for p in SCENARIOS.glob("*.yaml") if load_scenario(p).spec.expect != "safe")
SAFE = sorted(p.stem for p in SCENARIOS.glob("*.yaml") if load_scenario(p).spec.expect == "safe")
# The shortest failing schedule of each, in operations: the two operations that race (one for
# s390-hh as posted, whose first deferral already breaks the rule; three for powerpc, which
# must retract both fragments of the cached page before the exit frees it).
SHORTEST = {
    "unsafe-immediate": 2,
    "unsafe-shared-rcuhead": 2,
    "unsafe-callback-mm": 2,
    "powerpc-frag-destroy": 3,
    "s390-hh-posted": 1,
}


def scenario(name: str):
    return load_scenario(SCENARIOS / f"{name}.yaml")


def small(allocator: str = "unsafe-immediate", **explore_):
    return from_dicts("t", {"machine": {"cpus": 2}, "allocator": {"name": allocator}}, explore_)


def test_every_failing_scenario_has_its_shortest_counterexample_stated():
    assert set(UNSAFE) == set(SHORTEST) and set(SHORTEST) == {p.stem for p in CHECKED_IN.glob("*")}
    assert {"unsafe-immediate", "unsafe-shared-rcuhead", "unsafe-callback-mm"} <= set(UNSAFE)


# -- one schedule, exactly ----------------------------------------------------------------------


def test_a_walk_racing_an_immediate_free_fails_exactly_where_the_lock_is_handed_over():
    # cpu0's fault walks pt 0 from +0 (150 ns), then spins on its ptl, which cpu1's retraction
    # took at +25 ns; cpu1 holds it over the TLB flush (median 1,500 ns), hands it to cpu0 and
    # frees the page at once: the ptl is held in a freed page.
    out = Schedule(small(), [Op(0, 0, "fault", 0, 0), Op(0, 1, "retract", 0, 0)], Chooser()).run()
    assert out.failure["kind"] == "lock_in_freed_page"
    assert (out.failure["t_ns"], out.failure["cpu"]) == (1650, 1)
    assert out.steps[:4] == [
        (0, 0, "fault(mm#0, pt@page#0.1+0)"),
        (0, 0, "rcu_read_lock"),
        (0, 1, "khugepaged retract_page_tables(mm#0, pt@page#0.1+0)"),
        (150, 0, "spin_lock: contended, spins"),
    ]
    assert out.choices == [("order", 2, 0), ("order", 2, 0), ("cost.tlb_flush", 5, 0)]


def test_the_same_race_on_generic_retries_the_fault_and_frees_after_a_grace_period():
    out = Schedule(
        small("generic"), [Op(0, 0, "fault", 0, 0), Op(0, 1, "retract", 0, 0)], Chooser()
    ).run()
    assert out.failure is None
    texts = [text for _t, _c, text in out.steps]
    assert "pmd_same failed: fault retried" in texts
    freed = [t for t, _c, text in out.steps if text == "page#0.1: freed"]
    gp_end = [t for t, c, text in out.steps if c == -1 and "grace period 1 ends" in text]
    assert freed and gp_end and freed[0] > gp_end[0] > 1650
    assert out.pairs == {("fault", "retract")}


class FirstOrderLast(Chooser):
    """Answers the first order choice with its last option, everything else with 0."""

    def pick(self, label, n):
        return n - 1 if label == "order" and not self.made else 0


def test_order_choices_run_the_chosen_tied_event_first():
    script = [Op(0, 0, "fault", 0, 0), Op(0, 1, "retract", 0, 0)]
    out = Schedule(small(), script, FirstOrderLast()).run()
    assert out.choices[0] == ("order", 2, 1)
    # the retraction's step ran before the fault's: it takes the ptl before the walk starts
    assert out.steps[0] == (0, 1, "khugepaged retract_page_tables(mm#0, pt@page#0.1+0)")


def test_a_replay_asked_another_question_says_so():
    script = [Op(0, 0, "fault", 0, 0), Op(0, 1, "retract", 0, 0)]
    with pytest.raises(
        Diverged, match="choice 2: recorded cost.tlb_flush of 5, the run asks order"
    ):
        Schedule(small(), script, ReplayChooser([("order", 2, 0), ("cost.tlb_flush", 5, 0)])).run()


def test_cost_choices_take_the_distributions_quantiles():
    script = [Op(0, 0, "fault", 0, 0), Op(0, 1, "retract", 0, 0)]
    # answer 2 is the TLB flush's 99th percentile: 4,500 ns instead of the median's 1,500
    out = Schedule(
        small(), script, ReplayChooser([("order", 2, 0), ("order", 2, 0), ("cost.tlb_flush", 5, 2)])
    ).run()
    assert out.failure["t_ns"] == 1650 + 3000


# -- the search -------------------------------------------------------------------------------


def _key(res):
    f = res.found
    found = None if f is None else (f.script, f.choices, f.failure["kind"], f.failure["t_ns"])
    return found, res.coverage.to_dict(("fault", "retract", "exit"))


@pytest.mark.parametrize("name", ["unsafe-immediate", "detached-walk"])
def test_the_same_seed_and_budget_give_the_same_result(name):
    sc = scenario(name)
    assert _key(explore(sc, seed=5, budget=25)) == _key(explore(sc, seed=5, budget=25))


def test_another_seed_explores_other_schedules():
    sc = scenario("detached-walk")
    a = explore(sc, seed=1, budget=15).coverage
    b = explore(sc, seed=2, budget=15).coverage
    assert a.schedules == b.schedules == 15
    assert a.states != b.states or a.choices != b.choices


@pytest.mark.parametrize("name", UNSAFE)
def test_every_unsafe_scenario_is_caught_with_its_shortest_counterexample(name):
    sc = scenario(name)
    res = explore(sc, seed=1, budget=80)
    assert res.found is not None, f"{name}: no violation in 80 schedules"
    assert res.found.failure["kind"] in sc.spec.expect
    assert len(res.found.script) == SHORTEST[name]
    assert res.first_found_after <= 80


@pytest.mark.parametrize("name", UNSAFE)
def test_the_checked_in_counterexamples_replay_exactly(name):
    sc, script, choices, data = O.read_replay(CHECKED_IN / f"{name}.yaml")
    out = replay(sc, script, choices, trace=False)
    rec = data["violation"]
    assert rec["kind"] in sc.spec.expect
    assert {k: out.failure[k] for k in ("kind", "t_ns", "cpu", "message")} == rec
    assert len(script) == SHORTEST[name]


def test_a_replay_file_repeats_the_run_step_for_step(tmp_path):
    sc = scenario("unsafe-immediate")
    res = explore(sc, seed=1, budget=40)
    path = tmp_path / "counterexample.yaml"
    path.write_text(O.dump_replay(O.replay_dict(sc, res.found, 1, "x.yaml")))
    sc2, script, choices, _ = O.read_replay(path)
    again = replay(sc2, script, choices)
    assert again.failure == res.found.failure
    assert again.steps == res.found.steps
    assert again.log.to_dict()["traceEvents"]  # and a trace of it


@pytest.mark.parametrize("name", SAFE)
def test_a_safe_design_survives_a_small_budget(name):
    res = explore(scenario(name), seed=1, budget=12)
    assert res.found is None, res.found and res.found.failure
    assert res.coverage.schedules == 12


def test_coverage_counts_schedules_states_and_interleaved_pairs():
    sc = scenario("detached-walk")
    cov = explore(sc, seed=1, budget=20).coverage
    d = cov.to_dict(("fault", "retract"))
    assert d["schedules"] == 20
    assert d["distinct_states"] == len(cov.states) > 10
    assert d["operations_run"] == {"fault": 40, "retract": 20}
    assert d["pairs_interleaved"]["fault x retract"] >= 1
    assert d["order_choices"] >= d["reordered"] > 0
    # pairs of the alphabet never seen overlapping are listed, so that silence means something
    assert set(d["pairs_never_interleaved"]) | {
        k for k in d["pairs_interleaved"] if "pte_free" not in k
    } == {"fault x fault", "fault x retract", "retract x retract"}


# -- the command line ---------------------------------------------------------------------------


def run_cli(*args):
    return CliRunner().invoke(main, ["explore", *args])


def test_a_violation_exits_1_with_its_steps_and_files_and_replays(tmp_path):
    out = tmp_path / "res"
    r = run_cli(str(SCENARIOS / "unsafe-immediate.yaml"), "--budget", "40", "--out", str(out))
    assert r.exit_code == 1, r.output
    assert "shortest schedule found: 2 operations" in r.output
    assert "lock_in_freed_page" in r.output and "cpu1: khugepaged" in r.output
    assert {p.name for p in out.iterdir()} == {
        "EXPLORE",
        O.REPLAY,
        O.STEPS,
        O.TRACE,
        O.COVERAGE,
    }
    summary = json.loads((out / O.COVERAGE).read_text())
    assert summary["violation"]["operations"] == 2
    trace = json.loads((out / O.TRACE).read_text())
    assert any(e.get("name") == "fault" for e in trace["traceEvents"])
    r2 = run_cli("--replay", str(out / O.REPLAY))
    assert r2.exit_code == 1 and "the recorded violation recurred exactly" in r2.output
    # the same again replaces desim's own result
    assert (
        run_cli(
            str(SCENARIOS / "unsafe-immediate.yaml"), "--budget", "40", "--out", str(out)
        ).exit_code
        == 1
    )


def test_no_violation_exits_0_with_coverage(tmp_path):
    out = tmp_path / "res"
    r = run_cli(str(SCENARIOS / "detached-walk.yaml"), "--budget", "8", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "no violation in 8 schedules" in r.output and "distinct states" in r.output
    assert json.loads((out / O.COVERAGE).read_text())["coverage"]["schedules"] == 8


def _bad(tmp_path, text: str) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        ("explore: {steps: 0}\n", (), "explore.steps: Input should be greater than or equal to 1"),
        ("workload: {faults: {}}\n", (), "workload: an explore scenario runs its explore: steps"),
        ("machine: {cpus: 16}\n", (), "machine.cpus: at most 8 for desim explore"),
        (
            "machine: {cpus: 2}\nexplore: {script: [{op: fault, cpu: 5}]}\n",
            (),
            "explore.script.0.cpu: 5",
        ),
        ("explore: {ops: [fork]}\n", (), "explore.ops.0: Input should be"),
        ("explore: {}\n", ("--budget", "3", "--time", "2s"), "give one of them, not both"),
        ("explore: {}\n", ("--time", "5"), "--time: expected a positive duration with a unit"),
        ("explore: {fine: 4000}\n", (), "explore.fine: 4000 has no unit: write 4000ns"),
        (
            "explore: {expect: [nonsense]}\n",
            (),
            "explore.expect: unknown violation kind 'nonsense' (allowed: safe, or a list of: "
            "use_after_free,",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, text, args, message):
    out = tmp_path / "out"
    r = run_cli(str(_bad(tmp_path, text)), *args, "--out", str(out))
    assert r.exit_code == 2, r.output
    assert message in r.output and r.output.count("\n") == 1 and "Traceback" not in r.output
    assert not out.exists()


def test_a_bad_replay_file_is_one_line_and_exit_2(tmp_path):
    r = run_cli("--replay", str(_bad(tmp_path, "seed: 1\n")))
    assert r.exit_code == 2 and "format: Field required" in r.output
    good = (CHECKED_IN / "unsafe-immediate.yaml").read_text()
    r = run_cli("--replay", str(_bad(tmp_path, good.replace("op: retract", "op: fork"))))
    assert r.exit_code == 2 and "script.1.op" in r.output
    r = run_cli("--replay", str(CHECKED_IN / "unsafe-immediate.yaml"), "--budget", "3")
    assert r.exit_code == 2 and "give no CONFIG, --budget" in r.output


def test_a_replay_whose_schedule_changed_says_where_it_diverged(tmp_path):
    text = (CHECKED_IN / "unsafe-immediate.yaml").read_text()
    text = text.replace("- [cost.tlb_flush, 5, 0]", "- [cost.fault_work, 5, 0]")
    r = run_cli("--replay", str(_bad(tmp_path, text)), "--out", str(tmp_path / "out"))
    assert r.exit_code == 2, r.output
    assert "left the recorded schedule (choice 3: recorded cost.fault_work of 5" in r.output
    assert not (tmp_path / "out").exists()


def test_a_directory_of_the_users_is_never_written(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    r = run_cli(str(SCENARIOS / "detached-walk.yaml"), "--budget", "3", "--out", str(out))
    assert r.exit_code == 2 and "not empty and was not written by desim" in r.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_desim_run_points_an_explore_scenario_to_desim_explore():
    r = CliRunner().invoke(main, ["run", str(SCENARIOS / "unsafe-immediate.yaml")])
    assert r.exit_code == 2 and "desim explore" in r.output
