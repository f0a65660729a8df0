"""The ``report:`` section of an experiment YAML: which figures, which x axis, which metrics.

::

    report:
      figures: [memory, latency, locks, rcu, safety]   # groups or single figures (default: all)
      x: machine.cpus          # swept key on the x axis of "vs" figures (default: machine.cpus
                               # when swept, else the first numeric swept key)
      metrics: [fault.p99_ns, mem.overhead.mean_bytes]  # headline table (default: DEFAULT_METRICS)
      latency_ops: [fault, alloc, defer, exit]
      title: "quick: three designs, 4 and 8 CPUs"

Unknown keys and names are refused with a one-line error naming the field and allowed values.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from desim.records import LATENCY_OPS
from desim.report.registry import groups, ordered


def __getattr__(name: str):
    # GROUPS and ALL_FIGURES come from the figure registry, loaded on first use
    if name == "GROUPS":
        return groups()
    if name == "ALL_FIGURES":
        return [n for n, _ in ordered()]
    raise AttributeError(name)


# The answer to the main question (what deferring costs in memory, and is it safe) first.
DEFAULT_METRICS = [
    "mem.overhead.mean_bytes",
    "mem.overhead.peak_bytes",
    "safety.violations",
    "fault.p50_ns",
    "fault.p99_ns",
    "alloc.p99_ns",
    "defer.p99_ns",
    "exit.p99_ns",
    "free_to_reuse.mean_ns",
    "rcu.gp.mean_ns",
    "rcu.callbacks_pending_max",
    "mem.held.mean_bytes",
    "lock.ptl.contention_ratio",
]


class ReportSpecError(ValueError):
    pass


class ReportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    figures: list[str] = Field(default_factory=lambda: list(groups()))
    x: str | None = None
    metrics: list[str] | None = None
    latency_ops: list[str] = ["fault", "alloc", "defer", "exit"]
    title: str | None = None

    @field_validator("figures")
    @classmethod
    def _figures(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        grouped = groups()
        every = [n for n, _ in ordered()]
        for name in v:
            if name in grouped:
                out += grouped[name]
            elif name in every:
                out.append(name)
            else:
                raise ValueError(
                    f"unknown figure {name!r}; allowed: {', '.join([*grouped, *every])}"
                )
        return list(dict.fromkeys(out))

    @field_validator("latency_ops")
    @classmethod
    def _ops(cls, v: list[str]) -> list[str]:
        bad = [o for o in v if o not in LATENCY_OPS]
        if bad:
            raise ValueError(f"unknown operation {bad[0]!r}; allowed: {', '.join(LATENCY_OPS)}")
        return v


def parse_spec(data: dict | None, where: str = "report") -> ReportSpec:
    try:
        return ReportSpec.model_validate(data or {})
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"] if not isinstance(p, int))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown key; allowed: {', '.join(ReportSpec.model_fields)}"
        raise ReportSpecError(f"{where}.{loc}: {msg}") from None
