"""The report's look as rules: one unit per headline column, ECDF steps, readable log axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from desim.report.figures.plot import hist_ecdf, sample_ecdf  # noqa: E402
from desim.report.style import log_time_axis  # noqa: E402
from desim.report.tables import column_unit, fmt_number, fmt_value  # noqa: E402


def test_one_unit_per_column_picked_from_its_largest_value():
    # 265 KiB and 1.63 MiB in one column: all MiB, as the header will say
    assert column_unit("mem.overhead.mean_bytes", [265 * 1024, 1.63 * 2**20]) == ("MiB", 2**20)
    assert column_unit("fault.p99_ns", [966, 1300]) == ("µs", 1e3)
    assert column_unit("fault.p99_ns", [0.0, float("nan")]) == ("ns", 1.0)
    assert column_unit("rcu.callbacks_pending_max", [42]) == ("", 1.0)
    assert column_unit("lock.ptl.contention_ratio", [0.001]) == ("%", 0.01)
    # 1000 KiB reads 0.977 MiB, never "1e+03 KiB"
    assert column_unit("x_bytes", [1000 * 1024]) == ("MiB", 2**20)
    assert fmt_number(265 * 1024, 2**20) == "0.259"
    assert fmt_number(float("nan")) == "–"
    assert fmt_value("fault.p99_ns", 1300) == "1.3 µs"
    assert fmt_value("lock.ptl.contention_ratio", 0.001) == "0.1%"


def test_ecdf_of_one_bin_is_one_vertical_step():
    h = pd.DataFrame(
        {"run_id": ["a"], "op": ["defer"], "lo_ns": [29.3], "hi_ns": [30.0], "count": [40]}
    )
    e = hist_ecdf(h, ["op"]).sort_values("ns")
    assert e["mean"].tolist() == [0.0, 1.0, 1.0]  # 0 left of the bin, 1 from its edge on
    assert e["ns"].iloc[0] < 30.0 == e["ns"].iloc[1] < e["ns"].iloc[2]


def test_sample_ecdf_steps_at_the_values():
    df = pd.DataFrame({"run_id": ["a"] * 4, "g": ["x"] * 4, "v": [3e6, 3e6, 3e6, 2e6]})
    e = sample_ecdf(df, "v", ["g"]).sort_values("ns")
    assert e["ns"].tolist()[1:3] == [2e6, 3e6]
    assert e["mean"].tolist() == [0.0, 0.25, 1.0, 1.0]


def test_log_time_axis_around_a_single_value_has_distinct_labels():
    fig, ax = plt.subplots()
    ax.plot([30, 30.6], [0, 1])
    log_time_axis(ax, "x")
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    assert np.log10(hi / lo) >= 0.99
    labels = [
        t.get_text()
        for t in ax.get_xticklabels()
        if t.get_text() and lo <= t.get_position()[0] <= hi
    ]
    assert len(labels) >= 2 and len(labels) == len(set(labels)), labels
    plt.close(fig)
