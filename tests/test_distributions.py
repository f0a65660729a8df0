"""Distributions in YAML: each kind's samples match its parameters, within statistical tolerance.

Tolerance: every check allows 5 standard errors of the estimate (mean: sd/sqrt(n); a quantile
is checked through the sample CDF at the true quantile, whose standard error is the binomial
sqrt(p(1-p)/n)). A correct sampler fails one check with probability ~6e-7; seeds are fixed, so
the outcome is deterministic, and a wrong parameterisation (say sigma off by 10%, or a median
taken for a mean) moves the estimate by tens of standard errors at n = 200,000.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from scipy import stats

from desim.config import ConfigError, load_config
from desim.distributions import (
    Z99,
    CountDist,
    Empirical,
    Interarrival,
    Lognormal,
    TimeDist,
)

N = 200_000
TIME = TypeAdapter(TimeDist)
COUNT = TypeAdapter(CountDist)
RATE = TypeAdapter(Interarrival)


def _draws(dist, seed=5, n=N):
    return dist.draw(np.random.default_rng(seed), n)


def _mean_ok(x, mean, sd):
    assert abs(x.mean() - mean) <= 5 * sd / math.sqrt(len(x)), (x.mean(), mean)


def _quantile_ok(x, q, at):
    """The share of draws at or below the true q-quantile ``at`` is q, within 5 binomial SEs."""
    frac = np.mean(x <= at)
    assert abs(frac - q) <= 5 * math.sqrt(q * (1 - q) / len(x)) + 1e-12, (q, frac)


def test_z99_is_the_normal_99th_percentile():
    assert stats.norm.ppf(0.99) == pytest.approx(Z99, rel=1e-12)


def test_units_everywhere():
    assert TIME.validate_python("2us").value == 2000
    assert TIME.validate_python({"dist": "exponential", "mean": "3ms"}).mean() == 3_000_000
    assert TIME.validate_python({"dist": "uniform", "low": "1us", "high": "3us"}).mean() == 2000
    ln = TIME.validate_python({"dist": "lognormal", "median": "50ms", "p99": "2s"})
    assert ln.median == 50_000_000 and ln.p99 == 2_000_000_000
    emp = TIME.validate_python({"dist": "empirical", "values": ["1us", 2000, "0.003ms"]})
    assert list(emp.data) == [1000, 2000, 3000]
    assert RATE.validate_python("500/s").mean() == pytest.approx(2_000_000)
    assert COUNT.validate_python(7).value == 7


def test_exponential_and_uniform_match_their_parameters():
    x = _draws(TIME.validate_python({"dist": "exponential", "mean": "10us"}))
    _mean_ok(x, 10_000, 10_000)
    _quantile_ok(x, 0.5, 10_000 * math.log(2))
    _quantile_ok(x, 0.99, 10_000 * math.log(100))
    u = _draws(TIME.validate_python({"dist": "uniform", "low": 100, "high": 300}))
    _mean_ok(u, 200, 200 / math.sqrt(12))
    _quantile_ok(u, 0.9, 280)


@pytest.mark.parametrize(
    "spec",
    [
        {"dist": "lognormal", "median": "1us", "p99": "4us"},  # a minor fault (DOMAIN.md)
        {"dist": "lognormal", "median": "50ms", "sigma": 1.2},
        {"dist": "lognormal", "mu": math.log(2000), "sigma": 0.5},
    ],
)
def test_lognormal_median_p99_mean(spec):
    d = TIME.validate_python(spec)
    assert isinstance(d, Lognormal)
    x = _draws(d)
    mu, sigma = d.mu, d.sigma
    _quantile_ok(x, 0.5, math.exp(mu))
    _quantile_ok(x, 0.99, math.exp(mu + Z99 * sigma))
    if "p99" in spec:
        assert math.exp(mu + Z99 * sigma) == pytest.approx(d.p99)
    sd = math.sqrt((math.exp(sigma**2) - 1) * math.exp(2 * mu + sigma**2))
    _mean_ok(x, d.mean(), sd)


def test_lognormal_refuses_an_incomplete_or_inverted_shape():
    with pytest.raises(ValueError, match="median and p99"):
        TIME.validate_python({"dist": "lognormal", "median": "1us"})
    with pytest.raises(ValueError, match="p99 must be >= median"):
        TIME.validate_python({"dist": "lognormal", "median": "4us", "p99": "1us"})


def test_empirical_resampling_reproduces_input_quantiles():
    rng = np.random.default_rng(2)
    data = rng.lognormal(7, 1, 5000).round()
    d = TIME.validate_python({"dist": "empirical", "values": data.tolist()})
    x = _draws(d)
    assert set(np.unique(x)) <= set(data)  # bootstrap: only input values come out
    for q in (0.1, 0.5, 0.9, 0.99):
        at = np.quantile(data, q, method="inverted_cdf")
        _quantile_ok(x, float(np.mean(data <= at)), at)
    _mean_ok(x, data.mean(), data.std())


def test_empirical_interpolation_follows_the_linear_inverse_cdf():
    data = [0.0, 10.0, 40.0]  # inverse CDF: u*2 in [0,1] -> 0..10, [1,2] -> 10..40
    d = COUNT.validate_python({"dist": "empirical", "values": data, "interpolate": True})
    x = _draws(d)
    for q in (0.25, 0.5, 0.75, 0.9):
        _quantile_ok(x, q, float(np.quantile(data, q)))
    assert x.min() >= 0 and x.max() <= 40
    _mean_ok(x, (5 * 0.5 + 25 * 0.5), 12)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0, 1e9, allow_nan=False), min_size=1, max_size=50),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_empirical_draws_stay_within_the_data(values, interp, seed):
    d = Empirical(values=values, interpolate=interp)
    x = d.draw(np.random.default_rng(seed), 500)
    assert x.min() >= min(values) and x.max() <= max(values)


def test_empirical_csv_beside_the_config(tmp_path, monkeypatch):
    (tmp_path / "lifetimes.csv").write_text(
        "# measured with bpftrace\npid,life\n1,10ms\n2,30ms\n3,20ms\n"
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "duration: 10ms\nworkload:\n  processes:\n    lifetime: "
        "{dist: empirical, file: lifetimes.csv, column: life}\n"
    )
    monkeypatch.chdir("/")  # relative to the config file, not the current directory
    c = load_config(cfg)
    life = c.workload["processes"].lifetime
    assert list(life.data) == [10e6, 20e6, 30e6]
    assert life.file == str((tmp_path / "lifetimes.csv").resolve())
    # the saved config (absolute path) loads back to the same samples
    again = TIME.validate_python(life.model_dump(by_alias=True))
    assert list(again.data) == list(life.data)


def test_empirical_csv_errors_name_the_field(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("workload:\n  processes:\n    lifetime: {dist: empirical, file: nope.csv}\n")
    with pytest.raises(ConfigError, match=r"workload\.processes\.lifetime.*nope\.csv.*not found"):
        load_config(cfg)
    (tmp_path / "bad.csv").write_text("1ms\nsoon\n")
    cfg.write_text("workload:\n  processes:\n    lifetime: {dist: empirical, file: bad.csv}\n")
    with pytest.raises(ConfigError, match="row 2"):
        load_config(cfg)


def test_unknown_kind_lists_the_allowed_ones():
    with pytest.raises(
        ValueError, match="allowed: constant, exponential, uniform, lognormal, empirical"
    ):
        TIME.validate_python({"dist": "pareto", "mean": 3})


def test_samplers_are_buffered_and_reproducible():
    d = TIME.validate_python({"dist": "lognormal", "median": "1us", "sigma": 0.3})
    a = d.ns_sampler(np.random.default_rng(9))
    b = d.ns_sampler(np.random.default_rng(9))
    xs = [a() for _ in range(5000)]
    assert xs == [b() for _ in range(5000)]
    assert all(isinstance(v, int) for v in xs)
