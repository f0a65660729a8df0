"""Bounded streaming statistics: log-binned latency histograms and lock-class counters.

A run of any length keeps O(bins) memory per metric: each sample lands in one of 100 bins per
decade (2.3% relative width), while count, sum, min and max stay exact.
"""

from __future__ import annotations

import math

import numpy as np

BINS_PER_DECADE = 100
_NBINS = 13 * BINS_PER_DECADE  # up to 1e13 ns


class LogHistogram:
    """Counts of non-negative integer samples (ns) in logarithmic bins, with exact moments.

    ``add(x)`` only appends to a pending list (one C call: it runs on the hottest paths, several
    times per simulated fault); the pending samples are binned with numpy in batches, when the
    histogram is read or ``flush`` is called (the engine does so at its checkpoints, which
    bounds the memory). Index 0 of the bins holds samples below 1 ns; the last, everything
    past ~3 hours.
    """

    __slots__ = ("add", "_pending", "_bins", "_n", "_total", "_lo", "_hi")

    def __init__(self) -> None:
        self._pending: list[int] = []
        self.add = self._pending.append
        self._reset()

    def _reset(self) -> None:
        self._bins = np.zeros(_NBINS + 1, dtype=np.int64)
        self._n = 0
        self._total = 0.0
        self._lo = math.inf
        self._hi = -math.inf

    def flush(self, min_batch: int = 1) -> None:
        """Bin the pending samples, if there are at least ``min_batch`` of them."""
        p = self._pending
        if not p or len(p) < min_batch:
            return
        x = np.asarray(p)
        if x.dtype.kind not in "iu":
            raise TypeError(f"latency samples are integer ns, got {x.dtype} ({p[:3]}...)")
        # bin 0 below 1 ns, else 1 + floor(log10(x) * BINS_PER_DECADE), capped (no masks: a
        # sample below 1 takes log10(1) = 0 and adds 0 for ``x >= 1``)
        idx = (np.log10(np.maximum(x, 1)) * BINS_PER_DECADE).astype(np.int64)
        idx += x >= 1
        np.minimum(idx, _NBINS, out=idx)
        self._bins += np.bincount(idx, minlength=_NBINS + 1)
        self._n += len(x)
        self._total += int(x.sum())  # integers: exact in any order
        self._lo = min(self._lo, int(x.min()))
        self._hi = max(self._hi, int(x.max()))
        p.clear()  # the same list: ``add`` stays bound to it

    def clear(self) -> None:
        self._pending.clear()
        self._reset()

    @property
    def n(self) -> int:
        self.flush()
        return self._n

    @property
    def total(self) -> float:
        self.flush()
        return self._total

    @property
    def lo(self) -> float:
        self.flush()
        return self._lo

    @property
    def hi(self) -> float:
        self.flush()
        return self._hi

    def items(self):
        """(bin index, count) of the non-empty bins, in order; index -1 is below 1 ns."""
        self.flush()
        bins = self._bins
        for i in np.flatnonzero(bins).tolist():
            yield i - 1, int(bins[i])

    @property
    def counts(self) -> dict[int, int]:
        return dict(self.items())

    @property
    def mean(self) -> float:
        n = self.n
        return self._total / n if n else math.nan

    def quantile(self, q: float) -> float:
        """The q-quantile, read at the geometric middle of its bin and clamped to [min, max]."""
        n = self.n
        if not n:
            return math.nan
        rank = q * (n - 1)
        i = int(np.searchsorted(np.cumsum(self._bins), rank, side="right"))
        if i > _NBINS:
            return self._hi
        mid = 0.0 if i == 0 else 10 ** ((i - 0.5) / BINS_PER_DECADE)
        return min(max(mid, self._lo), self._hi)

    @staticmethod
    def bin_edges(idx: int) -> tuple[float, float]:
        if idx < 0:
            return 0.0, 1.0
        return 10 ** (idx / BINS_PER_DECADE), 10 ** ((idx + 1) / BINS_PER_DECADE)

    def summary(self, prefix: str) -> dict[str, float]:
        n = self.n
        return {
            f"{prefix}.count": n,
            f"{prefix}.mean_ns": self.mean,
            f"{prefix}.p50_ns": self.quantile(0.5),
            f"{prefix}.p99_ns": self.quantile(0.99),
            f"{prefix}.max_ns": self._hi if n else math.nan,
        }


class LockClassStats:
    """Per lock class (all ``ptl`` locks share one): what lockstat would report.

    Waits are a histogram (their tail is what contention costs); hold times, as lockstat keeps
    them, are an exact total and maximum, two integers updated at each release.
    """

    __slots__ = (
        "name",
        "uncontended",
        "contended",
        "free_handoffs",
        "regrants",
        "wait",
        "hold_total",
        "hold_max",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.wait = LogHistogram()  # contended acquisitions only
        self.clear()

    def clear(self) -> None:
        self.uncontended = 0
        self.contended = 0
        # Handoffs (acquisitions whose cache line came from another CPU) are counted from their
        # exceptions on the contended path, the common one under load: a waiter gets the line
        # from the releasing CPU unless it is that CPU (a regrant).
        self.free_handoffs = 0  # uncontended acquisitions after another CPU's release
        self.regrants = 0
        self.wait.clear()  # in place: holders of ``wait.add`` keep recording here
        self.hold_total = 0  # ns held, every acquisition, from grant to release
        self.hold_max = 0

    @property
    def acquisitions(self) -> int:
        return self.uncontended + self.contended

    @property
    def handoffs(self) -> int:
        return self.free_handoffs + self.contended - self.regrants

    def summary(self) -> dict[str, float]:
        p = f"lock.{self.name}"
        n = self.acquisitions
        return {
            f"{p}.acquisitions": n,
            f"{p}.contended": self.contended,
            f"{p}.contention_ratio": self.contended / n if n else 0.0,
            f"{p}.wait_mean_ns": self.wait.total / n if n else 0.0,
            f"{p}.wait_p99_contended_ns": self.wait.quantile(0.99) if self.wait.n else 0.0,
            f"{p}.wait_max_ns": self.wait.hi if self.wait.n else 0.0,
            f"{p}.hold_mean_ns": self.hold_total / n if n else 0.0,
            f"{p}.hold_max_ns": self.hold_max,
        }
