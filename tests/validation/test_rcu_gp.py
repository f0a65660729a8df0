"""Grace periods against what v6.6's rules imply, exactly, for both RCU flavours.

The rules (desim/model/rcu.py): a callback queued on an idle CPU makes it tick; its next tick
requests a GP, which starts at once (ticks fall on jiffy boundaries). The GP kthread runs on
the last CPU and notices the GP there; a CPU's QS counts only after it noticed the GP, which a
ticking CPU does at its next tick, so a CPU in user mode or idle-with-callbacks reports at the
second tick after the GP began. The FQS scans run at the ``fqs``-th jiffy boundary after the GP
start and every ``fqs`` jiffies after; the first reports CPUs idle at that instant and
snapshots the rest, later ones report CPUs that went idle since. The kthread's own CPU is busy
while a scan runs, so an idle machine waits two scans. Each test computes the GP those rules
give and asserts it to the ns: deterministic scenarios, zero tolerance.
"""

import pytest
from conftest import make_machine

MS = 1_000_000
FLAVOURS = ["preemptible", "non-preemptible"]


def _busy(m, cpu, start, length, reader):
    def proc():
        yield m.env.timeout(start)
        task = object()
        cpu.acquire(task)
        if reader:
            cpu.rcu_read_lock()
        yield cpu.compute(length)
        if reader:
            cpu.rcu_read_unlock()
        cpu.release()

    m.env.process(proc())


def _one_callback(m, at, cpu=0, lazy=True):
    def proc():
        yield m.env.timeout(at)
        m.rcu.call_rcu(m.cpus[cpu], lambda c, a: None, None, lazy=lazy)

    m.env.process(proc())


def _gp(m):
    gs, ge = m.rcu.gp_spans[0]
    return gs, ge - gs


@pytest.mark.parametrize("flavor", FLAVOURS)
@pytest.mark.parametrize(
    "hz,fqs,jiffies",
    [(1000, None, 3), (250, None, 1), (100, None, 1), (300, None, 2), (1000, 1, 1)],
)
def test_idle_machine_waits_two_fqs_scans(flavor, hz, fqs, jiffies):
    m = make_machine(
        {"machine.hz": hz, "machine.cpus": 8, "rcu.fqs_jiffies": fqs, "rcu.flavor": flavor}
    )
    _one_callback(m, 100_000)
    m.env.run(until=200 * MS)
    jiffy = 1_000_000_000 // hz
    # The GP starts at cpu0's first tick; the first scan snapshots the kthread's CPU (busy
    # running the scan), the second sees it went idle since.
    assert _gp(m) == (jiffy, 2 * jiffies * jiffy)


@pytest.mark.parametrize("flavor", FLAVOURS)
@pytest.mark.parametrize("hz", [1000, 250])
def test_user_busy_machine_reports_at_the_second_tick(flavor, hz):
    m = make_machine({"machine.hz": hz, "machine.cpus": 4, "rcu.flavor": flavor})
    for c in m.cpus:
        c.enter_user()
    _one_callback(m, 100_000)
    m.env.run(until=50 * MS)
    jiffy = 1_000_000_000 // hz
    # Notice at the first tick after the GP start (the QS that tick saw is discarded), report
    # at the next: two jiffies, on both flavours, even where an FQS scan falls in between.
    assert _gp(m) == (jiffy, 2 * jiffy)


def test_kernel_bound_cpu_holds_a_non_preemptible_gp_until_it_idles():
    m = make_machine({"machine.cpus": 4, "rcu.flavor": "non-preemptible"})
    _busy(m, m.cpus[2], 0, 17 * MS, reader=False)
    _one_callback(m, 100_000)
    m.env.run(until=100 * MS)
    # Its ticks in kernel code report nothing; it idles at 17 ms and the scan at
    # 1 + 3k >= 17 ms (19 ms) sees it passed through an extended QS.
    assert _gp(m) == (1 * MS, 18 * MS)


def test_kernel_bound_cpu_reports_at_its_ticks_on_a_preemptible_kernel():
    m = make_machine({"machine.cpus": 4, "rcu.flavor": "preemptible"})
    _busy(m, m.cpus[2], 0, 17 * MS, reader=False)
    _one_callback(m, 100_000)
    m.env.run(until=100 * MS)
    # cpu2 reports at 3 ms (a tick in kernel code outside a reader); the kthread's cpu3 at
    # the second scan, 7 ms.
    assert _gp(m) == (1 * MS, 6 * MS)


def test_tick_qs_in_kernel_fix_makes_non_preemptible_act_like_preemptible_here():
    m = make_machine(
        {"machine.cpus": 4, "rcu.flavor": "non-preemptible", "rcu.tick_qs_in_kernel": True}
    )
    _busy(m, m.cpus[2], 0, 17 * MS, reader=False)
    _one_callback(m, 100_000)
    m.env.run(until=100 * MS)
    assert _gp(m) == (1 * MS, 6 * MS)


@pytest.mark.parametrize("flavor", FLAVOURS)
@pytest.mark.parametrize("reader_us,end_ms", [(2000, 7), (5000, 7), (8500, 10), (20000, 22)])
def test_long_reader_holds_the_gp_until_the_scan_after_it_ends(flavor, reader_us, end_ms):
    m = make_machine({"machine.cpus": 4, "rcu.flavor": flavor})
    _busy(m, m.cpus[1], 0, reader_us * 1000, reader=True)
    _one_callback(m, 100_000)
    m.env.run(until=200 * MS)
    # Scans at 4, 7, 10, ... ms; the GP needs the second (the kthread's CPU) and the first
    # one at or after the reader's end (its CPU then idles).
    assert _gp(m) == (1 * MS, (end_ms - 1) * MS)


def test_preempted_reader_blocks_the_gp_from_the_blocked_tasks_list():
    m = make_machine({"machine.cpus": 4, "rcu.flavor": "preemptible"})
    cpu = m.cpus[1]
    out = {}

    def reader():
        task = object()
        cpu.acquire(task)
        cpu.rcu_read_lock()
        yield cpu.compute(int(2.5 * MS))
        yield from cpu.preempt(task)  # cpu1 runs the hog meanwhile
        yield cpu.compute(3 * MS)
        cpu.rcu_read_unlock()
        out["unlock"] = m.env.now
        cpu.release()

    def hog():
        yield m.env.timeout(int(1.5 * MS))
        task = object()
        ev = cpu.acquire(task)
        yield ev
        yield cpu.compute(5 * MS)
        cpu.release()

    m.env.process(reader())
    m.env.process(hog())
    _one_callback(m, 100_000)
    m.env.run(until=100 * MS)
    # Preempted at 2.5 ms inside its reader, before cpu1 reported: it blocks the GP. cpu1
    # reports at its 3 ms tick (the hog is kernel code outside a reader), cpu3 at the 7 ms scan;
    # the reader resumes at 7.5 ms and its unlock at 10.5 ms ends the GP.
    assert out["unlock"] == int(10.5 * MS)
    assert _gp(m) == (1 * MS, int(9.5 * MS))
    assert not m.rcu.blocked


def test_a_non_preemptible_reader_cannot_be_preempted():
    m = make_machine({"machine.cpus": 2, "rcu.flavor": "non-preemptible"})
    cpu = m.cpus[1]

    def reader():
        task = object()
        cpu.acquire(task)
        cpu.rcu_read_lock()
        yield from cpu.preempt(task)

    m.env.process(reader())
    with pytest.raises(RuntimeError, match="non-preemptible"):
        m.env.run(until=1 * MS)


def test_urgent_qs_bounds_a_gp_held_by_a_kernel_bound_cpu():
    m = make_machine(
        {"machine.cpus": 4, "rcu.flavor": "non-preemptible", "rcu.sched_qs_jiffies": 10}
    )
    _busy(m, m.cpus[2], 0, 500 * MS, reader=False)
    _one_callback(m, 100_000)
    m.env.run(until=100 * MS)
    # The scan at 13 ms is the first past gp_start + 10 jiffies: it sets rcu_urgent_qs; cpu2's
    # next tick (14 ms) only sets need_resched, after its rcu_pending; the cond_resched that
    # honours it is a context switch, so a QS, which rcu_core reports at the tick after (15 ms).
    assert _gp(m) == (1 * MS, 14 * MS)


@pytest.mark.parametrize(
    "hz,cpus,fqs,sched_qs",
    [
        (1000, 8, 3, 100),
        (300, 8, 2, 30),
        (250, 8, 1, 25),
        (100, 64, 1, 10),
        (100, 512, 3, 12),
        (1000, 4096, 19, 116),
    ],
)
def test_fqs_and_sched_qs_defaults_follow_the_kernel_formulas(hz, cpus, fqs, sched_qs):
    from desim.config import RcuConfig

    rc = RcuConfig()
    # rcu_init_geometry: 1 + (HZ > 250) + (HZ > 500) + nr_cpu_ids / 256;
    # adjust_jiffies_till_sched_qs: max(first + 2 * next, HZ / 10 + nr_cpu_ids / 256).
    assert rc.effective_fqs_jiffies(hz, cpus) == fqs
    assert rc.effective_sched_qs_jiffies(hz, cpus) == sched_qs


def test_lazy_call_rcu_waits_for_the_lazy_flush_on_an_offloaded_cpu():
    m = make_machine(
        {"machine.cpus": 4, "rcu.nocb_cpus": "all", "rcu.lazy": True, "rcu.lazy_flush": "50ms"}
    )
    _one_callback(m, 100_000)
    m.env.run(until=200 * MS)
    # The bypass list is flushed 50 ms after its first callback; rcuog requests the GP then.
    assert m.rcu.gp_spans[0][0] == 50 * MS + 100_000
    assert m.rcu.invoked == 1


def test_a_hurried_callback_flushes_the_lazy_ones_with_it():
    m = make_machine({"machine.cpus": 4, "rcu.nocb_cpus": [0], "rcu.lazy": True})
    _one_callback(m, 100_000)
    _one_callback(m, 2 * MS, lazy=False)
    m.env.run(until=100 * MS)
    assert len(m.rcu.gp_spans) == 1 and m.rcu.gp_spans[0][0] == 2 * MS
    assert m.rcu.invoked == 2


def test_lazy_is_only_for_offloaded_cpus():
    m = make_machine({"machine.cpus": 4, "rcu.nocb_cpus": [1], "rcu.lazy": True})
    _one_callback(m, 100_000, cpu=0)
    m.env.run(until=100 * MS)
    assert m.rcu.gp_spans[0][0] == 1 * MS  # cpu0 is not offloaded: its tick requests the GP
