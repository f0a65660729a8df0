"""Execute a sweep's runs: serially, on a local process pool, or on a Dask cluster; resume.

Resuming is by directory state alone: ``<out>/runs/<run_id>/`` complete and readable
(``desim.rundir.check_complete``) with a manifest whose digest matches the run's inputs means
finished; anything else (absent, ``FAILED``, damaged, another digest) is run again, and said so. Hidden temporary directories left by a killed sweep are deleted first; a lock file
(``<out>/.lock``, flock) keeps two sweeps from writing the same directory at once.
"""

from __future__ import annotations

import fcntl
import math
import os
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

from desim import rundir
from desim.rundir import FAILED, check_complete, manifest_of
from desim.sweep.experiment import RunSpec
from desim.sweep.pool import pool_context
from desim.sweep.worker import Outcome, compute_run, run_and_write, write_outcome

OnResult = Callable[[str, "str | None", float], bool]   # returns True to stop the sweep


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


def split(specs: list[RunSpec], runs_dir: Path
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


def run_serial(todo: Iterable[RunSpec], runs_dir: Path, command: list[str], experiment: str,
               on_result: OnResult) -> None:
    for spec in todo:
        if on_result(*run_and_write(spec, str(runs_dir), command, experiment)):
            return


def run_pool(todo: list[RunSpec], runs_dir: Path, command: list[str], experiment: str,
             on_result: OnResult, jobs: int) -> None:
    ex = ProcessPoolExecutor(max_workers=jobs, mp_context=pool_context())
    try:
        futs = {ex.submit(run_and_write, s, str(runs_dir), command, experiment): s for s in todo}
        for f in as_completed(futs):
            try:
                res = f.result()
            except Exception:          # the worker died (OOM kill, BrokenProcessPool, ...)
                spec = futs[f]
                res = write_outcome(Outcome(spec, None, traceback.format_exc(), math.nan),
                                    runs_dir, command, experiment)
            if on_result(*res):
                return
    finally:
        procs = list((getattr(ex, "_processes", None) or {}).values())
        ex.shutdown(wait=False, cancel_futures=True)
        for p in procs:                # a stopped sweep should not leave runs computing
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)


def connect_dask(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise SweepError("--dask needs dask.distributed, an optional dependency: "
                         "pip install 'desim[dask]'") from None
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise SweepError(f"--dask {address}: cannot connect ({' '.join(str(exc).split())})") from None


def run_dask(todo: list[RunSpec], runs_dir: Path, command: list[str], experiment: str,
             on_result: OnResult, client) -> None:
    """Workers compute; this process writes each result as it arrives (no shared FS needed).

    ``client`` comes from ``connect_dask`` (called before anything is written) and is closed here.
    """
    from distributed import as_completed as dask_completed

    try:
        futs = {client.submit(compute_run, s, pure=False): s for s in todo}
        pending = set(futs)
        for f in dask_completed(list(futs)):
            pending.discard(f)
            spec = futs[f]
            try:
                out = f.result()
            except Exception:          # lost worker, cancelled, unpicklable result ...
                out = Outcome(spec, None, traceback.format_exc(), math.nan)
            f.release()
            if on_result(*write_outcome(out, runs_dir, command, experiment)):
                client.cancel(list(pending))
                return
    finally:
        client.close()
