"""One run's fixed lifecycle: build → start → run → finalize → collect.

``simulate(config)`` returns a ``RunResult`` of plain Python data (no pandas); writing it to disk
is ``desim.results``' job. Failed runs raise; the CLI and the sweep runner record them.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

from simpy.events import Timeout

from desim import __version__
from desim.config import Config
from desim.model.machine import Machine
from desim.model.safety import SafetyStop
from desim.model.simcore import run_events, urgent_marker
from desim.records import MEMORY_COLUMNS, SERIES_COLUMNS, LatencyBin
from desim.rng import Streams
from desim.workloads import ELEMENTS


@dataclass
class RunResult:
    config: Config
    summary: dict[str, float]
    series: dict[str, list]
    latency_hist: list[LatencyBin]
    locks: list[dict]
    gp_spans: list[tuple[int, int]]
    violations: list[dict]
    events: int
    wall_s: float
    stopped_early: str | None = None
    samples: dict[str, list] | None = field(default=None, repr=False)


class _Checkpoint(Exception):
    """Raised by a checkpoint event: hands control from SimPy back to the run loop."""


def _raise_checkpoint(_event) -> None:
    raise _Checkpoint


CHECKPOINTS = 256  # per run, at least: progress updates and statistics flushes
MAX_CHECKPOINT_SPAN = 10 * 1_000_000  # ns of simulated time between two checkpoints, at most
FLUSH_BATCH = 2048  # a checkpoint bins a histogram's pending samples from this many on


def _run(m: Machine, until: int, progress) -> tuple[int, str | None]:
    """Process events up to ``until``; returns how many, and why the run stopped early if it did.

    The run is cut into spans by checkpoint events: at each, the machine bins the latency
    samples pending in any histogram holding ``FLUSH_BATCH`` or more (so their memory stays
    bounded, and numpy works on batches worth its call) and ``progress(now)``
    is called. A checkpoint runs first among the events of its instant and changes nothing in
    the model, so the model's events keep their order; it is not counted among them. Between
    checkpoints ``simcore.run_events`` steps events with no test per event: the count of model
    events stepped is exact, a deterministic figure of the run.
    """
    env = m.env
    span = max(1, min(until // CHECKPOINTS, MAX_CHECKPOINT_SPAN))
    t = env.now
    start = env.popped
    checkpoints = 0
    while t < until:
        t = min(until, t + span)
        # first among the events of instant ``t``, so a span covers times below ``t`` only
        urgent_marker(env, t - env.now, _raise_checkpoint)
        # the fault lookahead may look past other events up to the span's end, or up to the
        # statistics reset at the end of the warm-up if that comes first
        w = m.stats_reset_at
        m.fence = w if env.now < w < t else t
        try:
            run_events(env)
        except _Checkpoint:
            checkpoints += 1
        except SafetyStop as exc:
            # the event that hit the violation was processed too; a fault's lookahead walk
            # that has not ended yet has taken no ptl (what the run's statistics count)
            for c in m.cpus:
                c.end_lookahead()
            return env.popped - start - checkpoints, str(exc)
        m.flush_stats(FLUSH_BATCH)
        if progress is not None:
            progress(t)
    return env.popped - start - checkpoints, None


def _sampler(m: Machine, interval: int, series: dict[str, list]):
    acc = m.allocator.account
    pages = m.pages
    rcu = m.rcu
    cols = [series[c] for c in SERIES_COLUMNS]
    env = m.env
    while True:
        live, pending, stranded, spare, internal = acc.as_tuple()
        n_tables = sum(len(mm.tables) for mm in m.mms)
        row = (
            env.now,
            live,
            pending,
            stranded,
            spare,
            internal,
            acc.tlb_batch,
            acc.held,
            pages.pages_held("pgtable"),
            rcu.pending,
            int(rcu.gp_active),
            len(m.mms),
            n_tables,
        )
        for col, v in zip(cols, row, strict=True):
            col.append(v)
        yield Timeout(env, interval)


def memory_results(m: Machine, series: dict[str, list]):
    """The memory books' contribution to summary.json: the exact peak of each kind (kept by the
    account at every transition since the warm-up) and its mean over the sampled series."""

    def results(now: int) -> dict[str, float]:
        acc = m.allocator.account
        peaks = acc.peaks()
        total = [h + b for h, b in zip(series["held"], series["tlb_batch"], strict=True)]
        cols = {**series, "total": total}
        s: dict[str, float] = {}
        for kind in MEMORY_COLUMNS:
            col = cols[kind]
            s[f"mem.{kind}.peak_bytes"] = peaks[kind]
            s[f"mem.{kind}.mean_bytes"] = sum(col) / len(col) if col else 0
        # overhead: every byte page tables cost beyond the live tables, batch pages included
        waste = [tt - lv for tt, lv in zip(total, series["live"], strict=True)]
        s["mem.overhead.peak_bytes"] = peaks["overhead"]
        s["mem.overhead.mean_bytes"] = sum(waste) / len(waste) if waste else 0
        s["mem.samples"] = len(series["t_ns"])
        s["mem.held_end_bytes"] = acc.held
        return s

    return results


def build(config: Config, streams: Streams | None = None) -> Machine:
    m = Machine(config, streams)
    for name, params in config.workload.items():
        ELEMENTS.get(name)(m, params).start()
    return m


def simulate(
    config: Config, streams: Streams | None = None, progress=None, trace=None
) -> RunResult:
    """Run one simulation to ``config.duration`` and collect its results.

    ``progress``, if given, is called as ``progress(sim_now_ns)`` at each of the run's checkpoints.
    ``trace``, a ``desim.trace.Tracer``, is attached to the machine before it runs.
    """
    wall0 = time.perf_counter()
    m = build(config, streams)
    if trace is not None:
        trace.attach(m)
    env = m.env
    series: dict[str, list] = {c: [] for c in SERIES_COLUMNS}
    m.result_hooks.insert(3, memory_results(m, series))  # beside the machine's own parts
    if config.record.enabled:
        env.process(_sampler(m, config.record.sample_interval, series))
    if config.warmup:
        m.stats_reset_at = config.warmup

        def _warm():
            yield Timeout(env, config.warmup)
            m.clear_stats()
            for v in series.values():
                v.clear()

        env.process(_warm())
    # Everything alive before the run (imported libraries, the config, the built machine)
    # outlives it: frozen, the collector's full passes during the run skip it (~4% fewer
    # instructions on default.yaml). Unfrozen after, so nothing is kept from collection.
    gc.freeze()
    try:
        events, stopped = _run(m, config.duration, progress)
    finally:
        gc.unfreeze()
    wall = time.perf_counter() - wall0
    return collect(m, series, events, wall, stopped)


def collect(
    m: Machine, series: dict[str, list], events: int, wall: float, stopped: str | None
) -> RunResult:
    cfg = m.config
    env = m.env
    now = env.now
    s: dict[str, float] = {
        "sim.duration_ns": now,
        "sim.events": events,
    }
    for hook in m.result_hooks:
        s.update(hook(now))
    if m.safety is not None:
        s.update(m.safety.summary())
        violations = m.safety.records
    else:
        violations = []
    hist_rows = []
    for op, h in m.latency.items():
        for idx, n in h.items():
            lo, hi = h.bin_edges(idx)
            hist_rows.append(LatencyBin(op, idx, lo, hi, n))
    locks = [
        {"lock_class": st.name, **{k.split(".")[-1]: v for k, v in st.summary().items()}}
        for st in m.lock_classes.values()
        if st.acquisitions
    ]
    return RunResult(
        config=cfg,
        summary=s,
        series=series,
        latency_hist=hist_rows,
        locks=locks,
        gp_spans=list(m.rcu.gp_spans),
        violations=violations,
        events=events,
        wall_s=wall,
        stopped_early=stopped,
        samples=m.samples,
    )


VERSION = __version__
