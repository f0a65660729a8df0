"""Experiment files: a base config, a sweep over dotted keys, replications, one root seed.

An experiment YAML (``experiments/*.yaml``)::

    name: quick                     # optional; default: the file's stem
    base: ../configs/default.yaml   # a config path relative to this file, or an inline mapping
    set: {duration: 200ms}          # optional dotted overrides applied to the base at every point
    seed: 7                         # root of every replication's SeedSequence (default: base seed)
    replications: 3
    sweep:
      grid: {allocator.name: [generic, s390], machine.cpus: [4, 8]}   # cartesian product
      zip:  {rcu.blimit: [10, 100], rcu.qhimark: [1000, 10000]}       # lock-step lists
      list: [{workload.faults.think.mean: 10us}, {workload.faults.think.mean: 40us}]
    stats: {warmup: mser5}          # or a time (20ms) or none: see desim.stats
    report: {...}                   # kept for ``desim report``; only checked to be a mapping

The three sweep blocks combine by cartesian product of each other (grid × zip × list); a missing
block contributes one empty point, so ``list`` alone gives exactly its points. A key set by two
blocks at one point is refused: the result would depend on the order of application.

Seeds follow ``numpy.random.SeedSequence.spawn``: the root ``SeedSequence(seed)`` spawns one child
per replication, and replication r uses child r at *every* sweep point. Designs are therefore
compared on common random numbers (paired comparisons), while replications stay independent.

Input files travel with the runs: every empirical ``file`` a point's config names is read once
when the experiment is expanded, its bytes kept in the ``RunSpec`` and served to the config's
validation from there (``desim.distributions.provided_files``). A worker on another host thus
computes the same run without the file, the run uses exactly the content its digest covers, and
a changed file changes the digest, so resuming redoes the runs that read it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from desim.config import MAX_SEED, ConfigError, read_yaml, set_dotted, validate
from desim.distributions import _resolve as resolve_file  # exactly as validation resolves
from desim.distributions import provided_files, relative_to
from desim.units import units_required
from desim.workloads import ELEMENTS

# The bound on the input files of one run together: they are kept in memory with every run of
# the experiment and travel to Dask workers with each.
MAX_INPUT_BYTES = 64 * 2**20

TOP_KEYS = ("name", "base", "set", "seed", "replications", "sweep", "stats", "report")
SWEEP_KEYS = ("grid", "zip", "list")
MAX_RUNS = 100_000  # points x replications: each run is a directory, each point a validation
# The name is a directory under results/: no separators, no "..", no hidden names.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class InputFile:
    """The content of one input file, with its hash (computed once: digests ask for it often)."""

    data: bytes
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> InputFile:
        return cls(data, hashlib.sha256(data).hexdigest())


# What cannot change a run's results: the report, the command line, benchmarks and the probe.
NOT_MODEL = ("report/", "cli.py", "bench.py", "probe.py", "progress.py")


@functools.cache
def model_fingerprint() -> str:
    """A hash of the source of every desim module that can change a run's results."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if not rel.startswith(NOT_MODEL):
            h.update(rel.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment: everything a worker needs, as plain picklable data."""

    run_id: str
    point: int
    replication: int
    params: dict[str, Any]  # the swept keys of this point
    config: dict[str, Any]  # the raw config (base + set + params + seed), pre-validation
    base_dir: str  # where relative file paths in the config resolve
    entropy: int
    spawn_key: tuple[int, ...]
    invalid: str | None = None  # one-line ConfigError if the point's config is refused
    inputs: dict[str, InputFile] = field(default_factory=dict)  # resolved path -> content
    input_names: dict[str, str] = field(default_factory=dict)  # file as written -> resolved

    @property
    def digest(self) -> str:
        """Identity of the run's inputs; a finished directory with another digest is redone.

        It covers the config, the seed, the content of every input file (by the name the config
        gives it, so a sweep directory that moves with its files stays resumable), desim's
        version and a fingerprint of the code that computes results (``model_fingerprint``): a
        changed model may give other results from the same inputs, and a version number does
        not change with every edit.
        """
        import desim

        files = {name: self.inputs[path].sha256 for name, path in self.input_names.items()}
        blob = json.dumps(
            {
                "config": self.config,
                "entropy": self.entropy,
                "spawn_key": list(self.spawn_key),
                "inputs": files,
                "desim": desim.__version__,
                "code": model_fingerprint(),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def input_files(self):
        """A context in which the config's validation reads its files from this spec."""
        return serve_inputs(self.inputs, self.input_names)

    def seed_sequence(self) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.entropy, spawn_key=self.spawn_key)


@dataclass
class Experiment:
    name: str
    path: Path
    base: dict[str, Any]
    base_dir: Path
    seed: int
    replications: int
    points: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] | None = None

    @property
    def swept_keys(self) -> list[str]:
        keys: list[str] = []
        for p in self.points:
            keys.extend(k for k in p if k not in keys)
        return keys

    def runs(self) -> list[RunSpec]:
        """Every (point, replication), replication-major within a point."""
        children = np.random.SeedSequence(self.seed).spawn(self.replications)
        out = []
        read: dict[str, InputFile] = {}  # each file read once for all points
        for i, params in enumerate(self.points):
            cfg = copy.deepcopy(self.base)
            for k, v in params.items():
                set_dotted(cfg, k, copy.deepcopy(v))
            cfg["seed"] = self.seed
            invalid = None
            inputs: dict[str, InputFile] = {}
            names: dict[str, str] = {}
            try:
                inputs, names = collect_inputs(cfg, self.base_dir, read)
                with relative_to(self.base_dir), serve_inputs(inputs, names), units_required():
                    validate(copy.deepcopy(cfg))
            except ConfigError as exc:
                invalid = str(exc)
            for r, child in enumerate(children):
                out.append(
                    RunSpec(
                        run_id=f"p{i:03d}-r{r:02d}",
                        point=i,
                        replication=r,
                        params=dict(params),
                        config=cfg,
                        base_dir=str(self.base_dir),
                        entropy=self.seed,  # every spawned child keeps the root's entropy
                        spawn_key=tuple(int(k) for k in child.spawn_key),
                        invalid=invalid,
                        inputs=inputs,
                        input_names=names,
                    )
                )
        return out


def serve_inputs(inputs: dict[str, InputFile], names: dict[str, str]):
    return provided_files({p: f.data for p, f in inputs.items()}, names)


def input_file_names(config: Any) -> Iterator[tuple[str, str]]:
    """(dotted key, file as written) of every input file of a raw config: each empirical
    distribution's ``file`` and each workload element's declared ``input_files`` fields (a
    replay's trace), so that a run's digest covers their contents."""
    workload = config.get("workload") if isinstance(config, dict) else None
    if isinstance(workload, dict):
        known = set(ELEMENTS.names())
        for name, params in workload.items():
            if name not in known or not isinstance(params, dict):
                continue
            for key in ELEMENTS.get(name).input_files:
                f = params.get(key)
                if isinstance(f, str):
                    yield f"workload.{name}.{key}", f
    stack: list[tuple[str, Any]] = [("", config)]
    while stack:  # iterative: no recursion limit on deep configs
        where, node = stack.pop()
        if isinstance(node, dict):
            f = node.get("file")
            if node.get("dist") == "empirical" and isinstance(f, str | int | float):
                yield f"{where}.file".lstrip("."), str(f)
            stack.extend((f"{where}.{k}".lstrip("."), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{where}.{n}".lstrip("."), v) for n, v in enumerate(node))


def collect_inputs(
    config: dict, base_dir: Path, read: dict[str, InputFile] | None = None
) -> tuple[dict[str, InputFile], dict[str, str]]:
    """Read every input file ``config`` names: ({resolved path: content}, {name: resolved}).

    Names resolve as ``desim.distributions`` resolves them (next to the config, then the current
    directory). A name that does not resolve is left to the config's validation to report.
    ``read`` caches contents across calls by resolved path.
    """
    read = {} if read is None else read
    inputs: dict[str, InputFile] = {}
    names: dict[str, str] = {}
    total = 0
    for where, name in input_file_names(config):
        if name in names:
            continue
        try:
            with relative_to(base_dir):
                path = resolve_file(name)
        except ValueError:
            continue
        key = str(path)
        if key not in read:
            try:
                with path.open("rb") as fh:
                    data = fh.read(MAX_INPUT_BYTES + 1)
            except OSError as exc:
                raise ConfigError(f"{where}: cannot read {key} ({exc.strerror})") from None
            if len(data) > MAX_INPUT_BYTES:
                raise ConfigError(
                    f"{where}: {key} is larger than {MAX_INPUT_BYTES >> 20} MiB, "
                    "the bound on a run's input files"
                )
            read[key] = InputFile.of(data)
        names[name] = key
        if key not in inputs:
            inputs[key] = read[key]
            total += len(read[key].data)
            if total > MAX_INPUT_BYTES:
                raise ConfigError(
                    f"{where}: the input files of one run exceed "
                    f"{MAX_INPUT_BYTES >> 20} MiB together"
                )
    return inputs, names


def _err(path: Path, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {msg}")


def _lists(path: Path, block: str, data: Any) -> dict[str, list]:
    if data is None:
        return {}
    if not isinstance(data, dict) or not data:
        raise _err(path, f"sweep.{block}: expected a mapping of dotted.key to a list of values")
    for k, v in data.items():
        if not isinstance(v, list) or not v:
            raise _err(path, f"sweep.{block}.{k}: expected a non-empty list of values")
    return data


def expand(path: Path, sweep: Any) -> list[dict[str, Any]]:
    """The sweep points: grid × zip × list, each a dict of dotted key → value."""
    if sweep is None:
        return [{}]
    if not isinstance(sweep, dict):
        raise _err(path, "sweep: expected a mapping with grid, zip and/or list")
    for k in sweep:
        if k not in SWEEP_KEYS:
            raise _err(path, f"sweep.{k}: unknown block (allowed: {', '.join(SWEEP_KEYS)})")
    grid = _lists(path, "grid", sweep.get("grid"))
    zipped = _lists(path, "zip", sweep.get("zip"))
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        raise _err(
            path,
            f"sweep.zip: lists must have equal lengths (got "
            f"{', '.join(f'{k}={len(v)}' for k, v in zipped.items())})",
        )
    listed = sweep.get("list")
    if listed is not None and (
        not isinstance(listed, list) or not listed or not all(isinstance(p, dict) for p in listed)
    ):
        raise _err(path, "sweep.list: expected a non-empty list of {dotted.key: value} mappings")
    for block, keys in (
        ("grid", grid),
        ("zip", zipped),
        ("list", [k for p in listed or [] for k in p]),
    ):
        for k in keys:
            if not isinstance(k, str) or not all(part.strip() for part in k.split(".")):
                raise _err(path, f"sweep.{block}: {k!r} is not a dotted key such as machine.cpus")
    n = (
        math.prod(len(v) for v in grid.values())
        * (len(next(iter(zipped.values()))) if zipped else 1)
        * (len(listed) if listed else 1)
    )
    if n > MAX_RUNS:  # before the product is built: it could be astronomically large
        raise _err(path, f"sweep: {n:,} points, more than {MAX_RUNS:,}")

    grid_pts = (
        [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
        if grid
        else [{}]
    )
    zip_pts = (
        [dict(zip(zipped, combo, strict=True)) for combo in zip(*zipped.values(), strict=True)]
        if zipped
        else [{}]
    )
    list_pts = [dict(p) for p in listed] if listed else [{}]
    points = []
    for g, z, ls in itertools.product(grid_pts, zip_pts, list_pts):
        clash = (set(g) & set(z)) | (set(g) & set(ls)) | (set(z) & set(ls))
        if clash:
            raise _err(path, f"sweep: {sorted(clash)[0]} is set by two blocks")
        points.append({**g, **z, **ls})
    return points


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file; configs of single points are checked in ``runs()``."""
    p = Path(path)
    data = read_yaml(p)
    for k in data:
        if k not in TOP_KEYS:
            raise _err(p, f"{k}: unknown field (allowed: {', '.join(TOP_KEYS)})")
    base = data.get("base")
    if isinstance(base, str):
        base_path = (p.parent / base).resolve()
        base_cfg = read_yaml(base_path)
        base_dir = base_path.parent
    elif isinstance(base, dict):
        base_cfg = copy.deepcopy(base)
        base_dir = p.parent.resolve()
    elif base is None:
        base_cfg, base_dir = {}, p.parent.resolve()
    else:
        raise _err(p, "base: expected a config path (relative to the experiment) or a mapping")
    overrides = data.get("set") or {}
    if not isinstance(overrides, dict):
        raise _err(p, "set: expected a mapping of dotted.key to value")
    for k, v in overrides.items():
        try:
            set_dotted(base_cfg, str(k), v)
        except ConfigError as exc:
            raise _err(p, f"set: {exc}") from None
    seed = data.get("seed", base_cfg.get("seed", 1))
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise _err(p, f"seed: expected an integer from 0 to {MAX_SEED}")
    reps = data.get("replications", 1)
    if not isinstance(reps, int) or isinstance(reps, bool) or not 1 <= reps <= MAX_RUNS:
        raise _err(p, f"replications: expected an integer >= 1 (at most {MAX_RUNS:,})")
    stats = data.get("stats") or {}
    if not isinstance(stats, dict):
        raise _err(p, "stats: expected a mapping (warmup, confidence)")
    from desim.stats import parse_stats_options

    try:
        parse_stats_options(stats)
    except ValueError as exc:
        raise _err(p, str(exc)) from None
    report = data.get("report")
    if report is not None and not isinstance(report, dict):
        raise _err(p, "report: expected a mapping")
    name = data.get("name")
    if name is None:
        name = p.stem
        if not NAME.fullmatch(name):
            raise _err(
                p,
                f"name: the file name {name!r} is no safe directory name: give a "
                "name: of letters, digits, '.', '_' and '-'",
            )
    elif isinstance(name, bool) or not isinstance(name, str | int) or not NAME.fullmatch(str(name)):
        raise _err(
            p,
            f"name: {name!r} is no safe directory name: use letters, digits, '.', '_' "
            "and '-' (starting with a letter or digit, at most 100)",
        )
    points = expand(p, data.get("sweep"))
    if len(points) * reps > MAX_RUNS:
        raise _err(
            p,
            f"replications: {len(points):,} points x {reps:,} replications is more "
            f"than {MAX_RUNS:,} runs",
        )
    return Experiment(
        name=str(name),
        path=p,
        base=base_cfg,
        base_dir=base_dir,
        seed=seed,
        replications=reps,
        points=points,
        stats=stats,
        report=report,
    )
