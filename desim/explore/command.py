"""``desim explore``: search a scenario, or replay a counterexample; write and print the result.

Exit status: 1 when a schedule breaks the design (a counterexample is printed and written), 0
when none did within the budget (coverage is printed and written), 2 for bad input (one line).
The output directory follows ``desim.rundir``'s rules: a new or empty directory, or an explore
result desim wrote, swapped in whole at the end; nothing else of the user's is touched.
"""

from __future__ import annotations

from pathlib import Path

from desim.config import ConfigError
from desim.explore import output as O
from desim.explore.run import Diverged, Outcome
from desim.explore.search import explore, replay
from desim.explore.spec import Scenario, load_scenario
from desim.records import EXPLORE
from desim.rundir import RunDirError, Staging, check_target, write_json
from desim.units import UnitError, parse_wall_seconds


class ExploreError(Exception):
    """Bad input: the message is one line."""


def parse_time_limit(text: str | None) -> float | None:
    """``--time``: a duration with its unit (``30s``, ``5min``), in seconds."""
    if text is None:
        return None
    try:
        return parse_wall_seconds(text)
    except UnitError:
        raise ExploreError(
            f"--time: expected a positive duration with a unit, e.g. 30s or 5min (got {text!r})"
        ) from None


def _same(a: dict | None, b: dict | None) -> bool:
    keys = ("kind", "t_ns", "cpu", "message")
    return a is not None and b is not None and all(a.get(k) == b.get(k) for k in keys)


def _stage(out: Path, config: str | None) -> Staging:
    try:
        check_target(out, "explore", config=config)
        return Staging.begin(out)
    except RunDirError as exc:
        raise ExploreError(str(exc)) from None


def _commit(staging: Staging) -> None:
    """Mark the staged folder as desim explore's and move it into place."""
    (staging.tmp / EXPLORE).write_text("desim explore\n")
    try:
        staging.commit()
    except RunDirError as exc:
        raise ExploreError(str(exc)) from None


def _write_counterexample(tmp: Path, scenario: Scenario, out: Outcome, seed, source, lines):
    (tmp / O.REPLAY).write_text(O.dump_replay(O.replay_dict(scenario, out, seed, source)))
    (tmp / O.STEPS).write_text("\n".join(lines) + "\n")
    assert out.log is not None  # every schedule keeps its log
    out.log.write(tmp / O.TRACE)


def run_explore(
    path: str,
    budget: int | None,
    time_text: str | None,
    seed: int | None,
    out_dir: str | None,
    echo,
    note,
) -> int:
    """Search ``path``'s scenario; print with ``echo`` (lines), ``note`` (stderr); exit code."""
    if budget is not None and time_text is not None:
        raise ExploreError("--budget and --time: give one of them, not both")
    time_limit = parse_time_limit(time_text)
    try:
        scenario = load_scenario(path, seed)
    except ConfigError as exc:
        raise ExploreError(str(exc)) from None
    seed = scenario.config.seed
    target = Path(out_dir) if out_dir else Path("results") / "explore" / Path(path).stem
    staging = _stage(target, path)
    spec = scenario.spec
    with staging:
        what = f"for {time_text}" if time_limit else f"{budget or spec.budget:,} schedules"
        note(f"exploring {path} ({scenario.config.allocator.name}): {what}, seed {seed}")
        res = explore(scenario, seed, budget, time_limit)
        ops = tuple(dict.fromkeys(s.op for s in spec.script)) if spec.script else spec.ops
        cov = res.coverage.to_dict(ops)
        summary = {
            "scenario": str(path),
            "allocator": scenario.config.allocator.name,
            "seed": seed,
            "budget": None if time_limit else budget or spec.budget,
            "time_limit_s": time_limit,
            "wall_s": round(res.wall_s, 3),
            "expect": spec.expect,
            "violation": None,
            "coverage": cov,
        }
        if res.found is None:
            lines = O.coverage_lines(scenario, cov, seed, res.wall_s)
            if spec.expect != "safe":
                lines.append(
                    f"note: {path} expects {', '.join(spec.expect)}; none was found within "
                    "the budget"
                )
            write_json(staging.tmp / O.COVERAGE, summary)
            code = 0
        else:
            # Run the shrunk schedule once more, recording its trace; it must do the same.
            final = replay(scenario, res.found.script, res.found.choices)
            if not _same(final.failure, res.found.failure):
                raise RuntimeError("the shrunk schedule did not repeat on replay")
            found = (
                f"found after {res.first_found_after:,} schedules in {res.first_found_s:.1f} s; "
                f"shrunk in {res.shrink_runs:,} more ({res.wall_s:.1f} s in all, seed {seed})"
            )
            lines = O.counterexample_lines(scenario, final, found)
            _write_counterexample(staging.tmp, scenario, final, seed, str(path), lines)
            failure = final.failure
            assert failure is not None  # the shrunk schedule repeated its violation
            summary["violation"] = {
                **{k: failure[k] for k in ("kind", "t_ns", "cpu", "message")},
                "operations": len(final.script),
                "found_after_schedules": res.first_found_after,
                "found_after_s": round(res.first_found_s or 0.0, 3),
                "shrink_schedules": res.shrink_runs,
            }
            write_json(staging.tmp / O.COVERAGE, summary)
            code = 1
        _commit(staging)
    for line in lines:
        echo(line)
    files = [O.REPLAY, O.STEPS, O.TRACE, O.COVERAGE] if code else [O.COVERAGE]
    echo(f"written: {', '.join(str(target / f) for f in files)}")
    if code:
        echo(f"replay: desim explore --replay {target / O.REPLAY}")
    return code


def run_replay(path: str, out_dir: str | None, echo, note) -> int:
    """Rerun a replay file's schedule exactly; the same exit codes as a search."""
    try:
        scenario, script, choices, data = O.read_replay(path)
    except ConfigError as exc:
        raise ExploreError(str(exc)) from None
    staging = _stage(Path(out_dir), path) if out_dir else None
    try:
        out = replay(scenario, script, choices, trace=staging is not None)
    except Diverged as exc:
        if staging is not None:
            staging.abort()
        raise ExploreError(
            f"{path}: the run left the recorded schedule ({exc}); recorded by desim "
            f"{data.get('desim_version') or '?'}, this is {O.__version__}"
        ) from None
    recorded = data.get("violation")
    if out.failure is None:
        lines = [f"{path}: no violation on replay", "script:", *O.script_lines(out.script)]
        lines += ["steps (time from the script's start):", *O.step_lines(out)]
    else:
        lines = O.counterexample_lines(scenario, out, f"replay of {path}")
    if recorded and recorded.get("kind"):
        lines.append(
            "the recorded violation recurred exactly"
            if _same(out.failure, recorded)
            else f"note: recorded {recorded.get('kind')} at {recorded.get('t_ns')} ns; "
            "this run differs"
        )
    if staging is not None:
        with staging:
            seed = data.get("seed")
            if out.failure is not None:
                _write_counterexample(
                    staging.tmp, scenario, out, seed, data.get("scenario", ""), lines
                )
            else:
                (staging.tmp / O.STEPS).write_text("\n".join(lines) + "\n")
                assert out.log is not None  # every schedule keeps its log
                out.log.write(staging.tmp / O.TRACE)
            _commit(staging)
    for line in lines:
        echo(line)
    if staging is not None:
        assert out_dir  # staged only for an output directory
        echo(f"written: {Path(out_dir) / O.STEPS}, {Path(out_dir) / O.TRACE}")
    return 1 if out.failure is not None else 0
