"""LogHistogram: samples binned in batches must equal samples binned one by one."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from desim.model.stats import BINS_PER_DECADE, LockClassStats, LogHistogram


def _reference(xs):
    """Each sample binned on its own, with the formula the histogram documents."""
    bins: dict[int, int] = {}
    total = 0.0
    for x in xs:
        idx = -1 if x < 1 else min(int(math.log10(x) * BINS_PER_DECADE), 13 * BINS_PER_DECADE - 1)
        bins[idx] = bins.get(idx, 0) + 1
        total += x
    return bins, total


samples = st.lists(st.integers(0, 10**14), max_size=300)


@given(samples, st.lists(st.integers(0, 300), max_size=5))
def test_batched_bins_equal_per_sample_bins(xs, cuts):
    h = LogHistogram()
    cuts = sorted(set(c for c in cuts if c <= len(xs)))
    for i, x in enumerate(xs):
        if i in cuts:
            h.flush()  # flushes at arbitrary points must not change anything
        h.add(x)
    bins, total = _reference(xs)
    assert h.counts == bins
    assert h.n == len(xs)
    assert h.total == total  # exact, as if summed one by one
    if xs:
        assert (h.lo, h.hi) == (min(xs), max(xs))
        assert h.lo <= h.quantile(0.5) <= h.hi
    else:
        assert math.isnan(h.mean) and math.isnan(h.quantile(0.5))


def test_quantile_reads_the_middle_of_the_bin_holding_the_rank():
    h = LogHistogram()
    for x in [10] * 49 + [1000] * 50 + [10**6]:  # rank of the median: 49.5
        h.add(x)
    # bin of 10 is [10, 10^(1.01)): its geometric middle, clamped to [min, max]
    assert h.quantile(0.0) == pytest.approx(10 ** (1.005))
    assert h.quantile(0.5) == pytest.approx(10 ** (3.005))
    assert h.quantile(1.0) == 10**6  # clamped to the maximum


def test_samples_are_integer_nanoseconds():
    h = LogHistogram()
    h.add(3)
    h.add(1.5)
    with pytest.raises(TypeError, match="integer ns"):
        h.flush()


def test_clear_keeps_add_bound_to_the_same_histogram():
    h = LogHistogram()
    add = h.add  # hot paths hold this
    add(5)
    h.clear()
    assert h.n == 0
    add(7)
    assert h.n == 1 and h.hi == 7


def test_lock_class_clear_keeps_its_wait_histogram():
    st_ = LockClassStats("x")
    add = st_.wait.add
    add(100)
    st_.clear()
    add(200)
    assert st_.wait.n == 1 and st_.wait.lo == 200
