"""``desim record`` on this host, for real: it needs root and tracefs, and skips saying so
without them. Each test checks that everything tracefs holds is as it was before: mounts, the
instances, the global switches, and no temporary mount point left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from desim.hosttrace import format as hfmt
from desim.hosttrace.tracefs import tracefs_mount


def _why_not() -> str | None:
    if sys.platform != "linux":
        return f"desim record traces Linux; this is {sys.platform}"
    if os.geteuid() != 0:
        return "desim record needs root"
    try:
        if "tracefs" not in Path("/proc/filesystems").read_text():
            return "this kernel has no tracefs"
    except OSError as exc:
        return f"cannot read /proc/filesystems: {exc}"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")
ROOT = Path(__file__).resolve().parents[1]
TOP_FILES = ("tracing_on", "set_event", "set_event_pid", "buffer_size_kb", "options/event-fork")


def tracefs_state() -> dict:
    mounts = sorted(
        line for line in Path("/proc/mounts").read_text().splitlines() if " tracefs " in line
    )
    state: dict = {
        "mounts": mounts,
        "tmp": sorted(p.name for p in Path(tempfile.gettempdir()).glob("desim-tracefs-*")),
    }
    root = tracefs_mount()
    if root is not None:
        state["instances"] = sorted(p.name for p in (root / "instances").iterdir())
        state["top"] = {f: (root / f).read_text() for f in TOP_FILES}
    return state


def desim(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "desim.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        **kw,
    )


def test_record_traces_a_process_tree_and_restores_tracefs(tmp_path):
    before = tracefs_state()
    out = tmp_path / "t.parquet"
    r = desim("record", "--out", str(out), "--", "sh", "-c", "ls / > /dev/null; true")
    assert r.returncode == 0, r.stderr
    assert tracefs_state() == before
    tr = hfmt.read(out)
    c = tr.counts()
    # sh execs (the recorder's own child before its exec is left out), runs ls in a child
    # that execs and exits, and exits
    assert c["execs"] == 2 and c["exits"] == 2 and c["mm_exits"] == 2
    assert c["forks"] + c["clones"] == 1 and c["starts"] == 0
    assert c["faults"] > 50 and 0 < c["tables"] < c["faults"]
    assert tr.meta["source"] == "tracefs" and tr.meta["command"] == "sh -c ls / > /dev/null; true"
    assert list(tr.columns["event"][:1]) == ["exec"]


def test_a_failing_command_is_recorded_and_its_status_returned(tmp_path):
    before = tracefs_state()
    out = tmp_path / "t.parquet"
    r = desim("record", "--out", str(out), "--", "sh", "-c", "exit 3")
    assert r.returncode == 3, r.stderr
    assert "exited with status 3" in r.stderr
    assert tracefs_state() == before
    assert hfmt.read(out).counts()["exits"] == 1


def test_a_missing_command_writes_nothing(tmp_path):
    before = tracefs_state()
    out = tmp_path / "t.parquet"
    r = desim("record", "--out", str(out), "--", "no-such-command-desim")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "desim: error: no-such-command-desim: command not found"
    )
    assert tracefs_state() == before and not out.exists()


def test_ctrl_c_stops_the_command_and_restores_tracefs(tmp_path):
    before = tracefs_state()
    out = tmp_path / "t.parquet"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(
        [sys.executable, "-m", "desim.cli", "record", "--out", str(out), "--", "sleep", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        name = f"desim-record-{p.pid}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the command runs, traced
            root = tracefs_mount()
            kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True)
            if root is not None and (root / "instances" / name).exists() and kids.stdout:
                break
            time.sleep(0.1)
        else:
            pytest.fail("desim record never started its command")
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err
    assert "interrupted" in err
    assert tracefs_state() == before and not out.exists()
