"""The ``desim`` command line: run, validate, list, explore, sweep, report, bench.

The rest of desim (config parsing with pint and pydantic, the model, pandas) is imported inside
the commands: ``desim --help`` stays quick, and ``desim sweep`` starts its process pool's fork
server before importing it, so the two imports overlap.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from desim import __version__

if TYPE_CHECKING:
    from desim.config import Config

console = Console(stderr=False, highlight=False)
err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 2) -> None:
    # One line whatever the terminal width: scripts and people grep for it.
    click.echo(f"desim: error: {' '.join(message.split())}", err=True)
    sys.exit(code)


# Top-level keys only an experiment file has (desim.sweep.experiment.TOP_KEYS less the ones a
# config shares): a config error on such a file is answered with where to check it instead.
EXPERIMENT_KEYS = ("name", "base", "set", "replications", "sweep", "stats", "report")


def _load(path: str, overrides: tuple[str, ...], seed: int | None, command: str) -> Config:
    from desim.config import ConfigError, load_config, read_yaml

    try:
        cfg = load_config(path, list(overrides), seed)
    except ConfigError as exc:
        try:
            top = read_yaml(path)
        except ConfigError:
            top = {}
        if "explore" in top:
            fail(
                f"{path} is an explore scenario (it has explore:); run it with: desim explore {path}"
            )
        keys = [k for k in top if k in EXPERIMENT_KEYS]
        if keys:
            hint = f"desim sweep {path}" + (" --dry-run" if command == "validate" else "")
            fail(
                f"{path} is an experiment file (it has {', '.join(k + ':' for k in keys[:2])}),"
                f" not a config; {'check' if command == 'validate' else 'run'} it with: {hint}"
            )
        fail(str(exc))
    if not cfg.workload and "workload" not in read_yaml(path):
        # Not an error (an idle machine is a valid baseline), but rarely what was meant; an
        # explicit ``workload: {}`` says it was.
        err.print(
            f"note: {path} has no workload: section, so the machine runs idle "
            "(configs/default.yaml has one to copy)",
            soft_wrap=True,
            highlight=False,
        )
    return cfg


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="desim")
def main() -> None:
    """desim: simulate freeing page tables by RCU on a multi-CPU Linux machine."""


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value by dotted key, e.g. --set machine.cpus=64.",
)
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Override the seed.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Results directory (default: results/<config name>). desim replaces only a "
    "run directory it wrote from the same config.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Also replace a run directory of another config, or one holding other files.",
)
@click.option("--quiet", is_flag=True, help="Print no progress bar or summary.")
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a Chrome/Perfetto trace-event JSON timeline to this file.",
)
@click.option(
    "--trace-window",
    default=None,
    metavar="START:END",
    help="Only trace this simulated time span, e.g. 100ms:110ms (keeps files small).",
)
def run(
    config: str,
    overrides: tuple[str, ...],
    seed: int | None,
    out: str | None,
    force: bool,
    quiet: bool,
    trace_file: str | None,
    trace_window: str | None,
) -> None:
    """Run one simulation from CONFIG and write its results."""
    from desim.rundir import RunDirError, Staging, check_target
    from desim.trace import tracer_for

    cfg = _load(config, overrides, seed, "run")
    outdir = Path(out) if out else Path("results") / Path(config).stem
    try:
        tracer = tracer_for(trace_file, trace_window)
    except ValueError as exc:
        fail(f"--trace-window: {exc}")
    if tracer is not None and (
        tracer.start >= cfg.duration or tracer.end != float("inf") and tracer.end > cfg.duration
    ):
        from desim.units import format_ns

        fail(
            f"--trace-window {trace_window}: reaches beyond the run, which lasts "
            f"{format_ns(cfg.duration)} (duration); give START:END within 0:"
            f"{format_ns(cfg.duration).replace(' ', '')}"
        )
    if trace_file is not None:
        tdir = Path(trace_file).resolve().parent
        if not tdir.is_dir() or not os.access(tdir, os.W_OK):
            fail(f"--trace {trace_file}: cannot write in {tdir}")
    source = str(Path(config).resolve())
    try:
        target = check_target(outdir, "run", source=source, config=config, force=force)
        staging = Staging.begin(outdir)  # created and probed before the simulation
    except RunDirError as exc:
        fail(str(exc))
    with staging:
        result = _simulate_into(staging, cfg, tracer, quiet, source)
        if tracer is not None:
            try:
                tracer.write(trace_file)
            except OSError as exc:
                fail(f"--trace {trace_file}: cannot write it ({exc.strerror or exc})")
    if not quiet:
        print_summary(result.summary, cfg, result.wall_s)
        print_violations(result.violations, result.summary, console)
        if tracer is not None:
            console.print(f"trace: {trace_file} ({tracer.summary()}); open it in ui.perfetto.dev")
    elif result.stopped_early:
        print_violations(result.violations, result.summary, err)
    gone = (
        f" and its report ({', '.join(f'{d}/' for d in target.derived)})" if target.derived else ""
    )
    # One line however long the path: scripts grep for it.
    console.print(
        f"results: {outdir}/" + (f", replacing the previous run{gone}" if target.exists else ""),
        soft_wrap=True,
    )
    if result.summary.get("safety.violations", 0) and cfg.safety.stop_on_first:
        sys.exit(1)


def _simulate_into(staging, cfg: Config, tracer, quiet: bool, source: str):
    """Simulate and fill ``staging``; a failed run is committed as a FAILED directory."""
    import traceback

    import yaml

    from desim import __version__
    from desim.engine import simulate
    from desim.results import fill_run
    from desim.rundir import RunDirError, write_failed
    from desim.units import format_ns

    command = ["desim", *sys.argv[1:]]
    try:
        if quiet:
            result = simulate(cfg, trace=tracer)
        elif not err.is_terminal:
            # No terminal to redraw a bar on (nohup, CI, a log file): a line every tenth.
            from desim.progress import ProgressLines

            lines = ProgressLines(
                cfg.duration,
                lambda now: f"{format_ns(now)} of {format_ns(cfg.duration)} simulated",
                sys.stderr,
            )
            result = simulate(cfg, trace=tracer, progress=lines)
        else:
            with Progress(
                TextColumn("[bold]simulating"),
                BarColumn(),
                TextColumn("{task.fields[sim]}"),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            ) as bar:
                task = bar.add_task("run", total=cfg.duration, sim="")
                result = simulate(
                    cfg,
                    trace=tracer,
                    progress=lambda now: bar.update(
                        task, completed=now, sim=f"{format_ns(now)} simulated"
                    ),
                )
    except KeyboardInterrupt:
        fail("interrupted: nothing was written", code=130)
    except Exception:
        tb = traceback.format_exc()
        write_failed(
            staging.tmp,
            yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False),
            {"desim_version": __version__, "seed": cfg.seed, "command": command, "source": source},
            tb,
        )
        try:
            staging.commit()
        except RunDirError as exc:
            fail(str(exc), code=1)
        fail(
            f"the run failed: {tb.strip().splitlines()[-1]} (traceback: "
            f"{staging.target / 'traceback.txt'})",
            code=1,
        )
    try:
        fill_run(result, staging.tmp, command, source=source)
        staging.commit()
    except OSError as exc:
        fail(f"{staging.target}: cannot write the results ({exc.strerror or exc})", code=1)
    except RunDirError as exc:
        fail(str(exc), code=1)
    return result


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def validate(config: str, overrides: tuple[str, ...]) -> None:
    """Check CONFIG without running it."""
    from desim.units import format_ns

    cfg = _load(config, overrides, None, "validate")
    console.print(
        f"{config}: ok ({cfg.machine.cpus} CPUs, allocator {cfg.allocator.name}, "
        f"workload {', '.join(cfg.workload) or 'none'}, {format_ns(cfg.duration)})"
    )


@main.command(name="list")
def list_cmd() -> None:
    """Show the registered allocators, workload elements and preset configs."""
    from rich.markup import escape

    # desim.config first: its default allocator section loads the allocator registry, and
    # loading the registry before desim.config re-enters it from inside an allocator module's
    # own import (generic -> desim.config -> the registry -> s390_fullpage -> generic)
    import desim.config  # noqa: F401
    from desim.allocators import ALLOCATORS
    from desim.workloads import ELEMENTS
    from desim.workloads.presets import presets

    # Descriptions wrap inside their column (rich folds at word boundaries); nothing is cut.
    for title, reg in (("allocators", ALLOCATORS), ("workload elements", ELEMENTS)):
        t = Table(title=title, title_justify="left", show_header=False, box=None)
        t.add_column(no_wrap=True)
        t.add_column(overflow="fold")
        for name, cls in reg.items():
            t.add_row(f"[bold]{name}[/]", escape(cls.summary))
        console.print(t)
    t = Table(title="presets (desim run <path>)", title_justify="left", show_header=False, box=None)
    t.add_column(no_wrap=True)
    t.add_column(overflow="fold")
    for name, path, text in presets():
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        t.add_row(f"[bold]{name}[/]", f"{escape(text)}\n[dim]{escape(str(shown))}[/]")
    console.print(t)


@main.command()
@click.option("--quick", is_flag=True, help="Smaller runs: a smoke test of the benchmark itself.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="bench.json",
    show_default=True,
    help="Where to write the figures as JSON.",
)
def bench(quick: bool, out: str) -> None:
    """Measure desim's speed against bare SimPy (on demand; takes a few minutes)."""
    from desim import bench as b

    res = b.run_all(quick=quick, progress=lambda msg: err.print(msg))
    ok = b.verdicts(res)
    t = Table(title="desim bench", title_justify="left")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("target")
    for k, v in res.items():
        target = b.TARGETS.get(k)
        mark = (
            ""
            if target is None
            else (f"{'[green]met' if ok[k] else '[red]missed'}[/] ({target[0]} {target[1]:,})")
        )
        t.add_row(k, f"{v:,.3f}" if isinstance(v, float) else str(v), mark)
    console.print(t)
    b.write(res, out)
    console.print(f"written: {out}")


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="results/probe",
    show_default=True,
    help="Where to write probe.json (a new directory, or a probe desim wrote).",
)
@click.option("--quick", is_flag=True, help="Fewer samples: about ten seconds.")
def probe(out: str, quick: bool) -> None:
    """Measure this Linux host (grace periods, faults, fork/exit) and set desim's model beside it."""
    import yaml

    from desim import probe as pr
    from desim.rundir import RunDirError, Staging, check_target, write_json

    if sys.platform != "linux":
        fail(f"desim probe measures a Linux kernel; this is {sys.platform}")
    try:
        check_target(out, "probe")
        staging = Staging.begin(out)
    except RunDirError as exc:
        fail(str(exc))
    with staging:
        facts = pr.machine_facts()
        try:
            dists, missing = pr.measure(
                pr.QUICK if quick else pr.Sizes(), progress=lambda s: err.print(f"measuring {s}")
            )
            measured = {k: d.summary() for k, d in dists.items()}
            prof = pr.profile(facts, measured)
            simulated = pr.simulate_probe(prof, measured, quick, progress=lambda s: err.print(s))
        except KeyboardInterrupt:
            fail("interrupted: nothing was written", code=130)
        rows = pr.compare(facts, measured, simulated)
        missing = facts["missing"] + missing
        write_json(
            staging.tmp / "probe.json",
            {
                "machine": facts,
                "measured": measured,
                "simulated": simulated,
                "comparison": rows,
                "tolerance": pr.TOLERANCE,
                "missing": missing,
            },
        )
        config = {k: v for k, v in prof.items() if not k.startswith("_")}
        (staging.tmp / "profile.yaml").write_text(
            f"# desim profile of {facts['release']} ({facts['cpus']} CPUs), written by desim "
            "probe:\n# machine and rcu read from the host; costs fitted to its measurements.\n"
            + yaml.safe_dump(config, sort_keys=False)
        )
        (staging.tmp / "PROBE").write_text("desim probe\n")
        staging.commit()
    print_probe(facts, measured, rows, missing)
    console.print(f"written: {Path(out) / 'probe.json'}, {Path(out) / 'profile.yaml'}")


def print_probe(facts: dict, measured: dict, rows: list[dict], missing: list[str]) -> None:
    from desim.probe import TOLERANCE
    from desim.units import format_ns

    console.print(
        f"[bold]{facts['release']}[/] ({facts['version']}), {facts['cpus']} CPUs, "
        f"HZ={facts['hz'] or '?'}, {facts['rcu_flavour']} RCU, preempt="
        f"{facts['preempt'] or '?'}, lazy RCU {'on' if facts['rcu_lazy'] else 'off'}, "
        f"{facts['page_size'] // 1024} KiB pages"
    )
    t = Table(
        title=f"measured on this host and simulated by desim (p50; verdict within "
        f"±{TOLERANCE:.0%})",
        title_justify="left",
    )
    for c in (
        "scenario",
        "n",
        "measured p50",
        "p99",
        "p50 over repeats",
        "desim p50",
        "ratio",
        "verdict",
    ):
        t.add_column(c, justify="left" if c in ("scenario", "verdict") else "right")
    for r in rows:
        m = measured[r["scenario"]]
        spread = (
            f"{format_ns(m['repeat_p50_min'])}–{format_ns(m['repeat_p50_max'])}"
            if "repeat_p50_min" in m
            else ""
        )
        colour = {"agrees": "green", "differs": "red"}.get(r["verdict"], "")
        t.add_row(
            PROBE_NAMES.get(r["scenario"], r["scenario"]),
            str(m["n"]),
            format_ns(m["p50"]),
            format_ns(m["p99"]),
            spread,
            format_ns(r["simulated_p50"]) if r["simulated_p50"] else "-",
            f"{r['ratio']:.2f}" if r["ratio"] else "-",
            f"[{colour}]{r['verdict']}[/]" if colour else r["verdict"],
        )
    console.print(t)
    for r in rows:
        if r["why"]:
            console.print(
                f"{PROBE_NAMES.get(r['scenario'], r['scenario'])}: {r['why']}", soft_wrap=True
            )
    for m in missing:
        err.print(f"not measured: {m}", soft_wrap=True)


PROBE_NAMES = {
    "sync_rcu_idle": "synchronize_rcu, idle",
    "sync_rcu_busy": "synchronize_rcu, all CPUs busy in user mode",
    "fault": "first-touch anonymous fault (batch means)",
    "spawn": "fork + exit + waitpid",
    "spawn_sync": "fork + synchronize_rcu + exit + waitpid",
}


@main.command(context_settings={"allow_interspersed_args": False})
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="trace.parquet",
    show_default=True,
    help="The trace file to write (an existing file needs --force).",
)
@click.option(
    "--import",
    "import_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Convert the text of trace-cmd report or perf script (or a tracefs trace) instead "
    "of recording.",
)
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def record(out: str, import_file: str | None, force: bool, command: tuple[str, ...]) -> None:
    """Trace COMMAND (after --) on this Linux host into a trace file for the replay element.

    desim record --out build.parquet -- make -j2
    """
    import numpy as np

    from desim.hosttrace import events as hev
    from desim.hosttrace import format as hfmt

    target = Path(out)
    if (import_file is None) == (not command):
        fail(
            "give a command to record (desim record --out FILE -- COMMAND...) "
            "or --import FILE, not both"
            if command
            else "nothing to record: give a command after --, e.g. desim record -- make -j2, "
            "or --import FILE"
        )
    if target.exists() and not (force and target.is_file()):
        fail(
            f"--out {out}: exists; give --force to replace it"
            if target.is_file()
            else f"--out {out}: exists and is not a file"
        )
    if not target.parent.is_dir():
        fail(f"--out {out}: no directory {target.parent}")
    status = 0
    if import_file is not None:
        import stat

        try:
            if not stat.S_ISREG(os.stat(import_file).st_mode):
                fail(f"--import {import_file}: not a regular file")
            # streamed: perf script text of a long run is far larger than any config
            with open(import_file, encoding="utf-8", errors="replace") as fh:
                cols, meta, notes = hev.from_text(fh, meta={"command": "", "kernel": ""})
        except OSError as exc:
            fail(f"--import {import_file}: cannot read ({exc.strerror})")
        meta["imported_from"] = str(Path(import_file).resolve())
    else:
        from desim.hosttrace import tracefs

        err.print(f"recording: {' '.join(command)}", highlight=False)
        try:
            text, facts = tracefs.record(list(command))
        except tracefs.RecordError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted: tracefs restored, nothing was written", code=130)
        status = int(facts["status"])  # type: ignore[call-overload]
        cols, meta, notes = hev.from_text(
            text.splitlines(),
            skip_until_exec=[int(facts["root_pid"])],  # type: ignore[call-overload]
            meta={
                "source": "tracefs",
                "command": " ".join(command),
                "kernel": facts["kernel"],
                "cpus": facts["cpus"],
                "lost_events": facts["lost_events"],
                "unseen": facts["missing"],
                "wall_s": facts["wall_s"],
                "status": status,
            },
        )
        for ev, loss in dict(facts["missing"]).items():  # type: ignore[call-overload]
            notes.insert(0, f"this kernel has no {ev}: not seen: {loss}")
    if not cols["time_ns"]:
        fail(f"{import_file or ' '.join(command)}: no process events in the trace; nothing written")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        hfmt.write(tmp, cols, meta)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    counts = hfmt.counts({k: np.asarray(v) for k, v in cols.items()})
    t = Table(title=f"{target}", title_justify="left", show_header=False, box=None)
    t.add_column(no_wrap=True)
    t.add_column(justify="right")
    for k, v in counts.items():
        t.add_row(k, f"{v:,}")
    console.print(t)
    for n in notes:
        err.print(f"note: {n}", highlight=False, soft_wrap=True)
    console.print(f"written: {target}")
    if status:
        err.print(f"note: the command exited with status {status}", highlight=False)
        sys.exit(status if 0 < status < 256 else 1)


@main.command(name="explore")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--budget",
    type=click.IntRange(min=1),
    default=None,
    help="Schedules to try (default: the scenario's explore.budget).",
)
@click.option(
    "--time", "time_text", default=None, metavar="DURATION", help="Search this long, e.g. 30s."
)
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Override the seed.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to write the result (default: results/explore/<scenario name>).",
)
@click.option(
    "--replay",
    "replay_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Rerun a counterexample.yaml exactly instead of searching.",
)
def explore_cmd(
    config: str | None,
    budget: int | None,
    time_text: str | None,
    seed: int | None,
    out: str | None,
    replay_file: str | None,
) -> None:
    """Search the interleavings of a small scenario for a schedule that breaks its design.

    Exit status 1 with the shortest failing schedule (printed, and written as a replayable
    file and a Perfetto trace), 0 with what was covered when none breaks it, 2 on bad input.
    """
    import desim.config  # noqa: F401 - before the registries: desim.config looks designs up
    from desim.explore.command import ExploreError, run_explore, run_replay

    def echo(line: str) -> None:
        console.print(line, soft_wrap=True, markup=False, highlight=False)

    def note(line: str) -> None:
        err.print(line, soft_wrap=True, markup=False, highlight=False)

    try:
        if replay_file is not None:
            if config is not None or budget is not None or time_text or seed is not None:
                fail(
                    "--replay FILE reruns a recorded schedule: give no CONFIG, --budget, "
                    "--time or --seed with it"
                )
            code = run_replay(replay_file, out, echo, note)
        elif config is None:
            fail("explore: give a scenario CONFIG, or --replay FILE")
        else:
            code = run_explore(config, budget, time_text, seed, out, echo, note)
    except ExploreError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted: nothing was written", code=130)
    sys.exit(code)


@main.command()
@click.argument("experiment", type=click.Path(dir_okay=False))
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Parallel local processes (default: the core count).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Sweep directory (default: results/<experiment name>).",
)
@click.option(
    "--dask",
    metavar="ADDRESS",
    default=None,
    help="Run on an existing Dask cluster, e.g. tcp://host:8786 (needs desim[dask]).",
)
@click.option("--dry-run", is_flag=True, help="List the runs and estimate the wall time.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed run.")
@click.option(
    "--force", is_flag=True, help="Replace a sweep directory holding another experiment's sweep."
)
@click.option(
    "--run-timeout",
    metavar="DURATION",
    default=None,
    help="Stop a run after this wall time (e.g. 30s, 10min) and record it as failed.",
)
def sweep(
    experiment: str,
    jobs: int | None,
    out: str | None,
    dask: str | None,
    dry_run: bool,
    fail_fast: bool,
    force: bool,
    run_timeout: str | None,
) -> None:
    """Run every point × replication of EXPERIMENT; re-running resumes."""
    from desim.sweep.pool import default_jobs, start_pool_server

    if not dry_run and not dask and ((jobs or default_jobs()) > 1 or run_timeout):
        start_pool_server()  # it imports desim for the workers while this process does too
    from desim.sweep.command import sweep as run_sweep
    from desim.sweep.runner import SweepError

    try:
        code = run_sweep(
            experiment,
            jobs,
            out,
            dask,
            dry_run,
            fail_fast,
            console,
            err,
            force=force,
            run_timeout=run_timeout,
        )
    except SweepError as exc:
        fail(str(exc))
    sys.exit(code)


@main.command()
@click.argument("results", type=click.Path(file_okay=False))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to write report.html and the figures (default: RESULTS/report).",
)
@click.option(
    "--experiment",
    "spec_file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Take the report: section from this YAML instead.",
)
def report(results: str, out: str | None, spec_file: str | None) -> None:
    """Write an HTML report (figures + tables) of a run or sweep directory; never re-runs."""
    from desim.report import ReportSpecError, ResultsError, make_report

    try:
        r = make_report(results, out, spec_file)
    except (ResultsError, ReportSpecError) as exc:
        fail(str(exc))
    console.print(
        f"report: {r.html} ({len(r.figures)} figures, PNG and SVG beside it; {r.seconds:.1f} s)"
    )
    for name, reason in r.skipped:
        console.print(f"  skipped {name}: {reason}", soft_wrap=True)
    for run_id, why in r.unreadable:
        err.print(f"  left out {run_id}: cannot read it ({why})", soft_wrap=True)


def print_summary(s: dict, cfg: Config, wall_s: float) -> None:
    from desim.units import format_bytes, format_ns

    def g(k):
        return s.get(k, float("nan"))

    t = Table(
        title=f"desim: {cfg.allocator.name}, {cfg.machine.cpus} CPUs, "
        f"{format_ns(g('sim.duration_ns'))} simulated",
        title_justify="left",
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("detail", justify="left")
    rows = [
        (
            "page faults",
            f"{g('fault.count'):,.0f}",
            f"p50 {format_ns(g('fault.p50_ns'))}, p99 {format_ns(g('fault.p99_ns'))}",
        ),
        (
            "fault retries (table retracted)",
            f"{g('count.fault.retries') if 'count.fault.retries' in s else 0:,.0f}",
            "",
        ),
        (
            "tables allocated / deferred / gathered",
            f"{s.get('count.tables.allocated', 0):,.0f} / {s.get('count.tables.deferred', 0):,.0f}"
            f" / {s.get('count.tables.gathered', 0):,.0f}",
            "",
        ),
        (
            "mms created / exited",
            f"{s.get('count.mm.created', 0):,.0f} / {s.get('count.mm.exited', 0):,.0f}",
            "",
        ),
        (
            "grace periods",
            f"{g('rcu.gps_completed'):,.0f}",
            f"mean {format_ns(g('rcu.gp.mean_ns'))}, max {format_ns(g('rcu.gp.max_ns'))}",
        ),
        (
            "RCU callbacks invoked",
            f"{g('rcu.callbacks_invoked'):,.0f}",
            f"backlog max {g('rcu.callbacks_pending_max'):,.0f}",
        ),
        (
            "free-to-reuse delay",
            format_ns(g("free_to_reuse.mean_ns")) if s.get("free_to_reuse.count") else "-",
            "mean",
        ),
    ]
    from desim.records import MEMORY_COLUMNS

    for kind in MEMORY_COLUMNS:
        rows.append(
            (
                f"memory {kind}",
                format_bytes(g(f"mem.{kind}.mean_bytes")),
                f"peak {format_bytes(g(f'mem.{kind}.peak_bytes'))}",
            )
        )
    for k in sorted(s):
        if k.startswith("lock.") and k.endswith(".acquisitions"):
            cls = k[5:-13]
            rows.append(
                (
                    f"lock {cls}",
                    f"{s[k]:,.0f}",
                    f"{100 * s[f'lock.{cls}.contention_ratio']:.2f}% contended, "
                    f"max wait {format_ns(s[f'lock.{cls}.wait_max_ns'])}",
                )
            )
    rows.append(("IPIs sent", f"{g('ipi.sent'):,.0f}", ""))
    if "safety.violations" in s:
        v = s["safety.violations"]
        kinds = ", ".join(
            f"{k[7:]} {s[k]:.0f}"
            for k in sorted(s)
            if k.startswith("safety.") and k != "safety.violations" and s[k]
        )
        rows.append(("safety violations", f"{'[red]' if v else '[green]'}{v:,.0f}[/]", kinds))
    rows.append(
        (
            "simulated events / wall s",
            f"{g('sim.events') / wall_s:,.0f}",
            f"{g('sim.events'):,.0f} events in {wall_s:.2f} s",
        )
    )
    for r in rows:
        t.add_row(*r)
    console.print(t)


def print_violations(violations: list[dict], s: dict, con: Console, shown: int = 5) -> None:
    """The first few safety violations; with ``stop_on_first``, the one with its history."""
    from rich.markup import escape

    from desim.model.safety import format_violation
    from desim.units import format_ns

    if not violations:
        return
    if s.get("safety.violations", 0) == 1 and len(violations) == 1 and violations[0]["history"]:
        lines = format_violation(violations[0])
        con.print(f"[red]safety violation:[/] {escape(lines[0])}")
        for line in lines[1:]:
            con.print(escape(line))
        return
    t = Table(
        title=f"first safety violations ({s.get('safety.violations', 0):,.0f} in all; "
        "histories in violations.json)",
        title_justify="left",
    )
    for col in ("time", "cpu", "kind", "message"):
        t.add_column(col, justify="right" if col == "time" else "left")
    for v in violations[:shown]:
        t.add_row(
            format_ns(v["t_ns"]),
            "-" if v["cpu"] < 0 else f"cpu{v['cpu']}",
            v["kind"],
            escape(v["message"]),
        )
    con.print(t)


if __name__ == "__main__":
    main()
