"""An explore scenario: a desim config plus an ``explore:`` section, validated in one place.

The config part is an ordinary desim config (machine, costs, rcu, allocator, mm_lifetime,
safety) with no ``workload:``: the explorer itself drives the operations. The ``explore:``
section says what the machine starts with and what may happen to it::

    explore:
      mms: 2                 # processes alive at the start, each with ...
      tables: 2              # ... this many shmem PTE tables, populated before the script
      ops: [fault, retract, exit]   # a random script draws its operations from these
      steps: 4               # ... at most this many of them
      script:                # or a fixed script: fields left out are explored
        - {op: fault, mm: 0}
        - {op: retract, mm: 0, table: 0}
      fine: 4us              # a step may follow the one before within this (a race window) ...
      max_delay: 30ms        # ... or anywhere within this ...
      max_ticks: 4           # ... or exactly on one of the next jiffy boundaries (a tick)
      horizon: 200ms         # after the last step starts, run at most this long
      budget: 200            # schedules to try when the command line gives no --budget/--time
      expect: safe           # or the violation kinds the scenario must produce (tests check)

Errors name the field as YAML spells it (``explore.steps: ...``) and end in ``ConfigError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from desim.config import (
    Config,
    ConfigError,
    Duration,
    Int,
    PositiveDuration,
    _first_error,
    read_yaml,
    validate,
)
from desim.model.safety import KINDS
from desim.units import units_required

# The operations a step may start (desim.explore.run says what each runs in the kernel's terms).
OPS = ("fault", "retract", "collapse", "munmap", "mmap", "exit")
MAX_CPUS = 8  # a schedule space worth searching: 2-4 CPUs is the point, 8 the limit
MAX_STEPS = 16
FAILURES = (*KINDS, "model_error")


def _expect(v: object) -> object:
    """``safe``, or a list of violation kinds, each named in ``FAILURES``."""
    allowed = f"safe, or a list of: {', '.join(FAILURES)}"
    if v == "safe":
        return v
    if not isinstance(v, list | tuple) or not v:
        raise ValueError(f"expected {allowed}")
    for k in v:
        if k not in FAILURES:
            raise ValueError(f"unknown violation kind {k!r} (allowed: {allowed})")
    return tuple(v)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(Strict):
    """One operation of a script; a field left out (None) is chosen by the explorer."""

    op: Literal[OPS]  # type: ignore[valid-type]
    cpu: Int | None = Field(None, ge=0, description="CPU the operation runs on")
    mm: Int | None = Field(None, ge=0, description="which of the starting mms (0-based)")
    table: Int | None = Field(
        None, ge=0, description="which of the mm's tables, counted when the step starts"
    )
    at: Duration | None = Field(None, description="start time, from the script's start")


class ExploreSpec(Strict):
    mms: Int = Field(2, ge=1, le=8, description="processes alive at the start")
    tables: Int = Field(2, ge=1, le=16, description="shmem PTE tables per process at the start")
    ops: tuple[Literal[OPS], ...] = Field(  # type: ignore[valid-type]  # Literal of a tuple: beyond mypy
        ("fault", "retract", "exit"), min_length=1, description="operations a random script uses"
    )
    steps: Int = Field(4, ge=1, le=MAX_STEPS, description="at most this many random steps")
    script: tuple[Step, ...] | None = Field(
        None, min_length=1, max_length=MAX_STEPS, description="a fixed script instead"
    )
    fine: Duration = Field(4_000, description="a step may follow the previous within this")
    max_delay: Duration = Field(30_000_000, description="... or anywhere within this")
    max_ticks: Int = Field(4, ge=1, le=1000, description="... or on one of these next ticks")
    horizon: PositiveDuration = Field(
        200_000_000, description="after the last step starts, run at most this long"
    )
    budget: Int = Field(200, ge=1, le=1_000_000, description="schedules to try by default")
    expect: Annotated[str | tuple[str, ...], BeforeValidator(_expect)] = Field(
        "safe", description="safe, or the violation kinds the scenario must produce"
    )

    @model_validator(mode="after")
    def _bounds(self):
        for i, s in enumerate(self.script or ()):
            if s.mm is not None and s.mm >= self.mms:
                raise ValueError(f"script.{i}.mm: {s.mm} but the scenario starts {self.mms} mms")
        return self


class Scenario(BaseModel):
    """A validated scenario: the machine's config and what to explore on it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    name: str
    config: Config
    spec: ExploreSpec

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "explore": self.spec.model_dump(mode="json", exclude_none=True),
        }


def _check_machine(config: Config) -> None:
    if config.workload:
        raise ConfigError(
            "workload: an explore scenario runs its explore: steps instead; remove the section"
        )
    if config.machine.cpus > MAX_CPUS:
        raise ConfigError(
            f"machine.cpus: at most {MAX_CPUS} for desim explore (got {config.machine.cpus})"
        )


def _check_steps(spec: ExploreSpec, config: Config) -> None:
    n = config.machine.cpus
    for i, s in enumerate(spec.script or ()):
        if s.cpu is not None and s.cpu >= n:
            raise ConfigError(f"explore.script.{i}.cpu: {s.cpu} but the machine has {n} CPUs")


def parse_spec(data: Any) -> ExploreSpec:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("explore: expected a mapping (mms, tables, ops, steps, script, ...)")
    try:
        return ExploreSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc, prefix="explore")) from None


def from_dicts(name: str, config: dict, explore: Any) -> Scenario:
    """A scenario from a config mapping and an ``explore:`` mapping (``ConfigError`` if bad)."""
    cfg = validate(config)
    _check_machine(cfg)
    # Every schedule stops at its first violation; the explorer checks the design's invariants
    # after every event itself (no periodic auditor); latency statistics are of no use here.
    cfg = cfg.model_copy(
        update={
            "safety": cfg.safety.model_copy(
                update={"enabled": True, "stop_on_first": True, "audit_interval": 0}
            ),
            "record": cfg.record.model_copy(update={"enabled": False}),
        }
    )
    spec = parse_spec(explore)
    _check_steps(spec, cfg)
    return Scenario(name=name, config=cfg, spec=spec)


def load_scenario(path: str | Path, seed: int | None = None) -> Scenario:
    """Read a scenario file; errors are one line starting with the path."""
    data = read_yaml(path)
    explore = data.pop("explore", None)
    if seed is not None:
        data["seed"] = seed
    from desim.distributions import relative_to

    try:
        # a scenario is a user's file: its times carry units, as in a config (desim.units)
        with relative_to(Path(path).parent), units_required():
            return from_dicts(Path(path).stem, data, explore)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
