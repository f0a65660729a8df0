"""Random distributions for workload times and counts, written in YAML.

A field typed ``TimeDist`` accepts a plain duration (``2us``: constant) or a mapping such as
``{dist: exponential, mean: 2us}``; ``CountDist`` the same with plain numbers. Samplers draw
from the run's named streams in vectorised blocks (``desim.rng.Buffered``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from desim.rng import Buffered
from desim.units import parse_rate_per_ns, parse_time_ns


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def mean(self) -> float:
        raise NotImplementedError

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError

    def sampler(self, rng: np.random.Generator):
        """A zero-argument callable returning one sample (float)."""
        return Buffered(lambda n: self.draw(rng, n))

    def ns_sampler(self, rng: np.random.Generator):
        """Like ``sampler``, rounded to whole nanoseconds (simulated time is integer ns)."""
        return Buffered(lambda n: np.rint(self.draw(rng, n)).astype(np.int64))


class Constant(_Dist):
    dist: Literal["constant"] = "constant"
    value: float = Field(ge=0)

    def mean(self) -> float:
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

    def draw(self, rng, n):
        return rng.uniform(self.low, self.high, n)


DIST_TYPES: dict[str, type[_Dist]] = {
    "constant": Constant,
    "exponential": Exponential,
    "uniform": Uniform,
}
_QUANTITY_FIELDS = ("value", "mean", "low", "high")


def _coerce(parse, value: Any) -> Any:
    if isinstance(value, _Dist):
        return value
    if isinstance(value, dict):
        kind = value.get("dist")
        if kind not in DIST_TYPES:
            raise ValueError(f"unknown dist {kind!r} (allowed: {', '.join(DIST_TYPES)})")
        out = {k: (parse(v) if k in _QUANTITY_FIELDS else v) for k, v in value.items()}
        return DIST_TYPES[kind].model_validate(out)
    return Constant(value=parse(value))


def _time(value: Any) -> Any:
    return _coerce(parse_time_ns, value)


def _count(value: Any) -> Any:
    return _coerce(float, value)


def _rate(value: Any) -> Any:
    """A rate (``500/s``) becomes exponential inter-arrival times in ns (a Poisson process)."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        r = parse_rate_per_ns(value)
        if r <= 0:
            raise ValueError("a rate must be positive")
        return Exponential(mean=1.0 / r)
    return _time(value)


AnyDist = Constant | Exponential | Uniform
TimeDist = Annotated[AnyDist, BeforeValidator(_time)]
CountDist = Annotated[AnyDist, BeforeValidator(_count)]
Interarrival = Annotated[AnyDist, BeforeValidator(_rate)]
