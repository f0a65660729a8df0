"""A timeline (``desim.trace.timeline``) as Chrome / Perfetto trace-event JSON.

One trace "process" per CPU (``CPU n``, threads ``tasks`` and ``softirq``), sorted by CPU id,
and one for RCU (``grace periods``) sorted first. Only complete events are written (``X``: no
B/E pairs to mismatch), with instants (``i``), counters (``C``) and flow arrows (``s``/``f``,
the head bound to the slice around it). Times are µs with ns resolution.
"""

from __future__ import annotations

from desim.trace.timeline import (
    GRACE_PERIODS,
    SOFTIRQ,
    TASKS,
    Count,
    Flow,
    Instant,
    Record,
    Slice,
    Track,
)

TID = {TASKS: 1, SOFTIRQ: 2, GRACE_PERIODS: 1}


def _us(ns: int | float) -> float:
    return round(ns / 1000.0, 3)


def encode(records: list[Record], cpus: int, other: dict) -> dict:
    """The JSON document of ``records`` on a machine of ``cpus`` CPUs; ``other`` goes to
    ``otherData`` with the count of events."""
    rcu_pid = cpus + 1

    def where(track: Track) -> tuple[int, int]:
        return (rcu_pid if track.cpu is None else track.cpu + 1), TID[track.lane]

    events: list[dict] = []
    for r in records:
        if isinstance(r, Slice):
            pid, tid = where(r.track)
            ev = {
                "ph": "X",
                "pid": pid,
                "tid": tid,
                "name": r.name,
                "cat": r.cat,
                "ts": _us(r.t0),
                "dur": _us(r.t1 - r.t0),
            }
            if r.args:
                ev["args"] = r.args
            events.append(ev)
        elif isinstance(r, Instant):
            pid, tid = where(r.track)
            ev = {"ph": "i", "s": r.scope, "pid": pid, "tid": tid, "name": r.name, "cat": r.cat}
            ev["ts"] = _us(r.t)
            if r.args:
                ev["args"] = r.args
            events.append(ev)
        elif isinstance(r, Flow):
            (sp, st), (dp, dt) = where(r.src), where(r.dst)
            events.append(
                {
                    "ph": "s",
                    "id": r.id,
                    "pid": sp,
                    "tid": st,
                    "name": r.name,
                    "cat": r.cat,
                    "ts": _us(r.t_src),
                }
            )
            events.append(
                {
                    "ph": "f",
                    "bp": "e",
                    "id": r.id,
                    "pid": dp,
                    "tid": dt,
                    "name": r.name,
                    "cat": r.cat,
                    "ts": _us(r.t_dst),
                }
            )
        elif isinstance(r, Count):
            pid, tid = where(r.track)
            events.append(
                {
                    "ph": "C",
                    "pid": pid,
                    "tid": tid,
                    "name": r.name,
                    "ts": _us(r.t),
                    "args": r.values,
                }
            )
    # Sorted by time, longer slices first at equal times, so parents precede children.
    body = sorted(events, key=lambda e: (e["ts"], -e.get("dur", 0)))
    return {
        "traceEvents": metadata(cpus) + body,
        "displayTimeUnit": "ns",
        "otherData": {**other, "events": len(body)},
    }


def metadata(cpus: int) -> list[dict]:
    """Track names and order: CPUs by id, RCU first."""
    meta: list[dict] = []

    def name(pid: int, tid: int | None, what: str, value: str) -> None:
        ev: dict = {"ph": "M", "pid": pid, "name": what, "args": {"name": value}}
        if tid is not None:
            ev["tid"] = tid
        meta.append(ev)

    for cpu in range(cpus):
        pid = cpu + 1
        name(pid, None, "process_name", f"CPU {cpu}")
        meta.append(
            {"ph": "M", "pid": pid, "name": "process_sort_index", "args": {"sort_index": pid}}
        )
        name(pid, TID[TASKS], "thread_name", TASKS)
        name(pid, TID[SOFTIRQ], "thread_name", SOFTIRQ)
    rp = cpus + 1
    name(rp, None, "process_name", "RCU")
    meta.append({"ph": "M", "pid": rp, "name": "process_sort_index", "args": {"sort_index": 0}})
    name(rp, TID[GRACE_PERIODS], "thread_name", GRACE_PERIODS)
    return meta
