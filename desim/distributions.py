"""Random distributions for workload times and counts, written in YAML.

A field typed ``TimeDist`` accepts a plain duration (``2us``: constant) or a mapping such as
``{dist: exponential, mean: 2us}``; ``CountDist`` the same with plain numbers; ``Interarrival``
also takes a rate (``500/s``: exponential gaps, a Poisson process). Every quantity inside a
mapping takes units too (``median: 50ms``, ``values: [1us, 3us]``). Kinds:

* ``constant``: ``value``;
* ``exponential``: ``mean``;
* ``uniform``: ``low``, ``high``;
* ``lognormal``: ``median`` and ``p99`` or ``p95`` (the usual ways latencies are published),
  or ``median`` and ``sigma``, or ``mu`` and ``sigma`` (of the underlying normal, ``mu`` in log base units:
  log-ns for times);
* ``empirical``: ``values`` (a list of samples) or ``file`` (a CSV of samples: one number per
  row, optionally with units; ``column`` picks a column by name or index, default the first;
  a header row is skipped). A relative ``file`` is looked up next to the config file being
  loaded first, then in the current directory; the resolved absolute path is what the saved
  config holds, so a results directory's ``config.yaml`` loads back to the same samples.
  Within ``provided_files`` the contents come from memory instead (a sweep's workers, which
  may run on hosts that lack the file).
  ``interpolate: false`` (default) resamples the given values (bootstrap: every draw is one of
  them); ``true`` draws from the piecewise-linear inverse CDF through the sorted samples.

Every distribution has a finite mean. Time quantities are at most one day (``desim.units``);
``Gap`` and ``Interarrival`` fields need a mean of at least 1 ns (a rate of at most one per ns):
draws are rounded to whole ns, and an element whose every gap is 0 ns would loop at one instant
with simulated time standing still (``faults: {think: 0}``); ``count_at_most(le)``
bounds a count: the largest value (constant, uniform, empirical) or the mean (exponential,
lognormal) must be at most ``le``, and draws are capped at ``le``. Drawn times are capped at
``NS_CAP`` (~146 years), so that a far tail draw never overflows 64-bit nanoseconds.

Samplers draw from the run's named streams in vectorised blocks (``desim.rng.buffered``).
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

from desim.inputs import read_text
from desim.rng import buffered
from desim.units import (
    DIST_QUANTITY_FIELDS,
    MAX_TIME_NS,
    TIME_UNITS,
    format_ns,
    parse_rate_per_ns,
    parse_time,
    units_required,
)

# z such that P(N(0,1) <= z) = 0.99 (scipy-free: numpy has no ppf)
Z99 = 2.3263478740408408
Z95 = 1.6448536269514722
# Drawn times are capped here: far beyond any run (runs are at most MAX_TIME_NS, and phases
# scale gaps by at most 1000), so the cap changes no outcome, yet now + gap stays inside int64.
NS_CAP = 1 << 62

_BASE_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "desim_base_dir", default=None
)


@contextlib.contextmanager
def relative_to(directory: str | Path | None):
    """Resolve relative empirical ``file`` paths against ``directory`` (the config's folder)."""
    token = _BASE_DIR.set(Path(directory) if directory is not None else None)
    try:
        yield
    finally:
        _BASE_DIR.reset(token)


@dataclass
class _Provided:
    contents: Mapping[str, bytes]  # resolved path -> the file's bytes
    names: Mapping[str, str]  # ``file:`` as a config writes it -> resolved path
    values: dict[tuple[str, str | int], list[float]] = field(
        default_factory=dict
    )  # parsed, this context only


_PROVIDED: contextvars.ContextVar[_Provided | None] = contextvars.ContextVar(
    "desim_provided_files", default=None
)


@contextlib.contextmanager
def provided_files(contents: Mapping[str, bytes], names: Mapping[str, str] | None = None):
    """Serve empirical ``file``s from ``contents`` (resolved path -> bytes), not from the disk.

    ``names`` maps a ``file`` value as the config writes it to its resolved path: a relative
    name was resolved where the experiment was planned, against directories another host may
    not have. Paths not given are read from the disk as usual. Samples parsed meanwhile are
    cached for this context only, so a process that lives across runs (a Dask worker) never
    serves a file's old samples after its content changed.
    """
    token = _PROVIDED.set(_Provided(contents, names or {}))
    try:
        yield
    finally:
        _PROVIDED.reset(token)


def _file_values() -> dict[tuple[str, str | int], list[float]]:
    prov = _PROVIDED.get()
    return prov.values if prov is not None else _FILE_VALUES


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    _cap: float = PrivateAttr(default=math.inf)  # set by count_at_most: draws never exceed it

    def mean(self) -> float:
        raise NotImplementedError

    def upper(self) -> float:
        """The largest value a draw can take (inf for unbounded kinds)."""
        return math.inf

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError

    def sampler(self, rng: np.random.Generator):
        """A zero-argument callable returning one sample (float)."""
        cap = self._cap
        if cap == math.inf:
            return buffered(lambda n: self.draw(rng, n))
        return buffered(lambda n: np.minimum(self.draw(rng, n), cap))

    def ns_sampler(self, rng: np.random.Generator):
        """Like ``sampler``, rounded to whole nanoseconds (simulated time is integer ns)."""
        cap = min(self._cap, NS_CAP)
        return buffered(lambda n: np.rint(np.minimum(self.draw(rng, n), cap)).astype(np.int64))


class Constant(_Dist):
    dist: Literal["constant"] = "constant"
    value: float = Field(ge=0)

    def mean(self) -> float:
        return self.value

    def upper(self) -> float:
        return self.value

    def sampler(self, rng: np.random.Generator):
        v = self.value
        return lambda: v

    def ns_sampler(self, rng: np.random.Generator):
        v = round(self.value)
        return lambda: v

    def draw(self, rng, n):
        return np.full(n, self.value)


class Exponential(_Dist):
    dist: Literal["exponential"] = "exponential"
    mean_: float = Field(alias="mean", gt=0)

    def mean(self) -> float:
        return self.mean_

    def draw(self, rng, n):
        return rng.exponential(self.mean_, n)


class Uniform(_Dist):
    dist: Literal["uniform"] = "uniform"
    low: float = Field(ge=0)
    high: float = Field(ge=0)

    @model_validator(mode="after")
    def _order(self):
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self

    def mean(self) -> float:
        return (self.low + self.high) / 2

    def upper(self) -> float:
        return self.high

    def draw(self, rng, n):
        return rng.uniform(self.low, self.high, n)


class Lognormal(_Dist):
    """exp(N(mu, sigma^2)): heavy right tail, the shape of process lifetimes and latencies.

    Given a median m and 99th percentile q: mu = ln m, sigma = ln(q/m) / z99 (z99 = 2.326);
    from a 95th percentile, sigma = ln(q/m) / z95 (z95 = 1.645).
    The fields given are kept; ``mu`` and ``sigma`` are always available as properties.
    """

    dist: Literal["lognormal"] = "lognormal"
    median: float | None = Field(None, gt=0)
    p99: float | None = Field(None, gt=0)
    p95: float | None = Field(None, gt=0)
    mu_: float | None = Field(None, alias="mu")
    sigma_: float | None = Field(None, alias="sigma", ge=0)

    @model_validator(mode="after")
    def _shape(self):
        given = {
            k
            for k, v in (
                ("median", self.median),
                ("p99", self.p99),
                ("p95", self.p95),
                ("mu", self.mu_),
                ("sigma", self.sigma_),
            )
            if v is not None
        }
        if given not in (
            {"median", "p99"},
            {"median", "p95"},
            {"median", "sigma"},
            {"mu", "sigma"},
        ):
            raise ValueError(
                "lognormal takes median and p99, median and p95, median and sigma, "
                f"or mu and sigma (got {', '.join(sorted(given)) or 'none'})"
            )
        for name, q in (("p99", self.p99), ("p95", self.p95)):
            if q is not None and self.median is not None and q < self.median:
                raise ValueError(f"{name} must be >= median")
        return self

    @property
    def mu(self) -> float:
        # _shape: without mu, median is given
        return self.mu_ if self.mu_ is not None else math.log(self.median)  # type: ignore[arg-type]

    @property
    def sigma(self) -> float:
        if self.sigma_ is not None:
            return self.sigma_
        if self.p95 is not None:
            # _shape: p95 comes with median
            return math.log(self.p95 / self.median) / Z95  # type: ignore[operator]
        # _shape: p99 (the case left) comes with median
        return math.log(self.p99 / self.median) / Z99  # type: ignore[operator]

    def mean(self) -> float:
        try:
            return math.exp(self.mu + self.sigma**2 / 2)
        except OverflowError:
            return math.inf

    def draw(self, rng, n):
        return rng.lognormal(self.mu, self.sigma, n)


class Empirical(_Dist):
    """Samples given as data: a list, or a CSV file of measurements (e.g. from bpftrace)."""

    dist: Literal["empirical"] = "empirical"
    values: tuple[float, ...] | None = None
    file: str | None = None
    column: str | int = 0
    interpolate: bool = False
    _data: np.ndarray = PrivateAttr()

    @model_validator(mode="after")
    def _load(self):
        if (self.values is None) == (self.file is None):
            raise ValueError("empirical takes either values or file")
        if self.values is not None:
            raw: Any = self.values
        else:
            path = _resolve(self.file)
            cache = _file_values()
            key = (str(path), self.column)  # one file may feed several columns
            raw = cache.get(key)
            if raw is None:
                raw = cache[key] = _read_csv(path, self.column, _number)
        data = np.asarray(raw, dtype=float)
        if data.size == 0:
            raise ValueError("empirical needs at least one value")
        if not np.all(np.isfinite(data)) or np.any(data < 0):
            raise ValueError("empirical values must be finite and >= 0")
        self._data = np.sort(data)
        return self

    @property
    def data(self) -> np.ndarray:
        """The samples, sorted."""
        return self._data

    def mean(self) -> float:
        return float(self._data.mean())

    def upper(self) -> float:
        return float(self._data[-1])

    def draw(self, rng, n):
        d = self._data
        if not self.interpolate or d.size == 1:
            return d[rng.integers(0, d.size, n)]
        # inverse CDF, linear between order statistics (numpy's default quantile method)
        return np.interp(rng.random(n) * (d.size - 1), np.arange(d.size), d)


# file path (as resolved) -> parsed samples; filled by _coerce before model validation
_FILE_VALUES: dict[tuple[str, str | int], list[float]] = {}


def _resolve(file: str) -> Path:
    prov = _PROVIDED.get()
    if prov is not None:
        key = prov.names.get(file, file)
        if key in prov.contents:
            return Path(key)
    p = Path(file).expanduser()
    if p.is_absolute():
        candidates = [p]
    else:
        base = _BASE_DIR.get()
        candidates = ([base / p] if base is not None else []) + [Path.cwd() / p]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise ValueError(
        f"empirical file {file!r} not found "
        f"(looked in {', '.join(str(c.parent) for c in candidates)})"
    )


def find_file(file: str) -> list[Path]:
    """Where a relative ``file`` of a config is looked for, in order (next to the config being
    loaded, then the current directory); an absolute one is looked for where it says. Other
    plugins' input files (a replay's trace) are found as empirical samples are."""
    p = Path(file).expanduser()
    if p.is_absolute():
        return [p]
    base = _BASE_DIR.get()
    return ([base / p] if base is not None else []) + [Path.cwd() / p]


def _read_csv(path: Path, column: str | int, parse) -> list[float]:
    out: list[float] = []
    try:  # a regular file of bounded size only (desim.inputs), never /dev/zero
        rows = [
            r
            for r in csv.reader(io.StringIO(_text_of(path), newline=""))
            if r and not r[0].lstrip().startswith("#")
        ]
    except (ValueError, csv.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"empirical file {path}: {exc}") from None
    if not rows:
        return out
    idx: int
    header = rows[0]
    try:
        parse(header[column if isinstance(column, int) else 0].strip())
        has_header = False
    except (ValueError, IndexError):
        has_header = True
    if isinstance(column, str):
        if not has_header or column not in [h.strip() for h in header]:
            raise ValueError(f"empirical file {path}: no column {column!r}")
        idx = [h.strip() for h in header].index(column)
    else:
        idx = column
    for n, row in enumerate(rows[1:] if has_header else rows, start=2 if has_header else 1):
        try:
            out.append(float(parse(row[idx].strip())))
        except (ValueError, IndexError):
            raise ValueError(
                f"empirical file {path}: row {n} has no number in column {column!r}"
            ) from None
    return out


def provided_bytes(path: str | Path) -> bytes | None:
    """The content of an input file provided with the run (``provided_files``), else None:
    what a plugin reading a file of its own (a replay's trace) must read instead of the disk."""
    prov = _PROVIDED.get()
    if prov is None:
        return None
    key = prov.names.get(str(path), str(path))
    return prov.contents.get(key)


def resolve_input(file: str) -> Path:
    """Where ``file`` of a config is (``ValueError`` naming the places looked in): the path it
    was provided under with the run, else found as ``find_file`` says."""
    return _resolve(file)


def _text_of(path: Path) -> str:
    """A CSV's text: as provided with the run (``provided_files``), else read from the disk."""
    prov = _PROVIDED.get()
    if prov is not None and str(path) in prov.contents:
        return prov.contents[str(path)].decode()
    return read_text(path)


DIST_TYPES: dict[str, type[_Dist]] = {
    "constant": Constant,
    "exponential": Exponential,
    "uniform": Uniform,
    "lognormal": Lognormal,
    "empirical": Empirical,
}
_QUANTITY_FIELDS = DIST_QUANTITY_FIELDS
_PLAIN_FIELDS = ("mu", "sigma")  # lognormal's log-space parameters: plain numbers


def _coerce(parse, value: Any) -> Any:
    if isinstance(value, _Dist):
        return value
    if isinstance(value, dict):
        kind = value.get("dist")
        if not isinstance(kind, str) or kind not in DIST_TYPES:
            raise ValueError(f"unknown dist {kind!r} (allowed: {', '.join(DIST_TYPES)})")
        out = {}
        for k, v in value.items():
            try:
                out[k] = (
                    parse(v)
                    if k in _QUANTITY_FIELDS and v is not None
                    else _number(v)
                    if k in _PLAIN_FIELDS and v is not None
                    else v
                )
            except ValueError as exc:
                raise ValueError(f"{k}: {exc}") from None
        if kind == "empirical":
            vals = out.get("values")
            if isinstance(vals, list | tuple):
                out["values"] = [parse(v) for v in vals]
            elif vals is not None:
                raise ValueError("empirical values must be a list")
            if out.get("file") is not None:
                if not isinstance(out["file"], str):
                    raise ValueError("file: expected the path of a CSV file")
                column = out.get("column", 0)
                if not (isinstance(column, str) or type(column) is int and column >= 0):
                    raise ValueError("column: expected a column name or an index >= 0")
                path = _resolve(out["file"])
                cache = _file_values()
                if (str(path), column) not in cache:
                    with units_required(False):  # a sample file's numbers are in base units
                        cache[(str(path), column)] = _read_csv(path, column, parse)
                out["file"] = str(path)
        dist = DIST_TYPES[kind].model_validate(out)
    else:
        dist = Constant(value=parse(value))
    if not dist.mean() < math.inf:  # lognormal with a huge sigma; inf or nan from a list
        raise ValueError("the distribution has no finite mean")
    return dist


def _bounded(dist: _Dist, le: float, show=lambda x: f"{x:,.4g}") -> _Dist:
    """``dist`` if its values stay within ``le``: its largest value, or its mean if unbounded."""
    up = dist.upper()
    if up == math.inf and dist.mean() > le:
        raise ValueError(f"at most {show(le)} (this distribution has mean {show(dist.mean())})")
    if math.inf > up > le:
        raise ValueError(f"at most {show(le)} (got {show(up)})")
    return dist


def _show_ns(ns: float) -> str:
    return "1 day" if ns == MAX_TIME_NS else format_ns(ns)


def _time(value: Any) -> Any:
    return _bounded(_coerce(parse_time, value), MAX_TIME_NS, _show_ns)


def _gap(value: Any) -> Any:
    """A time between an element's iterations: it must let simulated time move on.

    Draws are rounded to whole ns; a mean of at least 1 ns leaves some draw >= 1 ns, and an
    element that waits one mean gap when idle (``faults`` per process) waits >= 1 ns.
    """
    dist = _time(value)
    if not dist.mean() >= 1:
        raise ValueError(
            "a gap must average at least 1ns: shorter gaps round to 0 ns and "
            "simulated time would stand still"
        )
    return dist


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError("expected a number")
    try:
        x = float(v)
    except (ValueError, OverflowError):  # OverflowError: an int beyond float range
        raise ValueError(f"expected a number, got {v!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"expected a finite number, got {v!r}")
    return x


def _count(value: Any, le: float = math.inf) -> Any:
    dist = _bounded(_coerce(_number, value), le)
    if dist._cap != le:  # a copy: a distribution given as an object may serve other fields
        dist = dist.model_copy()
        dist._cap = le
    return dist


def _rate(value: Any) -> Any:
    """A rate (``500/s``) becomes exponential inter-arrival times in ns (a Poisson process)."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        r = parse_rate_per_ns(value)
        if r <= 0:
            raise ValueError("a rate must be positive")
        if r > 1.0:
            raise ValueError(
                f"{value!r} is more than one per ns (1e9/s): the gaps would round "
                "to 0 ns and simulated time would stand still"
            )
        return _bounded(Exponential(mean_=1.0 / r), MAX_TIME_NS, _show_ns)
    return _gap(value)


AnyDist = Constant | Exponential | Uniform | Lognormal | Empirical
TimeDist = Annotated[AnyDist, BeforeValidator(_time), TIME_UNITS]
Gap = Annotated[AnyDist, BeforeValidator(_gap), TIME_UNITS]
CountDist = Annotated[AnyDist, BeforeValidator(_count)]
Interarrival = Annotated[AnyDist, BeforeValidator(_rate), TIME_UNITS]


def count_at_most(le: int) -> BeforeValidator:
    """A count's validator bounding its values by ``le`` (see the module docstring), used as
    ``Annotated[AnyDist, count_at_most(le)]`` in place of ``CountDist``."""
    return BeforeValidator(partial(_count, le=le))
