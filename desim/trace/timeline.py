"""The timeline of a run: what ran where and when, paired into slices, instants and arrows.

Fed plain facts with their times (which task took which CPU, when a reader began and ended,
which waiter got a lock, which callback ran), it keeps what is open per CPU and turns each
begin/end pair into a ``Slice``, each queue/run pair into a ``Flow``. It knows nothing of the
model's objects (``desim.trace.Tracer`` turns them into these facts) nor of any file format
(``desim.trace.chrome`` writes one), so it can be tested with hand-made sequences.

Tracks: per CPU, ``tasks`` (the task owning it, with its ``rcu_read_lock`` sections and spin
waits nested inside) and ``softirq`` (RCU_SOFTIRQ runs and their callbacks, laid end to end at
the CPU time each costs: softirq time is stolen from the running task, so it overlaps task
slices and needs a track of its own); ``grace periods`` for RCU as a whole.

Only what falls in the window is kept (slices clipped to it), and recording stops after
``max_events`` (a flow counts two: its ends). A slice nested in another never shares an edge
with it: viewers order slices of equal start and length arbitrarily, so where the model's
instants coincide (a fault enters its RCU read-side section the instant it starts), ``nest``
draws the inner slice 1 ns inside its parent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import NamedTuple

TASKS = "tasks"
SOFTIRQ = "softirq"
GRACE_PERIODS = "grace periods"
DEFAULT_MAX_EVENTS = 300_000  # ~30 MB of JSON: what a browser-based viewer loads comfortably


class Track(NamedTuple):
    cpu: int | None  # None: RCU as a whole
    lane: str  # TASKS, SOFTIRQ or GRACE_PERIODS


RCU_TRACK = Track(None, GRACE_PERIODS)


class Slice(NamedTuple):
    track: Track
    name: str
    t0: int  # ns, clipped to the window
    t1: int
    cat: str  # task, rcu or lock
    args: dict | None


class Instant(NamedTuple):
    track: Track
    name: str
    t: int
    cat: str
    args: dict | None
    scope: str  # "t": the track, "g": global


class Flow(NamedTuple):
    id: int
    name: str
    cat: str
    src: Track
    t_src: int
    dst: Track
    t_dst: int


class Count(NamedTuple):
    track: Track
    name: str
    t: int
    values: dict


Record = Slice | Instant | Flow | Count

# parents first among slices of equal span: a task (or a softirq run), then what runs in it
# (an RCU section, a callback), then a spin
_RANK = {"task": 0, "rcu": 1, "lock": 2}
SOFTIRQ_RUN = "RCU_SOFTIRQ"


def _rank(s: Slice) -> int:
    return 0 if s.name == SOFTIRQ_RUN else _RANK.get(s.cat, 3)


class Timeline:
    def __init__(
        self, window: tuple[int, int | None] = (0, None), max_events: int = DEFAULT_MAX_EVENTS
    ) -> None:
        self.start, end = window
        self.end: float = end if end is not None else float("inf")
        self.max_events = max_events
        self.records: list[Record] = []
        self.events = 0  # as written: a flow is two events
        self.truncated = False
        self._flows = 0
        self._tasks: dict[Hashable, list] = {}  # task -> [name, its current op]
        self._running: dict[int, list] = {}  # cpu -> [t0, task, {op: count}]
        self._reader: dict[int, int] = {}  # cpu -> t0 of the outermost rcu_read_lock
        self._softirq: dict[int, tuple] = {}  # cpu -> (its runner, t0, callbacks so far)
        self._spins: dict[Hashable, str] = {}  # a waiter's key -> the lane it spins in
        self._queued: dict[int, deque] = {}  # cpu -> (t_queued, lane) per call_rcu, in order

    # -- recording -----------------------------------------------------------------------------
    def _room(self, n: int = 1) -> bool:
        if self.events >= self.max_events:
            self.truncated = True
            return False
        self.events += n
        return True

    def _in(self, t: int) -> bool:
        return self.start <= t < self.end

    def slice(
        self, track: Track, name: str, t0: int, t1: int, cat: str, args: dict | None = None
    ) -> None:
        if t1 < self.start or t0 >= self.end or not self._room():
            return
        a = max(t0, self.start)
        b = int(min(t1, self.end))
        self.records.append(Slice(track, name, a, b, cat, args))

    def instant(
        self,
        track: Track,
        name: str,
        t: int,
        cat: str,
        args: dict | None = None,
        scope: str = "t",
    ) -> None:
        if not self._in(t) or not self._room():
            return
        self.records.append(Instant(track, name, t, cat, args, scope))

    def flow(self, name: str, cat: str, src: Track, t_src: int, dst: Track, t_dst: int) -> None:
        """An arrow; both ends must fall in the window."""
        if not (self._in(t_src) and self._in(t_dst)) or not self._room(2):
            return
        self._flows += 1
        self.records.append(Flow(self._flows, name, cat, src, t_src, dst, t_dst))

    def count(self, track: Track, name: str, t: int, values: dict) -> None:
        if self._in(t) and self._room():
            self.records.append(Count(track, name, t, values))

    # -- tasks on CPUs -------------------------------------------------------------------------
    def lane(self, cpu: int, runner: Hashable) -> str:
        """The lane of code run by ``runner`` on ``cpu``: its softirq's, or the task's."""
        s = self._softirq.get(cpu)
        return SOFTIRQ if s is not None and runner is s[0] else TASKS

    def task_seen(self, task: Hashable, name: str) -> None:
        if task not in self._tasks:
            self._tasks[task] = [name, None]

    def task_runs(self, cpu: int, task: Hashable, t: int) -> None:
        self._running[cpu] = [t, task, {}]

    def task_switch(self, cpu: int, nxt: Hashable | None, t: int) -> None:
        """The owner's slice ends at ``t`` (named by its first op, else its name)."""
        cur = self._running.pop(cpu, None)
        if cur is not None:
            t0, task, ops = cur
            label, op = self._tasks.get(task, ("task", None))
            name = next(iter(ops), None) or op or label
            args: dict = {"task": label}
            if ops:
                args["ops"] = dict(ops)
            self.slice(Track(cpu, TASKS), name, t0, t, "task", args)
        if nxt is not None:
            self._running[cpu] = [t, nxt, {}]

    def op(self, cpu: int, name: str) -> None:
        cur = self._running.get(cpu)
        if cur is None:
            return
        ops = cur[2]
        ops[name] = ops.get(name, 0) + 1
        entry = self._tasks.get(cur[1])
        if entry is not None:
            entry[1] = name

    # -- RCU readers, spinlocks ------------------------------------------------------------------
    def read_lock(self, cpu: int, t: int) -> None:
        self._reader[cpu] = t

    def read_unlock(self, cpu: int, t: int) -> None:
        t0 = self._reader.pop(cpu, None)
        if t0 is not None:
            self.slice(Track(cpu, TASKS), "rcu_read_lock", t0, t, "rcu")

    def spin_begin(self, waiter: Hashable, lane: str) -> None:
        self._spins[waiter] = lane

    def handoff(
        self,
        lock: str,
        src: int,
        src_lane: str,
        dst: int,
        waiter: Hashable,
        t_wait: int,
        grant: int,
        t: int,
    ) -> None:
        """At ``t``, ``src`` releases ``lock`` to ``dst``, spinning since ``t_wait``; it holds
        the lock from ``grant``."""
        lane = self._spins.pop(waiter, TASKS)
        self.slice(
            Track(dst, lane),
            f"spin {lock}",
            t_wait,
            grant,
            "lock",
            {"waited_ns": grant - t_wait, "from": f"cpu{src}"},
        )
        self.flow(f"handoff {lock}", "lock", Track(src, src_lane), t, Track(dst, lane), grant)

    # -- RCU -------------------------------------------------------------------------------------
    def call_rcu(self, cpu: int, lane: str, t: int) -> None:
        # Callbacks of one CPU are invoked in the order they were queued (the segmented list
        # keeps order), so a FIFO of queueing lanes pairs each with its invocation.
        self._queued.setdefault(cpu, deque()).append((t, lane))

    def softirq_begin(self, cpu: int, runner: Hashable, t: int) -> None:
        self._softirq[cpu] = (runner, t, 0)

    def softirq_end(self, cpu: int, t: int) -> None:
        s = self._softirq.pop(cpu, None)
        if s is not None:
            self.slice(Track(cpu, SOFTIRQ), SOFTIRQ_RUN, s[1], t, "rcu", {"callbacks": s[2]})

    def callback(self, cpu: int, name: str, t_queued: int, t0: int, cost: int) -> None:
        """Callback ``name`` runs in ``cpu``'s softirq over ``[t0, t0 + cost)``."""
        s = self._softirq.get(cpu)
        if s is not None:
            self._softirq[cpu] = (s[0], s[1], s[2] + 1)
        self.slice(
            Track(cpu, SOFTIRQ), name, t0, t0 + cost, "rcu", {"queued_ns_ago": t0 - t_queued}
        )
        q = self._queued.get(cpu)
        src_lane = TASKS
        while q:
            t, lane = q.popleft()
            if t == t_queued:
                src_lane = lane
                break
        self.flow("call_rcu", "rcu", Track(cpu, src_lane), t_queued, Track(cpu, SOFTIRQ), t0)

    def gp(self, number: int, t0: int, t1: int) -> None:
        self.slice(RCU_TRACK, f"GP {number}", t0, t1, "rcu", {"length_ns": t1 - t0})

    # -- the end ---------------------------------------------------------------------------------
    def finish(self, t: int) -> None:
        """Close at ``t`` what is still open (tasks, readers, softirqs); then ``nest``."""
        for cpu in list(self._running):
            self.task_switch(cpu, None, t)
        for cpu in list(self._reader):
            self.read_unlock(cpu, t)
        for cpu in list(self._softirq):
            self.softirq_end(cpu, t)
        self.nest()

    def nest(self) -> None:
        """Move nested slices 1 ns inside a parent they share an edge with.

        Per track, slices are visited parent first (by start, longer first, a task or softirq
        run before an RCU section or callback, before a spin); an inner slice starting or ending exactly with its parent is
        shrunk by 1 ns at that edge, when it is at least 3 ns long. An arrow ending where a
        moved slice started moves with it (its head binds to the slice around it)."""
        tracks: dict[Track, list[tuple[int, Slice]]] = {}
        recs = self.records
        for i, r in enumerate(recs):
            if isinstance(r, Slice):
                tracks.setdefault(r.track, []).append((i, r))
        moved: dict[tuple[Track, int], int] = {}  # (track, old t0) -> new t0
        for slices in tracks.values():
            slices.sort(key=lambda e: (e[1].t0, e[1].t0 - e[1].t1, _rank(e[1])))
            stack: list[tuple[int, int]] = []
            for i, s in slices:
                a, b = s.t0, s.t1
                while stack and stack[-1][1] <= a:
                    stack.pop()
                if stack and stack[-1][0] <= a and b <= stack[-1][1] and b - a >= 3:
                    pa, pb = stack[-1]
                    if a == pa:
                        a += 1
                        moved[(s.track, s.t0)] = a
                    if b == pb:
                        b -= 1
                    recs[i] = s._replace(t0=a, t1=b)
                stack.append((a, b))
        if moved:
            for i, r in enumerate(recs):
                if isinstance(r, Flow) and (r.dst, r.t_dst) in moved:
                    recs[i] = r._replace(t_dst=moved[(r.dst, r.t_dst)])
