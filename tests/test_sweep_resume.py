"""A sweep killed by SIGKILL mid-way is completed by re-running the same command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_sigkill_mid_sweep_then_rerun_completes_every_run_once(tmp_path):
    exp = tmp_path / "kill.yaml"
    exp.write_text(
        yaml.safe_dump(
            {
                "base": str(ROOT / "configs" / "default.yaml"),
                "set": {"duration": "25ms", "warmup": "2ms", "machine.cpus": 2},
                "seed": 9,
                "replications": 5,
                "sweep": {"grid": {"allocator.name": ["generic", "s390"]}},
            }
        )
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "desim.cli", "sweep", str(exp), "--jobs", "2", "--out", str(out)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    runs = out / "runs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = list(runs.glob("*/DONE")) if runs.exists() else []
        if len(done) >= 2:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, like a power cut
    proc.wait()
    n_done = len(list(runs.glob("*/DONE")))
    assert 2 <= n_done < 10, "the kill should land mid-sweep"
    # nothing visible looks finished without being finished
    for d in runs.iterdir():
        if not d.name.startswith("."):
            assert (d / "DONE").exists()
    assert not (out / "runs.parquet").exists()

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"{n_done} already done" in res.stderr
    names = sorted(p.name for p in runs.iterdir())
    assert names == [f"p{p:03d}-r{r:02d}" for p in range(2) for r in range(5)]
    table = pd.read_parquet(out / "runs.parquet")
    assert sorted(table["run_id"]) == names and set(table["status"]) == {"ok"}
    for d in runs.iterdir():  # every file of every run reads back
        for f in d.glob("*.parquet"):
            pd.read_parquet(f)
        json.loads((d / "summary.json").read_text())
        assert json.loads((d / "manifest.json").read_text())["run_id"] == d.name
