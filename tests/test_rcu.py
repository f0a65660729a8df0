"""Tree RCU: grace periods respect readers, callbacks wait a full GP, sync/expedited/barrier."""

import pytest
from conftest import make_machine, run_task
from hypothesis import given, settings
from hypothesis import strategies as st

MS = 1_000_000


def _reader(m, cpu, start, length, log, preempt=False):
    env = m.env
    yield env.timeout(start)
    task = object()
    ev = cpu.acquire(task)
    if ev is not None:
        yield ev
    cpu.rcu_read_lock()
    t0 = env.now
    if preempt:
        # Halfway, a hog queued on this CPU preempts the reader (preemptible kernels only).
        yield cpu.compute(length // 2)
        env.process(_hog(m, cpu))
        yield from cpu.preempt(task)
        yield cpu.compute(length - length // 2)
    else:
        yield cpu.compute(length)
    cpu.rcu_read_unlock()
    log.append((cpu.id, t0, env.now))
    cpu.release()


def _hog(m, cpu):
    task = object()
    ev = cpu.acquire(task)
    if ev is not None:
        yield ev
    yield cpu.compute(MS)
    cpu.release()


def _queue(m, cpu, at, log):
    yield m.env.timeout(at)
    m.rcu.call_rcu(cpu, lambda c, a: log.append((a, m.env.now)), m.env.now)


@settings(max_examples=40, deadline=None)
@given(
    flavor=st.sampled_from(["preemptible", "non-preemptible"]),
    readers=st.lists(
        st.tuples(
            st.integers(0, 3), st.integers(0, 20 * MS), st.integers(1, 8 * MS), st.booleans()
        ),
        max_size=12,
    ),
    cbs=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20 * MS)), min_size=1, max_size=6),
)
def test_no_gp_ends_inside_an_older_reader_and_callbacks_wait_a_full_gp(flavor, readers, cbs):
    m = make_machine({"rcu.flavor": flavor})
    rlog: list = []
    clog: list = []
    for cpu, start, length, preempt in readers:
        m.env.process(
            _reader(m, m.cpus[cpu], start, length, rlog, preempt and flavor == "preemptible")
        )
    for cpu, at in cbs:
        m.env.process(_queue(m, m.cpus[cpu], at, clog))
    m.env.run(until=300 * MS)
    spans = m.rcu.gp_spans
    assert spans, "callbacks were queued, so at least one GP must run"
    for gs, ge in spans:
        for _, rs, re in rlog:
            assert not (rs < gs and re > ge), f"GP {gs}-{ge} ended inside reader {rs}-{re}"
    assert len(clog) == len(cbs)  # every callback ran
    for queued, invoked in clog:
        assert any(gs >= queued and ge <= invoked for gs, ge in spans), (queued, invoked, spans)


def test_idle_machine_gp_is_two_fqs_scans_at_hz1000():
    m = make_machine({"machine.cpus": 8})
    run_task(m, 0, m.rcu.synchronize)
    gp = m.rcu.gp_length
    assert gp.n == 1
    # cpu0's tick at 1 ms requests the GP; the kthread's CPU (cpu7) is busy at the first scan
    # (4 ms) and seen idle since at the second (7 ms): two FQS waits of 3 jiffies, as measured
    # on idle v6.6 machines. cpu0 notices the end at its 8 ms tick and runs the wake-up then.
    assert gp.hi == 6 * MS
    assert m.rcu.sync_latency.hi == 8 * MS


def test_synchronize_rcu_spans_a_full_gp_started_after_the_call():
    m = make_machine()
    rlog: list = []
    m.env.process(_reader(m, m.cpus[1], 0, 7 * MS, rlog))
    t = {}

    def body(cpu, task):
        yield m.env.timeout(MS // 2)
        t["call"] = m.env.now
        yield from m.rcu.synchronize(cpu, task)
        t["ret"] = m.env.now

    run_task(m, 0, body)
    assert t["ret"] >= rlog[0][2]  # the pre-existing reader finished first
    assert any(gs >= t["call"] and ge <= t["ret"] for gs, ge in m.rcu.gp_spans)


def expedited_latency_from_cpu0(m) -> int:
    """``synchronize_expedited`` called on CPU 0 1 us into the run: how long it waited."""
    out = {}

    def body(cpu, task):
        yield m.env.timeout(1000)
        t0 = m.env.now
        yield from m.rcu.synchronize_expedited(cpu, task)
        out["lat"] = m.env.now - t0

    run_task(m, 0, body)
    return out["lat"]


def test_expedited_waits_for_reader_only():
    m = make_machine({"costs.exp_gp_overhead": 40_000, "costs.ipi_latency": 2000})
    rlog: list = []
    m.env.process(_reader(m, m.cpus[1], 0, 500_000, rlog))
    out = {}

    def body(cpu, task):
        yield m.env.timeout(1000)
        t0 = m.env.now
        yield from m.rcu.synchronize_expedited(cpu, task)
        out["lat"] = m.env.now - t0

    run_task(m, 0, body)
    # The reader on cpu1 ends at 500 us; the expedited GP cannot end before it.
    assert out["lat"] == 500_000 - 1000
    assert m.ipis_sent == 1  # only cpu1 was busy when the IPIs went out
    assert m.rcu.gp_length.n == 0  # no normal grace period was needed


def test_expedited_on_idle_machine_is_overhead_plus_nothing():
    m = make_machine({"costs.exp_gp_overhead": 40_000})
    out = {}

    def body(cpu, task):
        t0 = m.env.now
        yield from m.rcu.synchronize_expedited(cpu, task)
        out["lat"] = m.env.now - t0

    run_task(m, 0, body)
    assert out["lat"] == 40_000


def test_rcu_barrier_waits_for_every_queued_callback():
    m = make_machine()
    invoked: list = []
    for i, cpu in enumerate(m.cpus):
        for k in range(3):
            m.rcu.call_rcu(cpu, lambda c, a: invoked.append(a), (i, k))
    out = {}

    def body(cpu, task):
        yield from m.rcu.barrier(cpu, task)
        out["seen"] = len(invoked)

    run_task(m, 0, body)
    assert out["seen"] == 12
    assert m.rcu.barrier_latency.n == 1


def test_blimit_batches_cost_cpu_time_on_the_queueing_cpu():
    m = make_machine({"rcu.blimit": 10, "costs.rcu_callback": 100})
    cpu = m.cpus[2]
    for k in range(25):
        m.rcu.call_rcu(cpu, lambda c, a: None, k)
    m.env.run(until=20 * MS)
    assert m.rcu.invoked == 25
    assert cpu.softirq_ns == 25 * 100
    assert all(c.softirq_ns == 0 for c in m.cpus if c is not cpu)


# -- rules checked against kernel/rcu of v6.6, one small scenario each ---------------------------


def _tags(cbs):
    return (
        [a for _f, a, _c, _t in cbs.wait],
        cbs.wait_gp,
        [a for _f, a, _c, _t in cbs.ready],
        cbs.ready_gp,
        [a for _f, a, _c, _t in cbs.next],
    )


def _cb(tag):
    return (None, tag, 0, 0)


def _segments(wait, wait_gp, ready, ready_gp, nxt):
    """A SegCBList holding callbacks tagged by name in WAIT, NEXT_READY and NEXT."""
    from desim.model.rcu import SegCBList

    cbs = SegCBList()
    cbs.wait, cbs.wait_gp = [_cb(t) for t in wait], wait_gp
    cbs.ready, cbs.ready_gp = [_cb(t) for t in ready], ready_gp
    cbs.next = [_cb(t) for t in nxt]
    return cbs


def test_accelerate_leaves_next_alone_when_no_segment_is_free():
    # rcu_segcblist_accelerate: WAIT waits for GP 3, NEXT_READY for GP 4; new callbacks that
    # need GP 5 cannot share NEXT_READY (its callbacks would wait a GP too long): they stay in
    # NEXT, untagged, until an advance frees a segment.
    cbs = _segments(["w"], 3, ["r"], 4, ["n"])
    assert cbs.accelerate(5) == 4
    assert _tags(cbs) == (["w"], 3, ["r"], 4, ["n"])
    # Once GP 3 ends, rcu_advance_cbs moves WAIT to DONE and NEXT_READY up; then NEXT fits.
    cbs.advance(3)
    assert cbs.accelerate(5) == 5
    assert [a for _f, a, _c, _t in cbs.done] == ["w"]
    assert _tags(cbs) == (["r"], 4, ["n"], 5, [])


def test_accelerate_pulls_a_later_tagged_segment_forward():
    # A segment tagged for a GP later than the snapshot is merged into the snapshot's GP
    # (callbacks tagged conservatively, e.g. while RCU was idle, are "accelerated").
    cbs = _segments(["w"], 2, ["r"], 4, ["n"])
    assert cbs.accelerate(3) == 3
    assert _tags(cbs) == (["w"], 2, ["r", "n"], 3, [])
    cbs = _segments(["w"], 4, [], 0, ["n"])
    assert cbs.accelerate(3) == 3
    assert _tags(cbs) == (["w", "n"], 3, [], 0, [])


def test_rcu_do_batch_limit_divides_the_ready_callbacks_only():
    # rcu_do_batch: bl = max(blimit, DONE-segment length >> rcu_divisor). 1280 ready callbacks
    # give bl = 10 however many more wait for a later GP; with the CPU busy, the 11th callback
    # runs only after the first batch's CPU time (10 x 40 ns).
    m = make_machine({"rcu.blimit": 10, "costs.rcu_callback": 40})
    cpu = m.cpus[1]
    cpu.acquire(object())
    times: list = []
    cbs = cpu.cbs
    cbs.done.extend((lambda c, a: times.append(m.env.now), k, 0, 0) for k in range(1280))
    cbs.wait, cbs.wait_gp = [(lambda c, a: None, k, 0, 0) for k in range(20_000)], 10**9
    cbs.n = 21_280
    m.rcu.pending = m.rcu.tick_cbs = 21_280
    cpu.softirq_running = True
    m.env.process(m.rcu._invoke(cpu))
    m.env.run(until=1_000_000)
    assert len(times) == 1280
    assert times[9] == 0 and times[10] == 400 and times[20] == 800


@pytest.mark.parametrize(
    "flavor,lat", [("preemptible", 42_000), ("non-preemptible", 500_000 - 1000)]
)
def test_expedited_ipi_to_kernel_code_outside_a_reader(flavor, lat):
    # rcu_exp_handler: kernel code outside a reader reports at once on a preemptible kernel;
    # on a non-preemptible one the IPI only sets need_resched, and the CPU reports at its next
    # context switch (here: its task sleeps at 500 us).
    m = make_machine(
        {"rcu.flavor": flavor, "costs.exp_gp_overhead": 40_000, "costs.ipi_latency": 2000}
    )
    busy = m.cpus[1]

    def kernel_bound():
        busy.acquire(object())
        yield busy.compute(500_000)
        busy.release()

    m.env.process(kernel_bound())
    assert expedited_latency_from_cpu0(m) == lat


def test_expedited_on_non_preemptible_reports_on_the_way_back_to_user():
    # A resident task in a system call when the IPI lands: its return to user mode schedules
    # (need_resched), a context switch, so rcu_qs reports the expedited QS then.
    m = make_machine(
        {
            "rcu.flavor": "non-preemptible",
            "costs.exp_gp_overhead": 40_000,
            "costs.ipi_latency": 2000,
        }
    )
    busy = m.cpus[1]
    busy.enter_user()

    def syscall():
        task = object()
        yield m.env.timeout(10_000)
        busy.syscall(task)
        yield busy.compute(300_000)
        busy.to_user()

    m.env.process(syscall())
    assert expedited_latency_from_cpu0(m) == 310_000 - 1000


def test_lazy_bypass_is_flushed_when_a_callback_finds_it_qhimark_long():
    # rcu_nocb_try_bypass checks the bypass length before enqueueing: with qhimark = 5 the
    # sixth lazy callback finds five waiting and is flushed with them.
    m = make_machine({"rcu.nocb_cpus": "all", "rcu.lazy": True, "rcu.qhimark": 5})
    cpu = m.cpus[0]
    for k in range(5):
        m.rcu.call_rcu(cpu, lambda c, a: None, k)
    assert len(cpu.bypass) == 5 and m.rcu.lazy_flushes == 0
    m.rcu.call_rcu(cpu, lambda c, a: None, 5)
    assert cpu.bypass == [] and m.rcu.lazy_flushes == 1 and cpu.cbs.n == 6


def test_offloaded_cpus_in_user_mode_report_from_their_ticks():
    # With every CPU offloaded no callback keeps the tick running, but a GP still needs the
    # ticks of user-busy CPUs (rcu_sched_clock_irq runs on nocb CPUs too): GPs end within
    # two jiffies, as on the same machine without offloading, instead of never.
    from desim.config import validate
    from desim.engine import simulate

    def gp(nocb):
        cfg = {
            "seed": 1,
            "duration": "300ms",
            "machine": {"cpus": 4, "hz": 1000},
            "rcu": {"nocb_cpus": nocb},
            "workload": {
                "processes": {"initial": 4, "tables": 4},
                "faults": {"think": {"dist": "exponential", "mean": "200us"}},
                "rcu_callers": {"rate": "50/s"},
            },
        }
        return simulate(validate(cfg)).summary

    plain, offloaded = gp("none"), gp("all")
    assert plain["rcu.gp.max_ns"] == 2_000_000
    assert offloaded["rcu.gps_completed"] >= 0.9 * plain["rcu.gps_completed"]
    assert offloaded["rcu.gp.max_ns"] <= 3_000_000
