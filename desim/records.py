"""Every name results are written and read under: files, markers, record types, columns, metrics.

The model writes, ``desim.results`` stores, the sweep aggregates and the report reads, all by
the names declared here, so a column or a memory kind is spelled once. Standard library only:
the report and the sweep import it without importing the model.

* **Record types** are ``NamedTuple``\\ s: a list of them is a DataFrame with no column list
  written anywhere else (``pd.DataFrame(rows, columns=LatencyBin._fields)``).
* **Memory kinds** are the split of DOMAIN.md section 4; ``held`` is their sum.
* **Metrics** in ``summary.json`` are flat ``{name: number}``; each component of the machine
  contributes its own (``desim.engine.collect`` iterates over them); README lists them.
* **Counters** are declared: the machine's counter table holds the declared names only, so a
  misspelt counter fails at its first use instead of becoming a new metric.
"""

from __future__ import annotations

from typing import NamedTuple

# -- files and markers of a run, sweep, report or probe directory ------------------------------------
DONE = "DONE"
FAILED = "FAILED"
SWEEP = "SWEEP"
REPORT = "REPORT"
PROBE = "PROBE"
EXPLORE = "EXPLORE"  # a desim explore result: counterexample or coverage
CONFIG = "config.yaml"
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
VIOLATIONS = "violations.json"
TRACEBACK = "traceback.txt"
TIMESERIES = "timeseries"  # <name>.parquet
LATENCY = "latency"
LOCKS = "locks"
GP = "gp"
SAMPLES = "samples"  # only with record.latency_samples
PARQUETS = (TIMESERIES, LATENCY, LOCKS, GP)
OPTIONAL_PARQUETS = (SAMPLES,)
RUNS_TABLE = "runs.parquet"
POINTS_TABLE = "points.parquet"


def temp_name(name: str, pid: int, kind: str = "tmp") -> str:
    """The hidden sibling a directory ``name`` is staged in (``tmp``) or moved aside to (``old``)."""
    return f".{name}.{kind}-{pid}"


# -- memory ------------------------------------------------------------------------------------------
MEMORY_KINDS = ("live", "pending", "stranded", "spare", "internal")  # a design's split
HELD = "held"  # the sum of MEMORY_KINDS: the pages the design holds
TLB_BATCH = "tlb_batch"  # mmu_gather batch pages, held until their grace period
TOTAL = "total"  # everything page tables cost: held + tlb_batch
# in the summary as mem.<kind>.peak_bytes / .mean_bytes
MEMORY_COLUMNS = (*MEMORY_KINDS, TLB_BATCH, HELD, TOTAL)

# -- latency ------------------------------------------------------------------------------------------
LATENCY_OPS = (
    "fault",
    "alloc",
    "free",
    "defer",
    "exit",
    "munmap",
    "fork",
    "retract",
    "free_to_reuse",
)


class LatencyBin(NamedTuple):
    """One bin of a log-binned latency histogram (``latency.parquet``)."""

    op: str
    bin: int
    lo_ns: float
    hi_ns: float
    count: int


class GpSpan(NamedTuple):
    """One grace period (``gp.parquet``)."""

    start_ns: int
    end_ns: int


class Sample(NamedTuple):
    """One latency sample (``samples.parquet``)."""

    op: str
    ns: int


class SeriesRow(NamedTuple):
    """One sample of the machine's state (``timeseries.parquet``), every record.sample_interval."""

    t_ns: int
    live: int
    pending: int
    stranded: int
    spare: int
    internal: int
    tlb_batch: int
    held: int
    pgtable_pages: int
    cb_backlog: int
    gp_active: int
    mms: int
    tables: int


SERIES_COLUMNS = SeriesRow._fields
SERIES_METRICS = SERIES_COLUMNS[1:]  # what steady-state means are computed over

# -- counters ----------------------------------------------------------------------------------------
# The machine's own counters; designs and workload elements declare theirs (``counters`` on
# their class). In summary.json each is ``count.<name>``; a counter never incremented is left out.
CORE_COUNTERS = (
    "mm.created",
    "mm.exited",
    "mm.freed",
    "munmap.count",
    "collapse.madvise",
    "tables.allocated",
    "tables.deferred",
    "tables.gathered",
    "alloc.failed",
    "alloc.lost_race",
    "fault.retries",
    "tlb.batches",
    "tlb.sync_frees",
    "tlb.flush_frees",
    "ipi.waited_irqs_off",
    # gup_fast_walk (desim.workloads.gup_fast) is a machine operation tests call directly
    "gup_fast.walks",
    "gup_fast.pages",
    "gup_fast.backoffs",
)


def declared_counters(cls: type) -> tuple[str, ...]:
    """The counters a plugin class and its bases declare (``counters`` class attributes)."""
    out: list[str] = []
    for c in reversed(cls.__mro__):
        out.extend(c.__dict__.get("counters", ()))
    return tuple(out)


def counter_table(*declared: tuple[str, ...]) -> dict[str, int]:
    """A counter table holding exactly the declared names, at zero: incrementing any other
    name raises ``KeyError`` at once."""
    table: dict[str, int] = {}
    for names in declared:
        for n in names:
            table[n] = 0
    return table
