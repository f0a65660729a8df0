"""Bounded streaming statistics: log-binned latency histograms and lock-class counters.

A run of any length keeps O(bins) memory per metric: each sample lands in one of 100 bins per
decade (2.3% relative width), while count, sum, min and max stay exact.
"""

from __future__ import annotations

import math

BINS_PER_DECADE = 100
_NBINS = 13 * BINS_PER_DECADE  # up to 1e13 ns
_LOG = math.log10


class LogHistogram:
    """Counts of non-negative samples in logarithmic bins, with exact moments.

    Bins live in a flat list (index 0 holds samples below 1 ns; the last bin everything past
    ~3 hours): a list index is several times cheaper than a dict update on this hot path.
    """

    __slots__ = ("bins", "n", "total", "lo", "hi")

    def __init__(self) -> None:
        self.bins = [0] * (_NBINS + 1)
        self.n = 0
        self.total = 0.0
        self.lo = math.inf
        self.hi = -math.inf

    def add(self, x: float) -> None:
        if x >= 1:
            i = int(_LOG(x) * BINS_PER_DECADE) + 1
            self.bins[i if i <= _NBINS else _NBINS] += 1
        else:
            self.bins[0] += 1
        self.n += 1
        self.total += x
        if x < self.lo:
            self.lo = x
        if x > self.hi:
            self.hi = x

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def items(self):
        """(bin index, count) of the non-empty bins, in order; index -1 is below 1 ns."""
        for i, c in enumerate(self.bins):
            if c:
                yield i - 1, c

    @property
    def counts(self) -> dict[int, int]:
        return dict(self.items())

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    def quantile(self, q: float) -> float:
        """The q-quantile, read at the geometric middle of its bin and clamped to [min, max]."""
        if not self.n:
            return math.nan
        rank = q * (self.n - 1)
        seen = 0
        for idx, c in self.items():
            seen += c
            if seen > rank:
                mid = 0.0 if idx < 0 else 10 ** ((idx + 0.5) / BINS_PER_DECADE)
                return min(max(mid, self.lo), self.hi)
        return self.hi

    @staticmethod
    def bin_edges(idx: int) -> tuple[float, float]:
        if idx < 0:
            return 0.0, 1.0
        return 10 ** (idx / BINS_PER_DECADE), 10 ** ((idx + 1) / BINS_PER_DECADE)

    def summary(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}.count": self.n,
            f"{prefix}.mean_ns": self.mean,
            f"{prefix}.p50_ns": self.quantile(0.5),
            f"{prefix}.p99_ns": self.quantile(0.99),
            f"{prefix}.max_ns": self.hi if self.n else math.nan,
        }


class LockClassStats:
    """Per lock class (all ``ptl`` locks share one): what lockstat would report."""

    __slots__ = ("name", "acquisitions", "contended", "handoffs", "wait", "hold_total", "hold_max")

    def __init__(self, name: str) -> None:
        self.name = name
        self.clear()

    def clear(self) -> None:
        self.acquisitions = 0
        self.contended = 0
        self.handoffs = 0  # acquisitions whose cache line came from another CPU
        self.wait = LogHistogram()  # contended acquisitions only
        self.hold_total = 0
        self.hold_max = 0

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
