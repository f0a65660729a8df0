"""One run of a sweep, as a worker executes it: compute, then write its directory atomically.

Split in two so each executor can put the file writing where the files live: a local process
pool computes *and* writes in the worker; on Dask the worker only computes (its result travels
back pickled) and the client writes, so the cluster needs no shared filesystem.

A finished run is a directory filled by ``desim.results.fill_run`` (``DONE`` written last) and
swapped into place by ``desim.rundir.Staging``, whose manifest
also names the run, its swept parameters and its seed (``seed_entropy`` + ``seed_spawn_key``:
``rerun()`` rebuilds exactly that ``SeedSequence``). A failed run gets a directory too, written
the same way (``desim.rundir.write_failed``) and holding ``config.yaml`` (the snapshot it was
given), ``manifest.json`` with ``status: failed``, ``traceback.txt``, and a ``FAILED`` marker
instead of ``DONE`` — so a re-run tries it again (the fault may have been fixed meanwhile).
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from desim.sweep.experiment import RunSpec

if TYPE_CHECKING:
    from desim.engine import RunResult


@dataclass
class Outcome:
    spec: RunSpec
    result: RunResult | None  # when ok
    error: str | None  # full traceback when failed
    wall_s: float


def compute_run(spec: RunSpec) -> Outcome:
    """Validate the config and simulate; never raises for a fault of the run itself."""
    t0 = time.perf_counter()
    try:
        if spec.invalid is not None:
            raise ValueError(spec.invalid)
        from desim.config import validate
        from desim.distributions import relative_to
        from desim.engine import simulate
        from desim.rng import Streams

        # Input files come from the spec, not the disk: the run uses the content its digest
        # covers, and a Dask worker on another host needs no copy of them.
        with relative_to(spec.base_dir), spec.input_files():
            cfg = validate(copy.deepcopy(spec.config))
            # elements reading a file of their own at start (a replay) read the spec's copy
            result = simulate(cfg, streams=Streams(spec.seed_sequence()))
        return Outcome(spec, result, None, time.perf_counter() - t0)
    except Exception:
        return Outcome(spec, None, traceback.format_exc(), time.perf_counter() - t0)


def manifest_extra(spec: RunSpec, command: list[str], experiment: str) -> dict:
    return {
        "experiment": experiment,
        "run_id": spec.run_id,
        "point": spec.point,
        "replication": spec.replication,
        "params": spec.params,
        "seed_entropy": str(spec.entropy),
        "seed_spawn_key": list(spec.spawn_key),
        "digest": spec.digest,
        "command": command,
    }


def write_outcome(
    out: Outcome, runs_dir: str | Path, command: list[str], experiment: str
) -> tuple[str, str | None, float]:
    """Write the run directory (staged, then swapped in); returns (run_id, error or None, wall_s)."""
    from desim.rundir import RunDirError, Staging, write_failed

    target = Path(runs_dir) / out.spec.run_id
    extra = manifest_extra(out.spec, command, experiment)
    try:
        with Staging.begin(target) as st:
            if out.result is not None:
                from desim.results import fill_run

                try:
                    extra.pop("command")
                    fill_run(out.result, st.tmp, command=command, **extra)
                    st.commit()
                    return out.spec.run_id, None, out.wall_s
                except OSError:  # a full disk: record what happened instead
                    shutil.rmtree(st.tmp)
                    st.tmp.mkdir()
                    out = Outcome(out.spec, None, traceback.format_exc(), out.wall_s)
                    extra["command"] = command
            write_failed(
                st.tmp,
                yaml.safe_dump(out.spec.config, sort_keys=False),
                {
                    **extra,
                    "wall_s": out.wall_s,
                    "python": sys.version.split()[0],
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                out.error or "",
            )
            st.commit()
    except (RunDirError, OSError) as exc:
        return out.spec.run_id, f"{out.error or ''}\ncannot write {target}: {exc}", out.wall_s
    return out.spec.run_id, out.error, out.wall_s


def run_and_write(
    spec: RunSpec, runs_dir: str, command: list[str], experiment: str
) -> tuple[str, str | None, float]:
    """Process-pool entry point: compute and write in the worker."""
    return write_outcome(compute_run(spec), runs_dir, command, experiment)


def rerun(run_dir: str | Path):
    """Re-simulate one finished or failed run from its directory alone; returns the RunResult."""
    from desim.config import validate
    from desim.engine import simulate
    from desim.rng import Streams

    d = Path(run_dir)
    man = json.loads((d / "manifest.json").read_text())
    cfg = validate(yaml.safe_load((d / "config.yaml").read_text()))
    import numpy as np

    seq = np.random.SeedSequence(int(man["seed_entropy"]), spawn_key=tuple(man["seed_spawn_key"]))
    return simulate(cfg, streams=Streams(seq))
