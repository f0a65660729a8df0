"""Kernel trace events turned into a trace file's rows, with the page-table estimates.

Input is the text every tracer prints for tracepoints: tracefs's ``trace``/``trace_pipe``
(``comm-pid [cpu] flags secs.usecs: event: fields``), ``trace-cmd report`` (the same layout)
and ``perf script`` (``comm pid [cpu] secs.usecs: system:event: fields``). Lines that are not
events (headers, comments) are skipped; lost-event markers are counted.

The tracepoints say which task did what, never which page tables the kernel allocated. The
rows estimate them per address space (``mm``), as the kernel builds them on x86-64:

* a fault is the first in its 2 MiB range of the mm: a new PTE table (``__pte_alloc`` runs
  when the PMD is empty, mm/memory.c ``handle_pte_fault``). A fault the kernel serves with a
  huge page (anonymous THP, a PMD-mapped file) needs no table; the trace cannot tell, so such
  ranges count one table too many (THP set to ``madvise``, the Debian default, makes them rare);
* ``fork`` without ``CLONE_VM``: the child's mm starts with a copy of every table the parent's
  mm has (an upper bound: ``copy_page_range`` copies only the ranges of VMAs with anonymous
  pages, ``vma_needs_copy`` in mm/memory.c, and faults refill the rest); with ``CLONE_VM``
  (threads, ``vfork``, ``posix_spawn``) the child shares the parent's mm and its tables;
* ``exec`` gives the task a new, empty mm; the old one loses a user;
* ``munmap`` frees the tables of the 2 MiB ranges it covers whole. A partly covered range keeps
  its table: the kernel frees one only when no VMA is left anywhere in its range
  (``free_pgtables`` → ``free_pgd_range``'s floor and ceiling), which the trace cannot see
  without the VMAs, so unmapping an isolated small mapping frees one table too few;
* ``exit`` of the mm's last task, or its ``exec``, frees every table the mm holds
  (``exit_mmap``: an ``mm_exit`` row);
* a collapse (``mm_khugepaged_collapse_file`` succeeded, in the task's own context:
  MADV_COLLAPSE) frees the range's table (``collapse_pte_mapped_thp`` → ``pte_free_defer``);
  the range is PMD-mapped from then on, so its later faults allocate nothing.

Not seen: ``brk`` shrinking, ``mremap`` and ``MADV_DONTNEED`` (they move or zap ranges; the
tables stay where they were), collapses by the khugepaged kthread (it runs outside the traced
process tree, and its events name an mm by a hashed pointer no traced event carries), tables
of mms that existed before the trace began, and TLB flushes (desim charges them inside munmap,
exit and retraction).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import NamedTuple

from desim.hosttrace.format import CLONE_VM, COLUMNS, RANGE_SHIFT

# x86-64 user space ends below 2^47 (2^56 with 5-level paging): a "user" fault above it is
# the vsyscall page, emulated without page tables.
USER_TOP = 1 << 56

LINE = re.compile(
    r"^\s*(?P<comm>.*?)[-\s](?P<pid>\d+)(?:/(?P<tid>\d+))?\s+"  # comm-pid, or comm pid[/tid]
    r"(?:\(\s*[-\d]+\)\s+)?"  # (tgid), with tracefs's record-tgid
    r"\[(?P<cpu>\d+)\]\s+"
    r"(?:[^\s:]{4,6}\s+)?"  # irq-info flags (d..1.)
    r"(?P<ts>\d+\.\d+):\s+"
    r"(?:(?:(?P<sys>\w+):)?(?P<event>\w+):\s*(?P<args>.*)"  # event: fields
    r"|sys_(?P<call>\w+)\((?P<cargs>.*)\))$"  # tracefs prints a syscall entry as sys_munmap(...)
)
ARG = re.compile(r"(\w+)(?:=|: )([^\s,]*)")
LOST = re.compile(r"LOST (\d+) EVENTS|(\d+) EVENTS DROPPED")
# Fields printed in hex without a 0x prefix (their tracepoints' print formats use %lx, %llx).
HEX_FIELDS = frozenset({"clone_flags", "addr", "hpage_pfn"})


class Event(NamedTuple):
    """One tracepoint hit, as the text showed it."""

    ts_ns: int
    cpu: int
    pid: int
    name: str
    args: dict[str, str]


def _ns(ts: str) -> int:
    sec, _, frac = ts.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def parse_lines(lines: Iterable[str]) -> tuple[list[Event], dict[str, int | str]]:
    """Events from tracer text; and what was read: lines, events, lost events, the format."""
    out: list[Event] = []
    n = lost = 0
    perf = tracecmd = False
    for line in lines:
        n += 1
        m = LINE.match(line)
        if m is None:
            lm = LOST.search(line)
            if lm:
                lost += int(lm.group(1) or lm.group(2))
            elif line.startswith(("cpus=", "version =")):
                tracecmd = True
            continue
        perf = perf or m.group("sys") is not None
        pid = int(m.group("tid") or m.group("pid"))
        call = m.group("call")
        name = m.group("event") if call is None else "sys_enter_" + call
        args = m.group("args") if call is None else m.group("cargs")
        out.append(
            Event(_ns(m.group("ts")), int(m.group("cpu")), pid, name, dict(ARG.findall(args)))
        )
    fmt = "perf script" if perf else "trace-cmd report" if tracecmd else "tracefs"
    return out, {"lines": n, "events": len(out), "lost_events": lost, "format": fmt}


def _int(args: dict[str, str], key: str) -> int:
    v = args[key]
    if v.startswith(("0x", "0X")) or key in HEX_FIELDS:
        return int(v, 16)
    return int(v)


class _Mm:
    __slots__ = ("id", "users", "ranges", "huge")

    def __init__(self, mm_id: int, ranges: set[int] | None = None, huge: set[int] | None = None):
        self.id = mm_id
        self.users = 1
        self.ranges: set[int] = ranges if ranges is not None else set()  # with a PTE table
        self.huge: set[int] = huge if huge is not None else set()  # PMD-mapped after a collapse


class _Task:
    __slots__ = ("serial", "pid", "mm")

    def __init__(self, serial: int, pid: int, mm: _Mm):
        self.serial = serial
        self.pid = pid
        self.mm = mm


class Builder:
    """Rows of a trace file from events in time order (``feed``, then ``columns``).

    ``skip_until_exec``: pids whose events are dropped until they exec (``desim record``'s
    own child, a copy of the recorder until it execs the command).
    """

    def __init__(self, skip_until_exec: Iterable[int] = ()) -> None:
        self.rows: dict[str, list] = {c: [] for c in COLUMNS}
        self.t0: int | None = None
        self.tasks: dict[int, _Task] = {}
        self.next_task = 0
        self.next_mm = 0
        self.flags: dict[int, int] = {}  # child pid -> clone flags (task_newtask)
        self.skip = set(skip_until_exec)
        self.ignored: Counter[str] = Counter()
        self.forks_without_flags = 0
        self.handlers = {
            "task_newtask": self._newtask,
            "sched_process_fork": self._fork,
            "sched_process_exec": self._exec,
            "sched_process_exit": self._exit,
            "page_fault_user": self._fault,
            "sys_enter_munmap": self._munmap,
            "mm_khugepaged_collapse_file": self._collapse,
        }

    def feed(self, ev: Event) -> None:
        h = self.handlers.get(ev.name)
        if h is None:
            self.ignored[ev.name] += 1
            return
        try:
            h(ev)
        except (KeyError, ValueError):
            self.ignored[ev.name + " (unreadable fields)"] += 1

    def columns(self) -> dict[str, list]:
        return self.rows

    # -- helpers

    def _emit(self, ev: Event, kind: str, task: _Task, mm: _Mm, **kw) -> None:
        if self.t0 is None:
            self.t0 = ev.ts_ns
        r = self.rows
        r["time_ns"].append(ev.ts_ns - self.t0)
        r["event"].append(kind)
        r["task"].append(task.serial)
        r["pid"].append(task.pid)
        r["cpu"].append(ev.cpu)
        r["mm"].append(mm.id)
        r["child"].append(kw.get("child", -1))
        r["addr"].append(kw.get("addr", 0))
        r["length"].append(kw.get("length", 0))
        r["tables"].append(kw.get("tables", 0))
        r["flags"].append(kw.get("flags", 0))

    def _new_mm(self, ranges=None, huge=None) -> _Mm:
        mm = _Mm(self.next_mm, ranges, huge)
        self.next_mm += 1
        return mm

    def _new_task(self, pid: int, mm: _Mm) -> _Task:
        t = self.tasks[pid] = _Task(self.next_task, pid, mm)
        self.next_task += 1
        return t

    def _task(self, ev: Event, pid: int | None = None) -> _Task | None:
        """The task of ``pid`` (default: the event's); one seen first here has a ``start``."""
        pid = ev.pid if pid is None else pid
        t = self.tasks.get(pid)
        if t is None and pid not in self.skip:
            t = self._new_task(pid, self._new_mm())
            self._emit(ev, "start", t, t.mm)
        return t

    def _leave(self, ev: Event, task: _Task) -> None:
        mm = task.mm
        mm.users -= 1
        if mm.users == 0:
            self._emit(ev, "mm_exit", task, mm, tables=len(mm.ranges))

    # -- tracepoints

    def _newtask(self, ev: Event) -> None:
        self.flags[_int(ev.args, "pid")] = _int(ev.args, "clone_flags")

    def _fork(self, ev: Event) -> None:
        parent = self._task(ev, _int(ev.args, "pid"))
        if parent is None:
            return
        child_pid = _int(ev.args, "child_pid")
        flags = self.flags.pop(child_pid, None)
        if flags is None:  # no task_newtask in this trace: a fork of its own mm, said so
            flags = 0
            self.forks_without_flags += 1
        if flags & CLONE_VM:
            mm = parent.mm
            mm.users += 1
            tables = 0
        else:
            pm = parent.mm
            mm = self._new_mm(set(pm.ranges), set(pm.huge))
            tables = len(mm.ranges)
        child = self._new_task(child_pid, mm)
        self._emit(ev, "fork", parent, mm, child=child.serial, flags=flags, tables=tables)

    def _exec(self, ev: Event) -> None:
        pid = _int(ev.args, "pid")
        old_pid = _int(ev.args, "old_pid") if "old_pid" in ev.args else pid
        task = self.tasks.pop(old_pid, None)
        mm = self._new_mm()
        if task is None:  # the recorder's own child, or a task first seen at its exec
            self.skip.discard(old_pid)
            self.skip.discard(pid)
            task = self._new_task(pid, mm)
        else:
            self.tasks[pid] = task  # a thread's exec takes the leader's pid (de_thread)
            task.pid = pid
            self._leave(ev, task)
            task.mm = mm
        self._emit(ev, "exec", task, mm)

    def _exit(self, ev: Event) -> None:
        pid = _int(ev.args, "pid")
        self.skip.discard(pid)
        task = self.tasks.pop(pid, None)
        if task is None:
            return
        self._emit(ev, "exit", task, task.mm)
        self._leave(ev, task)

    def _fault(self, ev: Event) -> None:
        task = self._task(ev)
        if task is None:
            return
        addr = _int(ev.args, "address")
        mm = task.mm
        new = 0
        if addr < USER_TOP:
            r = addr >> RANGE_SHIFT
            if r not in mm.ranges and r not in mm.huge:
                mm.ranges.add(r)
                new = 1
        self._emit(ev, "fault", task, mm, addr=addr, tables=new)

    def _munmap(self, ev: Event) -> None:
        task = self._task(ev)
        if task is None:
            return
        addr = _int(ev.args, "addr")
        length = _int(ev.args, "len")
        mm = task.mm
        size = 1 << RANGE_SHIFT
        first = (addr + size - 1) >> RANGE_SHIFT  # ranges wholly inside [addr, addr + length)
        end = (addr + length) >> RANGE_SHIFT
        freed = [r for r in mm.ranges if first <= r < end]
        mm.ranges.difference_update(freed)
        mm.huge.difference_update([r for r in mm.huge if first <= r < end])
        self._emit(ev, "munmap", task, mm, addr=addr, length=length, tables=len(freed))

    def _collapse(self, ev: Event) -> None:
        task = self.tasks.get(ev.pid)
        if task is None:
            # khugepaged's own collapses: its events name no traced task (module docstring)
            self.ignored["mm_khugepaged_collapse_file outside a traced task"] += 1
            return
        if ev.args.get("result") not in ("succeeded", "1"):
            return
        addr = _int(ev.args, "addr")
        mm = task.mm
        r = addr >> RANGE_SHIFT
        had = r in mm.ranges
        mm.ranges.discard(r)
        mm.huge.add(r)
        self._emit(ev, "collapse", task, mm, addr=addr, tables=int(had))


def build(events: list[Event], skip_until_exec: Iterable[int] = ()) -> Builder:
    """A ``Builder`` fed ``events`` in time order (stable: the tracer's order breaks ties)."""
    b = Builder(skip_until_exec)
    for ev in sorted(events, key=lambda e: e.ts_ns):
        b.feed(ev)
    return b


def from_text(
    lines: Iterable[str], skip_until_exec: Iterable[int] = (), meta: dict | None = None
) -> tuple[dict[str, list], dict[str, object], list[str]]:
    """A trace file's columns and metadata from tracer text, and notes on what it lacks."""
    events, info = parse_lines(lines)
    b = build(events, skip_until_exec)
    md: dict[str, object] = {
        "source": info["format"],
        "cpus": 1 + max((e.cpu for e in events), default=0),
    }
    md.update(meta or {})
    lost = int(info["lost_events"]) + int(md.get("lost_events", 0))  # type: ignore[arg-type]
    md["lost_events"] = lost
    unseen = dict(md.get("unseen", {}))  # type: ignore[arg-type]
    notes = []
    if lost:
        notes.append(f"{lost} events were lost (a full buffer): counts are short by as many")
    if b.forks_without_flags:
        unseen["task/task_newtask"] = "clone flags"
        notes.append(
            f"{b.forks_without_flags} forks without task_newtask's clone flags: each is taken "
            "as a process with its own mm (threads and vfork children included)"
        )
    md["unseen"] = unseen
    for name, n in sorted(b.ignored.items()):
        notes.append(f"{n} {name} events not used")
    if not b.rows["time_ns"]:
        notes.append(
            "no process events found: is this tracefs, trace-cmd report or perf script text?"
        )
    return b.columns(), md, notes
