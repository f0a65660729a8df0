"""The trace file of a real workload: what ``desim record`` writes and ``replay`` reads.

One parquet file, one row per event, in time order (ties keep the order the kernel logged
them). Columns:

========== ====== ===========================================================================
column     type   meaning
========== ====== ===========================================================================
time_ns    int64  nanoseconds since the trace's first event (the host's trace clock)
event      string ``start``, ``fork``, ``exec``, ``exit``, ``mm_exit``, ``fault``, ``munmap``,
                  ``collapse`` (below)
task       int32  the task (thread) that did it: a serial number of this trace, 0, 1, ...
                  (pids are reused; serials are not)
pid        int32  that task's kernel pid (thread id), for reading the trace beside others
cpu        int16  the host CPU it ran on
mm         int32  the address space (a serial number): the task's own; for ``fork`` the
                  child's, for ``exec`` and ``start`` the new one, for ``mm_exit`` the one
                  torn down
child      int32  ``fork``: the child's task serial; -1 otherwise
addr       uint64 ``fault``: the faulting address; ``munmap``, ``collapse``: the range's
                  start; 0 otherwise
length     uint64 ``munmap``: bytes unmapped; 0 otherwise
tables     int32  PTE tables (estimated, see below): ``fault``: 1 if it is the first fault
                  in its 2 MiB range of the mm (a new table), else 0; ``fork``: tables
                  copied into the child's new mm; ``munmap``, ``collapse``: tables freed;
                  ``mm_exit``: tables the mm held
flags      uint64 ``fork``: the clone flags (``CLONE_VM`` 0x100: the child shares the
                  parent's mm: a thread, ``vfork`` or ``posix_spawn``); 0 otherwise
========== ====== ===========================================================================

Events: ``start``: a task seen without its fork (already running when the trace began; its
mm's earlier tables are unknown); ``fork``: ``sched_process_fork`` with ``task_newtask``'s
flags; ``exec``: ``sched_process_exec`` (a new, empty mm); ``exit``: ``sched_process_exit`` of
one task; ``mm_exit``: the mm's last task left it (exit or exec), so ``exit_mmap`` freed its
tables; ``fault``: ``exceptions:page_fault_user``; ``munmap``: ``sys_enter_munmap``;
``collapse``: a file/shmem range collapsed into a huge page in the task's own context
(``huge_memory:mm_khugepaged_collapse_file`` succeeded: MADV_COLLAPSE), whose PTE table
the kernel frees with ``pte_free_defer``.

The file's key-value metadata holds ``desim.trace`` (the format version), ``source``
(``tracefs`` or the text format imported), ``command``, ``kernel``, ``cpus`` (host CPUs),
``lost_events`` and ``unseen`` (what the source could not see).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_VERSION = "1"
EVENTS = ("start", "fork", "exec", "exit", "mm_exit", "fault", "munmap", "collapse")
COLUMNS: dict[str, str] = {
    "time_ns": "int64",
    "event": "string",
    "task": "int32",
    "pid": "int32",
    "cpu": "int16",
    "mm": "int32",
    "child": "int32",
    "addr": "uint64",
    "length": "uint64",
    "tables": "int32",
    "flags": "uint64",
}
CLONE_VM = 0x100
# A PTE table maps 2 MiB on x86-64 and arm64 with 4 KiB pages (PMD_SHIFT 21): traces come
# from such hosts, whatever design or page size the replay then simulates.
RANGE_SHIFT = 21


class TraceFileError(ValueError):
    """A file that is not a readable desim trace (the message names the file and why)."""


@dataclass
class Trace:
    """A trace file in memory: one numpy array per column, and the file's metadata."""

    columns: dict[str, np.ndarray]
    meta: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["time_ns"])

    def counts(self) -> dict[str, int]:
        return counts(self.columns)


def counts(cols: dict[str, np.ndarray]) -> dict[str, int]:
    """What a trace holds, by the names the replay's counters use."""
    ev = np.asarray(cols["event"], dtype=object)
    tables = np.asarray(cols["tables"], dtype=np.int64)
    flags = np.asarray(cols["flags"], dtype=np.uint64)
    fork = ev == "fork"
    shares = (flags & np.uint64(CLONE_VM)) != 0
    fault = ev == "fault"
    n = len(ev)
    return {
        "events": n,
        "tasks": len(np.unique(cols["task"])) if n else 0,
        "starts": int(np.sum(ev == "start")),
        "forks": int(np.sum(fork & ~shares)),  # a new mm
        "clones": int(np.sum(fork & shares)),  # threads, vfork, posix_spawn: the mm is shared
        "execs": int(np.sum(ev == "exec")),
        "exits": int(np.sum(ev == "exit")),
        "mm_exits": int(np.sum(ev == "mm_exit")),
        "faults": int(np.sum(fault)),
        "tables": int(tables[fault].sum() + tables[fork].sum()),
        "tables_forked": int(tables[fork].sum()),
        "munmaps": int(np.sum(ev == "munmap")),
        "tables_unmapped": int(tables[ev == "munmap"].sum()),
        "collapses": int(np.sum(ev == "collapse")),
        "duration_ns": int(cols["time_ns"][-1]) if n else 0,
    }


def write(path: str | Path, cols: Mapping[str, list | np.ndarray], meta: dict[str, object]) -> None:
    """Write ``cols`` (every column of ``COLUMNS``) and ``meta`` as a trace file at ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for name, dtype in COLUMNS.items():
        if dtype == "string":
            arrays[name] = pa.array(list(cols[name]), pa.string()).dictionary_encode()
        else:
            arrays[name] = pa.array(np.asarray(cols[name], dtype=dtype))
    table = pa.table(arrays)
    md = {"desim.trace": FORMAT_VERSION}
    md.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in md.items()})
    pq.write_table(table, path, compression="zstd")


def _open(path: Path, data: bytes | None = None):
    """``path`` as a parquet file; ``data``: its content, given (a sweep run's input file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if data is None and not path.exists():
        raise TraceFileError(f"{path}: no such file")
    if data is None and not path.is_file():
        raise TraceFileError(f"{path}: not a regular file")
    try:
        return pq.ParquetFile(path if data is None else pa.BufferReader(data))
    except Exception:  # pyarrow raises several kinds for a file that is not parquet
        raise TraceFileError(
            f"{path}: not a parquet file (desim record --import converts tracer text)"
        ) from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def check(path: str | Path, data: bytes | None = None) -> dict[str, str]:
    """Check that ``path`` (content ``data`` if given) is a desim trace (its schema, not its
    rows); return its metadata."""
    path = Path(path)
    pf = _open(path, data)
    raw = pf.schema_arrow.metadata or {}
    meta = {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"ARROW")}
    if "desim.trace" not in meta:
        raise TraceFileError(
            f"{path}: not a desim trace (no desim.trace metadata; desim record writes one)"
        )
    if meta["desim.trace"] != FORMAT_VERSION:
        raise TraceFileError(
            f"{path}: trace format {meta['desim.trace']}, this desim reads {FORMAT_VERSION}"
        )
    have = set(pf.schema_arrow.names)
    missing = [c for c in COLUMNS if c not in have]
    if missing:
        raise TraceFileError(f"{path}: not a desim trace (missing columns {', '.join(missing)})")
    return meta


def read(path: str | Path, data: bytes | None = None) -> Trace:
    """Read a trace file, or its content ``data`` (``TraceFileError`` if it is not one)."""
    path = Path(path)
    meta = check(path, data)
    try:
        table = _open(path, data).read(columns=list(COLUMNS))
    except Exception as exc:
        raise TraceFileError(f"{path}: unreadable ({_first_line(exc)})") from None
    cols: dict[str, np.ndarray] = {}
    for name, dtype in COLUMNS.items():
        col = table.column(name)
        if dtype == "string":
            cols[name] = np.asarray(col.to_pylist(), dtype=object)
        else:
            try:
                cols[name] = col.to_numpy().astype(dtype, copy=False)
            except (TypeError, ValueError) as exc:
                raise TraceFileError(f"{path}: column {name}: {_first_line(exc)}") from None
    bad = set(np.unique(cols["event"]).tolist()) - set(EVENTS)
    if bad:
        raise TraceFileError(
            f"{path}: unknown events {', '.join(sorted(map(str, bad)))} "
            f"(known: {', '.join(EVENTS)})"
        )
    if len(cols["time_ns"]) and np.any(np.diff(cols["time_ns"]) < 0):
        raise TraceFileError(f"{path}: time_ns is not in time order")
    _check_rows(path, cols)
    return Trace(cols, meta)


def _check_rows(path: Path, cols: dict[str, np.ndarray]) -> None:
    """Rows a replay can follow: no negative time or CPU, and a process tree. Each task is
    forked at most once, never by itself, and has no row before its fork (time order being
    checked, no task can then be its own ancestor)."""
    for name in ("time_ns", "cpu", "task"):
        if len(cols[name]) and cols[name].min() < 0:
            i = int(np.argmax(cols[name] < 0))
            raise TraceFileError(f"{path}: row {i}: {name} {int(cols[name][i])} is negative")
    first: dict[int, int] = {}
    for i, t in enumerate(cols["task"].tolist()):
        first.setdefault(t, i)
    forked: set[int] = set()
    for i in np.flatnonzero(cols["event"] == "fork").tolist():
        child, task = int(cols["child"][i]), int(cols["task"][i])
        if child < 0 or child == task or child in forked:
            why = "no child" if child < 0 else "itself" if child == task else "again"
            raise TraceFileError(f"{path}: row {i}: task {task} forks {why} (task {child})")
        if first.get(child, i + 1) < i:
            raise TraceFileError(
                f"{path}: row {i}: task {child} is forked after its first row ({first[child]})"
            )
        forked.add(child)
