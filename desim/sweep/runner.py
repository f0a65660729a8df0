"""Execute a sweep's runs: serially, on a local process pool, or on a Dask cluster; resume.

Resuming is by directory state alone: ``<out>/runs/<run_id>/`` complete and readable
(``desim.rundir.check_complete``) with a manifest whose digest matches the run's inputs means
finished; anything else (absent, ``FAILED``, damaged, another digest) is run again, and said so. Hidden temporary directories left by a killed sweep are deleted first; a lock file
(``<out>/.lock``, flock) keeps two sweeps from writing the same directory at once.

A run fails alone. On the process pool (pebble's ``ProcessPool``), a worker that dies (the OOM
killer, a crash) fails only the run it was running, and the pool starts a fresh worker; should
the pool break as a whole all the same, the runs not finished are put on a new pool, at most
``POOL_STARTS`` times. ``run_timeout`` (seconds, ``--run-timeout``) bounds each run's wall time
from the moment a worker takes it up: a run over it is stopped, its worker killed and replaced,
and the run recorded as failed. Serial runs with a time limit run in a one-worker pool for that.
On Dask the run is recorded as failed by the client and its future cancelled; Dask cannot stop
a task that has started, so its worker thread stays busy until the run ends by itself.
"""

from __future__ import annotations

import fcntl
import math
import os
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future, as_completed
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

from pebble import ProcessExpired, ProcessPool

from desim import rundir
from desim.rundir import FAILED, check_complete, manifest_of
from desim.sweep.experiment import RunSpec
from desim.sweep.pool import describe_exit, pool_context, worker_init
from desim.sweep.worker import Outcome, compute_run, run_and_write, write_outcome

# How many times the local pool is started for one sweep at most: it is started again only when
# it broke as a whole (pebble's BrokenProcessPool), not when one worker died.
POOL_STARTS = 3
# How often the Dask client checks its runs against --run-timeout (seconds).
DASK_TICK_S = 0.2

OnResult = Callable[[str, "str | None", float], bool]  # returns True to stop the sweep


class SweepError(Exception):
    """A sweep cannot start; the message is one line."""


def redo_reason(run_dir: Path, spec: RunSpec) -> str | None:
    """Why a run must be (re)done: ``None`` when its directory is finished, complete and of
    these inputs; a short reason when a directory is there but cannot be trusted."""
    if not run_dir.exists() or (run_dir / FAILED).exists():
        return "" if not run_dir.exists() else "failed before"
    why = check_complete(run_dir)
    if why is not None:
        return f"incomplete: {why}"
    if manifest_of(run_dir).get("digest") != spec.digest:
        return "its inputs changed"
    return None


def is_done(run_dir: Path, spec: RunSpec) -> bool:
    return redo_reason(run_dir, spec) is None


def clean_stale(runs_dir: Path) -> int:
    """Delete hidden temporary directories an interrupted sweep left behind (the caller holds
    the sweep's lock, so no writer of them is alive)."""
    return rundir.clean_stale(runs_dir, all_pids=True)


def split(
    specs: list[RunSpec], runs_dir: Path
) -> tuple[list[RunSpec], list[RunSpec], dict[str, str]]:
    """(to do, already done, {run_id: why an existing directory is redone})."""
    todo, done, redo = [], [], {}
    for s in specs:
        why = redo_reason(runs_dir / s.run_id, s)
        if why is None:
            done.append(s)
        else:
            todo.append(s)
            if why:
                redo[s.run_id] = why
    return todo, done, redo


@contextmanager
def out_lock(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepError(f"{out}: another desim sweep is writing there") from None
        yield
    finally:
        os.close(fd)


def timeout_error(run_timeout: float) -> str:
    """The failed run's message: its last line is what the manifest and the progress bar show."""
    return f"RunTimeout: exceeded --run-timeout {run_timeout:g} s; the run was stopped\n"


def _fail(
    spec: RunSpec, error: str, wall: float, runs_dir: Path, command: list[str], experiment: str
) -> tuple[str, str | None, float]:
    return write_outcome(Outcome(spec, None, error, wall), runs_dir, command, experiment)


def run_serial(
    todo: Iterable[RunSpec],
    runs_dir: Path,
    command: list[str],
    experiment: str,
    on_result: OnResult,
    run_timeout: float | None = None,
) -> None:
    if run_timeout is not None:
        # Only a process can be stopped from outside, whatever it is doing.
        run_pool(list(todo), runs_dir, command, experiment, on_result, 1, run_timeout)
        return
    for spec in todo:
        if on_result(*run_and_write(spec, str(runs_dir), command, experiment)):
            return


def run_pool(
    todo: list[RunSpec],
    runs_dir: Path,
    command: list[str],
    experiment: str,
    on_result: OnResult,
    jobs: int,
    run_timeout: float | None = None,
) -> None:
    """Compute and write each run in a pool worker; see the module docstring for failures.

    Why pebble: concurrent.futures' ProcessPoolExecutor and loky both mark every pending future
    broken when one worker dies; pebble fails only that worker's task, restarts the worker, and
    has a per-task timeout that kills the worker running an overdue task. It takes the fork
    server context, so workers still start warm.
    """
    pending = list(todo)
    for start in range(1, POOL_STARTS + 1):
        pool = ProcessPool(max_workers=jobs, initializer=worker_init, context=pool_context())
        broken: list[tuple[RunSpec, str]] = []
        try:
            futs: dict[Future, RunSpec] = {
                pool.schedule(
                    run_and_write, args=(s, str(runs_dir), command, experiment), timeout=run_timeout
                ): s
                for s in pending
            }
            for f in as_completed(futs):
                spec = futs[f]
                try:
                    res = f.result()
                except FutureTimeout:
                    res = _fail(
                        spec,
                        timeout_error(run_timeout or 0.0),
                        run_timeout or math.nan,
                        runs_dir,
                        command,
                        experiment,
                    )
                except ProcessExpired as exc:
                    res = _fail(
                        spec,
                        f"WorkerDied: the worker process running this run died: "
                        f"{describe_exit(exc.exitcode)}\n",
                        math.nan,
                        runs_dir,
                        command,
                        experiment,
                    )
                except BrokenProcessPool:  # the pool as a whole: try the run on a new one
                    broken.append((spec, traceback.format_exc()))
                    continue
                except Exception:  # e.g. an unpicklable spec: this run alone
                    res = _fail(
                        spec, traceback.format_exc(), math.nan, runs_dir, command, experiment
                    )
                if on_result(*res):
                    return
        finally:
            # stop() kills workers still computing: a stopped sweep leaves nothing running.
            pool.stop()
            pool.join()
        if not broken:
            return
        pending = [spec for spec, _ in broken]
        if start == POOL_STARTS:
            for spec, error in broken:
                error += f"the process pool broke {POOL_STARTS} times; not tried again\n"
                if on_result(*_fail(spec, error, math.nan, runs_dir, command, experiment)):
                    return


def connect_dask(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise SweepError(
            "--dask needs dask.distributed, an optional dependency: pip install 'desim[dask]'"
        ) from None
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise SweepError(
            f"--dask {address}: cannot connect ({' '.join(str(exc).split())})"
        ) from None


def compute_on_dask(spec: RunSpec, started_topic: str | None) -> Outcome:
    """The Dask task: tell the client the run has started (its time limit counts from then)."""
    if started_topic is not None:
        from distributed import get_worker

        get_worker().log_event(started_topic, spec.run_id)
    return compute_run(spec)


def run_dask(
    todo: list[RunSpec],
    runs_dir: Path,
    command: list[str],
    experiment: str,
    on_result: OnResult,
    client,
    run_timeout: float | None = None,
) -> None:
    """Workers compute; this process writes each result as it arrives (no shared FS needed).

    ``client`` comes from ``connect_dask`` (called before anything is written) and is closed here.
    Input files travel inside each ``RunSpec``; workers read nothing of this host's files.
    """
    from distributed import as_completed as dask_completed

    started: dict[str, float] = {}
    topic = None
    if run_timeout is not None:
        topic = f"desim-run-started-{client.id}"  # this sweep's runs only

        def on_started(event: tuple) -> None:  # (time, run_id); a retried run restarts
            started[event[1]] = time.monotonic()

        client.subscribe_topic(topic, on_started)
    try:
        futs = {client.submit(compute_on_dask, s, topic, pure=False): s for s in todo}
        pending = set(futs)
        arrivals = dask_completed(list(futs))
        while pending:
            # With a time limit, wake up regularly to look at the runs in flight.
            done = {f for f in arrivals.next_batch(block=topic is None) if f in pending}
            if topic is not None and not done:
                time.sleep(DASK_TICK_S)
            now = time.monotonic()
            overdue = (
                []
                if run_timeout is None
                else [
                    f
                    for f in pending - done
                    if now - started.get(futs[f].run_id, now) > run_timeout
                ]
            )
            for f in [*done, *overdue]:
                pending.discard(f)
                spec = futs[f]
                if f in done:
                    try:
                        out = f.result()
                    except Exception:  # lost worker, cancelled, unpicklable result ...
                        out = Outcome(spec, None, traceback.format_exc(), math.nan)
                    f.release()
                    res = write_outcome(out, runs_dir, command, experiment)
                else:
                    f.cancel()
                    res = _fail(
                        spec,
                        timeout_error(run_timeout or 0.0),
                        now - started[spec.run_id],
                        runs_dir,
                        command,
                        experiment,
                    )
                if on_result(*res):
                    client.cancel(list(pending))
                    return
    finally:
        try:
            if topic is not None:
                client.unsubscribe_topic(topic)
        finally:
            client.close()
