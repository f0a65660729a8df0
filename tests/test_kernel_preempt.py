"""Kernel preemption (``sched.preempt``) and wake-up preemption, step by step.

Each scenario runs scheduler tasks on a small machine with constant costs and asserts the exact
times at which they run, where a reader preempted in kernel code holds the grace period, and
when it ends, for the preemption models and RCU flavours a kernel can be built with.
"""

import pytest
from conftest import make_machine

from desim.config import ConfigError, validate
from desim.model.lock import SpinLock
from desim.model.sched import scheduler

MS = 1_000_000


def _machine(preempt, flavor="preemptible", cpus=2, **over):
    o = {
        "machine.cpus": cpus,
        "rcu.flavor": flavor,
        "sched.preempt": preempt,
        "sched.slice": "3ms",
        "sched.switch_cost": 0,
    }
    o.update(over)
    m = make_machine(o)
    return m, scheduler(m)


def _kernel_reader(m, sched, task, log, reader_ns, at=0):
    """A task that enters the kernel at once and runs ``reader_ns`` inside an RCU reader."""
    yield m.env.timeout(at)
    yield from sched.start(task)
    cpu = task.cpu
    ev = cpu.syscall(task)
    if ev is not None:
        yield ev
    log.append(("enter", task.name, m.env.now))
    cpu.rcu_read_lock()
    yield cpu.compute(reader_ns)
    cpu.rcu_read_unlock()
    log.append(("unlock", task.name, m.env.now))
    cpu.to_user()
    yield from sched.run_user(task, 0)  # back in user mode: need_resched is looked at
    cpu = task.cpu
    ev = cpu.syscall(task)
    if ev is not None:
        yield ev
    sched.exit(task)


def _user(m, sched, task, log, burst, at):
    yield m.env.timeout(at)
    yield from sched.start(task)
    log.append(("run", task.name, m.env.now))
    yield from sched.run_user(task, burst)
    cpu = task.cpu
    ev = cpu.syscall(task)
    if ev is not None:
        yield ev
    log.append(("exit", task.name, m.env.now))
    sched.exit(task)


def _callback_at(m, at, cpu=1):
    def proc():
        yield m.env.timeout(at)
        m.rcu.call_rcu(m.cpus[cpu], lambda c, a: None, None)

    m.env.process(proc())


def _scenario(preempt, flavor="preemptible"):
    """cpu0: A enters the kernel at 0 and stays 5 ms inside a reader; B (user code, 2 ms)
    wakes onto cpu0 at 0.5 ms; a callback queued on cpu1 at 0.2 ms starts a GP at 1 ms."""
    m, sched = _machine(preempt, flavor)
    cpu0 = [m.cpus[0]]
    log: list = []
    a = sched.new_task("A", cpu0)
    b = sched.new_task("B", cpu0)
    m.env.process(_kernel_reader(m, sched, a, log, 5 * MS))
    m.env.process(_user(m, sched, b, log, 2 * MS, MS // 2))
    _callback_at(m, MS // 5)
    m.env.run(until=40 * MS)
    return m, sched, log


def test_full_preemption_a_reader_preempted_at_the_tick_holds_the_gp_until_its_unlock():
    m, sched, log = _scenario("full")
    # B's wake-up at 0.5 ms does not preempt A (RUN_TO_PARITY: A is inside its first slice);
    # the tick at 3 ms, A's slice end, preempts A in place, inside its reader. B runs its
    # 2 ms; A gets cpu0 back at 5 ms and finishes its reader's last 2 ms at 7 ms.
    assert log == [
        ("enter", "A", 0),
        ("run", "B", 3 * MS),
        ("exit", "B", 5 * MS),
        ("unlock", "A", 7 * MS),
    ]
    assert sched.reader_preemptions == sched.kernel_preemptions == 1
    # The GP began at 1 ms, before A was preempted: cpu0 passed its QS by switching at 3 ms,
    # but A sat on the blocked-tasks list until its unlock, which ended the GP.
    start, end = m.rcu.gp_spans[0]
    assert (start, end) == (1 * MS, 7 * MS)
    assert not m.rcu.blocked


@pytest.mark.parametrize("preempt", ["none", "voluntary"])
@pytest.mark.parametrize("flavor", ["preemptible", "non-preemptible"])
def test_without_full_preemption_kernel_code_runs_on_until_it_returns_to_user(preempt, flavor):
    m, sched, log = _scenario(preempt, flavor)
    # need_resched from the 3 ms tick is honoured only on A's way back to user mode.
    assert log == [
        ("enter", "A", 0),
        ("unlock", "A", 5 * MS),
        ("run", "B", 5 * MS),
        ("exit", "B", 7 * MS),
    ]
    assert sched.kernel_preemptions == sched.reader_preemptions == 0
    assert sched.preemptions == 1
    # No reader was ever preempted; cpu0's QS comes after the reader, at the switch to B at
    # 5 ms, which the tick of that same instant reports (its timer was set after A's step).
    start, end = m.rcu.gp_spans[0]
    assert (start, end) == (1 * MS, 5 * MS)


def test_full_preemption_a_tick_inside_a_spinlock_waits_for_its_unlock():
    """Preemption is off under a spinlock: the tick sets need_resched, and the unlock's
    ``preempt_enable`` (here: the next kernel step) switches, inside the reader."""
    m, sched = _machine("full")
    cpu0 = [m.cpus[0]]
    log: list = []
    lock = SpinLock(m.env, m.lock_class("test"), 0, 0)  # free to take: exact times

    def a_body(task):
        yield from sched.start(task)
        cpu = task.cpu
        cpu.syscall(task)
        cpu.rcu_read_lock()
        yield from cpu.spin_lock(lock)
        yield cpu.compute(4 * MS)  # holds the lock across the 3 ms tick
        cpu.spin_unlock(lock)
        log.append(("unlocked", m.env.now))
        yield cpu.compute(1 * MS)  # the preemption point: A switches before this step runs
        cpu.rcu_read_unlock()
        log.append(("reader_end", m.env.now))
        cpu.to_user()
        ev = cpu.syscall(task)
        if ev is not None:
            yield ev
        sched.exit(task)

    m.env.process(a_body(sched.new_task("A", cpu0)))
    m.env.process(_user(m, sched, sched.new_task("B", cpu0), log, 2 * MS, MS // 2))
    m.env.run(until=40 * MS)
    assert log == [
        ("unlocked", 4 * MS),
        ("run", "B", 4 * MS),
        ("exit", "B", 6 * MS),
        ("reader_end", 7 * MS),
    ]
    assert sched.reader_preemptions == 1
    assert not m.rcu.blocked


def test_wakeup_preemption_follows_eevdf_run_to_parity():
    """A woken task preempts the current one only once that one has used a slice alone, and
    only if its own (zero-lag) deadline is not later than the current one's."""
    m, sched = _machine("voluntary", cpus=1)
    log: list = []
    m.env.process(_user(m, sched, sched.new_task("A"), log, 20 * MS, 0))
    # B wakes at 2 ms: inside A's first slice, no preemption; it gets the CPU at A's slice
    # end (the 3 ms tick) and runs 1 ms; A is back at 4 ms alone.
    m.env.process(_user(m, sched, sched.new_task("B"), log, 1 * MS, 2 * MS))
    # C, new, wakes at 8.5 ms: A has run alone since 4 ms, its deadline was 7 ms, pushed by
    # the 7 ms tick to 10 ms; C asks for half a slice (deadline 10 ms): a tie, C wins.
    m.env.process(_user(m, sched, sched.new_task("C"), log, 1 * MS, int(8.5 * MS)))
    m.env.run(until=60 * MS)
    assert log[:5] == [
        ("run", "A", 0),
        ("run", "B", 3 * MS),
        ("exit", "B", 4 * MS),
        ("run", "C", int(8.5 * MS)),
        ("exit", "C", int(9.5 * MS)),
    ]
    assert sched.wakeup_preemptions == 1


def test_wakeup_preemption_can_be_turned_off():
    m, sched = _machine("voluntary", cpus=1, **{"sched.wakeup_preemption": False})
    log: list = []
    m.env.process(_user(m, sched, sched.new_task("A"), log, 20 * MS, 0))
    m.env.process(_user(m, sched, sched.new_task("C"), log, 1 * MS, int(8.5 * MS)))
    m.env.run(until=60 * MS)
    # C waits for the tick that ends A's running slice (A picked at 0: slice over; next tick)
    assert ("run", "C", 9 * MS) in log
    assert sched.wakeup_preemptions == 0


def test_full_preemption_needs_the_preemptible_flavour():
    with pytest.raises(ConfigError, match=r"^sched\.preempt: full needs rcu\.flavor"):
        validate({"sched": {"preempt": "full"}, "rcu": {"flavor": "non-preemptible"}})
    with pytest.raises(ConfigError, match=r"^sched\.preempt: .*'none', 'voluntary' or 'full'"):
        validate({"sched": {"preempt": "lazy"}})


def _flood(m, cpu, n, cost, at):
    def proc():
        yield m.env.timeout(at)
        for _ in range(n):
            m.rcu.call_rcu(cpu, lambda c, a: None, None, cost=cost)

    m.env.process(proc())


@pytest.mark.parametrize("preempt", ["voluntary", "full"])
def test_callbacks_past_the_softirq_budget_go_to_ksoftirqd_which_competes_for_the_cpu(preempt):
    """400 callbacks of 50 us on cpu0 while a task runs user code there: the softirq runs
    batches of 10 until its 2 ms (2 jiffies at HZ=1000) or 10 restarts are used, then wakes
    ksoftirqd, a task that waits for the CPU like any other; ticks meanwhile run more batches
    inline. Every callback runs, and cpu0's time is conserved: the task ends exactly the
    callbacks' 20 ms late."""
    m, sched = _machine(preempt, **{"costs.rcu_callback": 0})
    log: list = []
    cpu0 = m.cpus[0]
    m.env.process(_user(m, sched, sched.new_task("A", [cpu0]), log, 50 * MS, 0))
    _flood(m, cpu0, 400, 50_000, MS // 5)
    m.env.run(until=200 * MS)
    s = m.rcu.results(m.env.now)
    assert s["rcu.callbacks_invoked"] == 400
    assert s["rcu.ksoftirqd_wakeups"] >= 1
    assert 0 < s["rcu.ksoftirqd_callbacks"] < 400  # ticks ran some inline meanwhile
    assert ("exit", "A", 70 * MS) in log
    # ksoftirqd took cpu0 from A as a task: context switches beyond A's own
    assert sched.switches > 2


def test_a_softirq_on_a_machine_without_a_scheduler_runs_every_batch_inline():
    m = make_machine({"machine.cpus": 2, "costs.rcu_callback": 0})
    _flood(m, m.cpus[0], 400, 50_000, MS // 5)
    m.env.run(until=200 * MS)
    s = m.rcu.results(m.env.now)
    assert s["rcu.callbacks_invoked"] == 400 and s["rcu.ksoftirqd_wakeups"] == 0
