"""``desim record``: trace a command's process tree through tracefs (root, Linux).

Everything happens in a private tracefs *instance* (``instances/desim-record-PID``): its own
ring buffer, event switches, pid filter and options, so the global trace and any other user's
tracing are untouched. If tracefs is not mounted, it is mounted on a temporary directory for
the run. Afterwards, whatever happened (the command failing, Ctrl-C, an error here), the
instance is removed, which discards all its settings, and tracefs is unmounted if it was
mounted here: nothing outside stays changed.

How: the instance gets the events of ``EVENTS`` (those the kernel has), ``event-fork`` (children
of a traced task are added to its pid filter as they fork) and a per-CPU buffer. The command's
process, between its fork and its exec, writes its own pid into the instance's
``set_event_pid`` and turns tracing on, so the trace holds its tree and nothing else. A
thread drains ``trace_pipe`` while the command runs; the per-CPU ``stats`` give the events lost
to a full buffer. The text is then parsed and turned into rows (``desim.hosttrace.events``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# event -> what is lost without it (None: required)
EVENTS: dict[str, str | None] = {
    "sched/sched_process_fork": None,
    "sched/sched_process_exec": None,
    "sched/sched_process_exit": None,
    "exceptions/page_fault_user": None,
    "task/task_newtask": "clone flags (threads and vfork children are taken as processes "
    "with their own mm)",
    "syscalls/sys_enter_munmap": "munmaps (CONFIG_FTRACE_SYSCALLS)",
    "huge_memory/mm_khugepaged_collapse_file": "MADV_COLLAPSE of file/shmem ranges",
}
BUFFER_KB = 16384  # per CPU; the drain keeps up with a build at this size
SIGINT_GRACE_S = 5.0


class RecordError(RuntimeError):
    """desim record cannot trace here (the message says why, in one line)."""


def tracefs_mount() -> Path | None:
    """Where tracefs is mounted (the first mount in /proc/mounts), or None."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "tracefs":
            return Path(parts[1].replace("\\040", " "))
    return None


@contextlib.contextmanager
def mounted_tracefs() -> Iterator[Path]:
    """tracefs's root: the existing mount, or one made here and unmounted on the way out."""
    root = tracefs_mount()
    if root is not None:
        yield root
        return
    where = Path(tempfile.mkdtemp(prefix="desim-tracefs-"))
    try:
        r = subprocess.run(
            ["mount", "-t", "tracefs", "nodev", str(where)], capture_output=True, text=True
        )
        if r.returncode != 0:
            raise RecordError(
                f"cannot mount tracefs: {r.stderr.strip() or 'mount failed'} "
                "(desim record needs root and a kernel with CONFIG_TRACING)"
            )
        try:
            yield where
        finally:
            subprocess.run(["umount", str(where)], capture_output=True)
    finally:
        with contextlib.suppress(OSError):
            where.rmdir()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class _Drain(threading.Thread):
    """Reads ``trace_pipe`` without blocking until told to stop and the pipe is empty."""

    def __init__(self, pipe: Path) -> None:
        super().__init__(daemon=True, name="desim-record-drain")
        self.fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
        self.chunks: list[bytes] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                try:
                    b = os.read(self.fd, 1 << 20)
                except BlockingIOError:
                    b = b""
                if b:
                    self.chunks.append(b)
                elif self.stop.is_set():
                    return
                else:
                    time.sleep(0.02)
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def finish(self) -> str:
        self.stop.set()
        self.join()
        os.close(self.fd)
        if self.error is not None:
            raise RecordError(f"reading trace_pipe failed: {self.error}")
        return b"".join(self.chunks).decode("utf-8", "replace")


class Session:
    """One private instance: set up by ``open``, removed by ``close`` (idempotent)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir: Path | None = None
        self.enabled: list[str] = []
        self.missing: dict[str, str] = {}

    def open(self) -> None:
        base = self.root / "instances"
        if not base.is_dir():
            raise RecordError(f"{base}: no tracefs instances (kernel too old?)")
        name = f"desim-record-{os.getpid()}"
        d = base / name
        try:
            d.mkdir()
        except FileExistsError:
            raise RecordError(f"{d} exists: another desim record of this pid is running") from None
        except OSError as exc:
            raise RecordError(f"cannot create a tracefs instance {d}: {exc.strerror}") from None
        self.dir = d
        _write(d / "tracing_on", "0")
        _write(d / "buffer_size_kb", str(BUFFER_KB))
        for opt, v in (("event-fork", "1"), ("irq-info", "0"), ("record-tgid", "0")):
            if (d / "options" / opt).exists():
                _write(d / "options" / opt, v)
        for ev, loss in EVENTS.items():
            f = d / "events" / ev / "enable"
            if f.exists():
                _write(f, "1")
                self.enabled.append(ev)
            elif loss is None:
                raise RecordError(f"this kernel has no tracepoint {ev}, which desim record needs")
            else:
                self.missing[ev] = loss

    def lost_events(self) -> int:
        lost = 0
        assert self.dir is not None
        for stats in sorted((self.dir / "per_cpu").glob("cpu*/stats")):
            for line in stats.read_text().splitlines():
                k, _, v = line.partition(":")
                if k.strip() in ("overrun", "dropped events"):
                    with contextlib.suppress(ValueError):
                        lost += int(v.strip())
        return lost

    def close(self) -> None:
        d, self.dir = self.dir, None
        if d is None:
            return
        with contextlib.suppress(OSError):
            _write(d / "tracing_on", "0")
        for ev in self.enabled:
            with contextlib.suppress(OSError):
                _write(d / "events" / ev / "enable", "0")
        # Removing the instance discards its buffer, filters and options; it is refused while a
        # reader holds trace_pipe open, so retry briefly.
        for _ in range(50):
            try:
                d.rmdir()
                return
            except OSError:
                time.sleep(0.05)
        d.rmdir()


def record(
    command: list[str], note: Callable[[str], None] = lambda s: None
) -> tuple[str, dict[str, object]]:
    """Run ``command`` traced; return the trace's text and facts (exit status, lost events...).

    ``KeyboardInterrupt`` is re-raised after the command is stopped and tracefs restored.
    """
    if platform.system() != "Linux":
        raise RecordError(f"desim record traces a Linux kernel; this is {platform.system()}")
    if os.geteuid() != 0:
        raise RecordError("desim record needs root (it enables tracepoints through tracefs)")
    with mounted_tracefs() as root:
        sess = Session(root)
        try:
            sess.open()
            assert sess.dir is not None
            pid_file = str(sess.dir / "set_event_pid")
            on_file = str(sess.dir / "tracing_on")

            def traced_child() -> None:
                # in the child, between fork and exec: trace this pid (and, by event-fork, its
                # descendants), from now on
                for path, value in ((pid_file, str(os.getpid())), (on_file, "1")):
                    with open(path, "w") as f:
                        f.write(value)

            drain = _Drain(sess.dir / "trace_pipe")
            drain.start()
            t0 = time.monotonic()
            try:
                proc = subprocess.Popen(command, preexec_fn=traced_child)  # noqa: PLW1509
            except FileNotFoundError:
                drain.finish()
                raise RecordError(f"{command[0]}: command not found") from None
            except (PermissionError, subprocess.SubprocessError, OSError) as exc:
                drain.finish()
                raise RecordError(f"{command[0]}: cannot run it ({exc})") from None
            try:
                status = proc.wait()
            except KeyboardInterrupt:
                _stop(proc)
                drain.finish()
                raise
            wall = time.monotonic() - t0
            _write(sess.dir / "tracing_on", "0")
            lost = sess.lost_events()
            text = drain.finish()
        finally:
            sess.close()
    facts: dict[str, object] = {
        "root_pid": proc.pid,
        "status": status,
        "wall_s": round(wall, 3),
        "lost_events": lost,
        "missing": sess.missing,
        "kernel": platform.release(),
        "cpus": os.cpu_count() or 1,
    }
    return text, facts


def _stop(proc: subprocess.Popen) -> None:
    """Ctrl-C reached desim record: pass it on to the command (a terminal sends it to both)."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(SIGINT_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
