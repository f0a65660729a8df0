"""``desim sweep``: plan, (dry-run | execute with one progress bar), aggregate. cli.py stays thin.

Exit status: 0 when every run finished, 1 when any failed (or is missing after ``--fail-fast``),
2 for a malformed experiment or option, 130 when interrupted (re-run the command to resume).
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import os
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from desim.config import ConfigError
from desim.sweep.experiment import Experiment, RunSpec, load_experiment
from desim.sweep.pool import default_jobs
from desim.sweep.runner import (
    SweepError,
    clean_stale,
    connect_dask,
    out_lock,
    run_dask,
    run_pool,
    run_serial,
    split,
)
from desim.units import UnitError, parse_wall_seconds

PROBE_FRACTION = 0.04
PROBE_POINTS = 8


def _probe_wall(spec: RunSpec, fraction: float) -> float:
    from desim.sweep.worker import compute_run

    cfg = copy.deepcopy(spec.config)
    from desim.config import validate
    from desim.distributions import relative_to

    with relative_to(spec.base_dir):
        dur = validate(copy.deepcopy(cfg)).duration
    cfg["duration"] = max(1, int(dur * fraction))
    cfg["warmup"] = 0
    probe = dataclasses.replace(spec, config=cfg)
    out = compute_run(probe)
    return out.wall_s if out.error is None else float("nan")


def estimate(specs: list[RunSpec], jobs: int) -> tuple[float, dict[int, float]]:
    """Estimated wall seconds for ``specs`` on ``jobs`` workers, from short probe runs.

    Each probed point runs at 4% and 8% of its duration; the difference gives the cost per
    simulated second and the intercept the fixed set-up cost, so set-up is not extrapolated.
    Up to 8 points evenly spread are probed; the others take the mean of the probed ones.
    Runs are then scheduled longest-first on ``jobs`` workers.
    """
    points = sorted({s.point: s for s in specs if s.invalid is None}.items())
    if not points:
        return 0.0, {}
    step = max(1, len(points) // PROBE_POINTS)
    probed = points[::step][:PROBE_POINTS]
    _probe_wall(probed[0][1], 0.01)  # warm imports and caches, discarded
    per: dict[int, float] = {}
    for pt, spec in probed:
        w1 = _probe_wall(spec, PROBE_FRACTION)
        w2 = _probe_wall(spec, 2 * PROBE_FRACTION)
        slope = max(w2 - w1, 0.0) / PROBE_FRACTION
        fixed = max(w1 - slope * PROBE_FRACTION, 0.0)
        per[pt] = fixed + slope
    known = [v for v in per.values() if v == v]
    fallback = sum(known) / len(known) if known else 0.0
    costs = sorted(
        (per.get(s.point, fallback) if s.invalid is None else 0.0 for s in specs), reverse=True
    )
    heap = [0.0] * max(1, jobs)
    for c in costs:
        heapq.heappush(heap, heapq.heappop(heap) + (c if c == c else fallback))
    return max(heap), per


def _mean(vals) -> float:
    ok = [v for v in vals if v == v]
    return sum(ok) / len(ok) if ok else float("nan")


def _fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _params(spec: RunSpec) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.params.items()) or "(base)"


def dry_run(
    exp: Experiment,
    specs: list[RunSpec],
    todo: list[RunSpec],
    jobs: int,
    dask: str | None,
    console: Console,
) -> int:
    todo_ids = {s.run_id for s in todo}
    t = Table(
        title=f"{exp.name}: {len(specs)} runs ({len(exp.points)} points × "
        f"{exp.replications} replications)",
        title_justify="left",
    )
    for c in ("run", "point", "rep", "parameters", "state"):
        t.add_column(c)
    for s in specs:
        state = (
            "[red]invalid: " + s.invalid + "[/]"
            if s.invalid
            else "to run"
            if s.run_id in todo_ids
            else "[green]done[/]"
        )
        t.add_row(s.run_id, str(s.point), str(s.replication), _params(s), state)
    console.print(t)
    invalid = sum(1 for s in specs if s.invalid)
    console.print(
        f"{len(specs)} runs: {len(specs) - len(todo)} done, {len(todo)} to run"
        + (f" ({invalid} invalid: they will be recorded as failed)" if invalid else "")
    )
    if todo and not dask:
        t0 = time.perf_counter()
        total, per = estimate(todo, jobs)
        console.print(
            f"estimated wall time: {_fmt_s(total)} on {jobs} job(s) "
            f"(probes of {len(per)} point(s) took {time.perf_counter() - t0:.1f} s; "
            f"one run ≈ {_fmt_s(_mean(per.values()))})"
        )
    elif todo:
        console.print("estimated wall time: not probed for --dask (depends on the cluster)")
    return 0


def _claim(outdir: Path, exp: Experiment, experiment: str, force: bool, dry: bool) -> None:
    """Check the sweep directory may be used; with ``force``, put aside another experiment's."""
    from desim.records import temp_name
    from desim.rundir import RunDirError, check_target, sweep_name

    try:
        target = check_target(outdir, "sweep", source=exp.name, config=experiment, force=force)
    except RunDirError as exc:
        raise SweepError(str(exc)) from None
    if dry or not target.exists or sweep_name(outdir) in (None, exp.name):
        return
    old = outdir.with_name(temp_name(outdir.name, os.getpid(), "old"))
    os.replace(outdir, old)  # --force: another experiment's sweep, replaced whole
    shutil.rmtree(old, ignore_errors=True)


def parse_run_timeout(text: str | None) -> float | None:
    """``--run-timeout``: a duration with its unit (``30s``, ``10min``), in seconds."""
    if text is None:
        return None
    try:
        return parse_wall_seconds(text)
    except UnitError:
        raise SweepError(
            "--run-timeout: expected a positive duration with a unit, e.g. 30s or 10min "
            f"(got {text!r})"
        ) from None


def sweep(
    experiment: str,
    jobs: int | None,
    out: str | None,
    dask: str | None,
    dry: bool,
    fail_fast: bool,
    console: Console,
    err: Console,
    run_timeout: str | None = None,
    force: bool = False,
) -> int:
    timeout_s = parse_run_timeout(run_timeout)
    try:
        exp = load_experiment(experiment)
    except ConfigError as exc:
        raise SweepError(str(exc)) from None
    jobs = jobs or default_jobs()
    outdir = Path(out) if out else Path("results") / exp.name
    runs_dir = outdir / "runs"
    _claim(outdir, exp, experiment, force, dry)
    specs = exp.runs()
    if dry:
        todo, _, _ = split(specs, runs_dir)
        return dry_run(exp, specs, todo, jobs, dask, console)

    from desim.rundir import SWEEP, write_json
    from desim.sweep.aggregate import aggregate

    client = connect_dask(dask) if dask else None

    command = ["desim", *sys.argv[1:]]
    with out_lock(outdir):
        stale = clean_stale(runs_dir)
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
            write_json(
                outdir / SWEEP, {"experiment": exp.name, "path": str(Path(experiment).resolve())}
            )
            (outdir / "experiment.yaml").write_bytes(Path(experiment).read_bytes())
        except OSError as exc:
            raise SweepError(f"{outdir}: cannot write there ({exc.strerror or exc})") from None
        todo, done, redo = split(specs, runs_dir)
        where = f"on Dask {dask}" if dask else f"on {jobs} jobs" if jobs > 1 else "serially"
        err.print(
            f"{exp.name}: {len(specs)} runs, {len(done)} already done, "
            f"{len(todo)} to run {where}"
            + (f" ({stale} unfinished temporary dir(s) removed)" if stale else "")
        )
        for run_id, why in redo.items():
            if why != "failed before":
                err.print(f"  {run_id}: redone ({why})")
        failed: list[str] = []
        interrupted = False
        with Progress(
            TextColumn("[bold]sweep"),
            BarColumn(),
            TextColumn(
                "{task.fields[done]} done · {task.fields[failed]} failed · "
                "{task.fields[left]} remaining"
            ),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        ) as bar:
            task = bar.add_task(
                "sweep",
                total=len(specs),
                completed=len(done),
                done=len(done),
                failed=0,
                left=len(todo),
            )
            state = {"done": len(done), "left": len(todo)}

            def on_result(run_id: str, error: str | None, wall: float) -> bool:
                state["left"] -= 1
                if error is None:
                    state["done"] += 1
                else:
                    failed.append(run_id)
                    last = [ln for ln in error.strip().splitlines() if ln.strip()][-1:]
                    bar.console.print(
                        f"[red]failed[/] {run_id}: {last[0] if last else ''} "
                        f"(traceback: {runs_dir / run_id / 'traceback.txt'})"
                    )
                bar.update(
                    task, advance=1, done=state["done"], failed=len(failed), left=state["left"]
                )
                return fail_fast and error is not None

            try:
                if client is not None:
                    run_dask(todo, runs_dir, command, exp.name, on_result, client, timeout_s)
                elif jobs <= 1 or len(todo) <= 1:
                    run_serial(todo, runs_dir, command, exp.name, on_result, timeout_s)
                else:
                    run_pool(
                        todo,
                        runs_dir,
                        command,
                        exp.name,
                        on_result,
                        min(jobs, len(todo)),
                        timeout_s,
                    )
            except KeyboardInterrupt:
                interrupted = True
        runs, _ = aggregate(exp, specs, outdir)
    counts = runs["status"].value_counts().to_dict()
    console.print(
        f"{exp.name}: "
        + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        + f"; tables: {outdir / 'runs.parquet'}, {outdir / 'points.parquet'}"
    )
    if interrupted:
        err.print("interrupted: finished runs are kept; re-run the same command to resume")
        return 130
    return (
        1 if failed or counts.get("missing") or counts.get("failed") or counts.get("stale") else 0
    )
