"""Page-table memory each design holds on a replayed workload, means over replications.

    python experiments/replay_table.py RESULTS_DIR

RESULTS_DIR is a ``desim sweep`` output of a replay experiment (``experiments/replay-designs
.yaml``). Columns, in KiB: live tables (time mean and peak), what the design holds beyond them
(``mem.overhead.*`` = total - live: pending a grace period, stranded, spare, internal, batch
pages; time mean and peak) and the overhead's mean as a share of the live mean; then the
trace's activity as replayed (tables allocated, faults) and safety violations.
"""

import json
import sys
from pathlib import Path

import pandas as pd


def _label(row) -> str:
    """The design, its machine and the one parameter that tells geometries apart."""
    params = row.get("allocator.params")
    params = json.loads(params) if isinstance(params, str) else params or {}
    extra = [f"{k}={params[k]}" for k in ("geometry", "fragment_size") if k in params]
    return " ".join([row["allocator.name"], str(row.get("machine.arch", "")), *extra])


def main(out: str) -> None:
    d = pd.read_parquet(Path(out) / "runs.parquet")
    d = d[d["status"] == "ok"].copy()
    d["design"] = d.apply(_label, axis=1)
    kib = {
        "live mean": "mem.live.mean_bytes",
        "live peak": "mem.live.peak_bytes",
        "over mean": "mem.overhead.mean_bytes",
        "over peak": "mem.overhead.peak_bytes",
        "total peak": "mem.total.peak_bytes",
    }
    g = d.groupby("design", sort=False)
    t = pd.DataFrame({k: g[v].mean() / 1024 for k, v in kib.items()})
    t["over/live"] = (t["over mean"] / t["live mean"]).map("{:.0%}".format)
    t["tables"] = g["count.tables.allocated"].mean()
    t["faults"] = g["fault.count"].mean()
    t["violations"] = g["safety.violations"].mean()
    t["runs"] = g.size()
    with pd.option_context("display.width", 200, "display.float_format", "{:,.1f}".format):
        print(t.to_string())


if __name__ == "__main__":
    main(*sys.argv[1:])
