"""The kernel paths that create, walk and free page tables, as SimPy generators.

Each runs in a task that owns ``cpu`` and returns with it still owned. They are what workload
elements call; the design under study is reached only through ``machine.allocator``.

* ``handle_fault``: a minor fault. ``mmap_lock`` for read, then the lockless walk of 6.6
  (``pte_offset_map`` enters an RCU reader, read the PTE), take the table's ``ptl``, re-check
  that the PMD still points at the table (``pte_offset_map_lock``'s ``pmd_same``); if khugepaged
  retracted it meanwhile, unlock and retry. A missing table is allocated first
  (``__pte_alloc``: allocate, then install under the PMD lock).
* ``retract_page_tables``: khugepaged (mm/khugepaged.c, 6.6) under ``i_mmap_lock_read``, for a
  table in each mm mapping the range: PMD lock + nested ptl, clear the PMD, flush the TLB,
  unlock, ``pte_free_defer``. No mmap_lock: faults race with it, which is why RCU is needed.
* ``do_munmap`` and ``exit_mmap``: ``mmap_lock`` for write, unlink from the file's i_mmap, and
  free the tables through mmu_gather.

An mm's ``target_tables`` is how many PTE tables its mapped ranges need; a fault below it
populates one. A retracted range is mapped by a huge PMD from then on (``collapse_file`` put a
THP in the page cache; the next fault maps it with ``do_set_pmd``), so it needs no PTE table and
the target drops by one, except on machines that deposit a table beside a huge PMD
(``arch_needs_pgtable_deposit``: powerpc hash), where the refault allocates one. A munmapped
range needs no table either, unless the workload maps it again (``munmap.remap``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from desim.model.memory import DETACHED, LIVE, PageTable
from desim.model.mmu_gather import MMUGather
from desim.model.simcore import decided_at, sleep, timeout

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.lock import SpinLock
    from desim.model.machine import Machine
    from desim.model.memory import MM


# Take the fault's one-event path when nothing else can happen before the fault ends (tests
# turn it off to check that both paths give the same run).
LOOKAHEAD = True


def _lock(lock, cpu):
    """Spin until ``lock`` is ours (generator): time owed is paid first, outside the lock."""
    return cpu.spin_lock(lock)


def populate(m: Machine, cpu: CPU, task, mm: MM, shmem: bool):
    """``__pte_alloc``: allocate a table and install it under the PMD lock."""
    env = m.env
    t0 = env.now
    d0 = cpu.debt
    if cpu.trace is not None:
        cpu.trace.op(cpu, "populate")
    table = yield from m.allocator.pte_alloc_one(cpu, mm)
    m.record("alloc", env.now - t0 + cpu.debt - d0)
    if table is None:
        m.counters["alloc.failed"] += 1
        return None
    table.shmem = shmem
    yield from _lock(mm.pmd_lock, cpu)
    if len(mm.tables) >= mm.target_tables and mm.tables:
        # pmd_install() found the PMD already populated by a racing fault: the new table was
        # never visible to anyone, so it is freed at once with pte_free().
        mm.pmd_lock.release(cpu)
        if cpu.trace is not None:
            cpu.trace.instant(cpu, "pmd_install lost the race: pte_free", {"mm": repr(mm)})
        yield from m.allocator.pte_free(cpu, mm, table)
        m.counters["alloc.lost_race"] += 1
        return mm.tables[-1]
    mm.tables.append(table)
    mm.pmd_lock.release(cpu)
    m.counters["tables.allocated"] += 1
    if m.safety is not None:
        m.safety.note(table, cpu, f"allocated for {mm!r}")
    return table


def handle_fault(
    m: Machine, cpu: CPU, task, mm: MM, pick: float, shmem: bool, want: PageTable | None = None
):
    """One minor fault in ``mm`` on the table at fraction ``pick`` of its tables, or on ``want``
    while it is attached (a replayed fault knows its table). Returns the table it faulted on
    (None: the mm exited, or no table could be had)."""
    env = m.env
    costs = m.costs
    # one draw per fault, on either path below: the lookahead takes it when the walk starts,
    # the slow path when the walk ends; from the CPU's own stream, so what other CPUs draw
    # meanwhile does not change it
    fault_work = cpu.fault_work
    t0 = env.now
    if cpu.trace is not None:
        cpu.trace.op(cpu, "fault")
    sem = mm.mmap_lock
    ev = sem.down_read()
    if ev is not None:
        yield from m.sleep(cpu, task, ev)
    if not mm.alive:
        sem.up_read()
        return None
    safety = m.safety
    table = None
    while True:
        tables = mm.tables
        if want is not None and want.state == LIVE:
            table = want
        elif len(tables) < mm.target_tables:
            table = yield from populate(m, cpu, task, mm, shmem)
            if table is None:
                break
        elif tables:
            table = tables[int(pick * len(tables))]
        else:
            table = None
            break
        # pte_offset_map(): the RCU reader begins; the table pointer is read from the PMD.
        cpu.rcu_read_lock()
        page = table.page
        gen = table.gen
        lock: SpinLock = page.ptl  # type: ignore[assignment]  # a table's page has its ptl
        # cpu.compute(), inlined on the hottest path of the model
        owed = cpu.debt
        d = costs.pte_walk + owed
        cpu.debt = 0
        now = env.now
        t2 = now + d  # the walk ends
        if (
            LOOKAHEAD
            and lock.holder is None
            and page.gen == gen
            and page.allocated
            and table.state == LIVE
            and not cpu.kpreempt
            and not cpu.softirq_running
            and (
                (not lock.approaching and not owed and t2 < m.fence and cpu.owner is task)
                or env.peek() > t2
            )
        ):
            # Lookahead: nothing can touch the table, its page or the ptl before the walk ends
            # at t2, so the checks the walk's end would make (the read, pmd_same) pass now and
            # the ptl is ours from t2: the walk and the ptl section are one sleep instead of
            # two; from t2 on, other CPUs see the ptl held, as they would. Either no event at
            # all is due before t2 (only an event can schedule another), or events are but none
            # can reach this ptl or change this CPU's fault before t2:
            # - the ptl is taken only by faults (each walks first) and retractions (each takes
            #   the PMD lock first); those already on their way count in ``approaching``, and a
            #   walk starting from now on ends no earlier than t2 (every walk lasts pte_walk
            #   plus what its CPU owed, and this CPU owed nothing), after this one on a tie;
            # - the table cannot be freed or unmapped: munmap and exit need mmap_lock for
            #   write, which this fault holds for read; retraction needs the ptl;
            # - what other CPUs draw does not change this fault's draw (per-CPU streams);
            # - time stolen from this CPU before t2 (an IPI, softirq work) lengthens the ptl
            #   section as on the slow path (``CPU.steal``); a preemptible kernel (preempt=full)
            #   could switch the walk out, so it keeps the slow path;
            # - a softirq's RCU callback that takes a lock runs on this CPU's debt, not by
            #   stealing: none may be running (``softirq_running``), and one starting during
            #   the walk puts the fault back on the slow path (``CPU.end_lookahead``);
            # - no checkpoint or statistics reset falls before t2 (``m.fence``);
            # - a retraction reaching the ptl before t2 takes it, as it would have: the fault
            #   then wakes at t2 and goes on as the slow path (``SpinLock._undo_lookahead``).
            # Both paths take the scheduling numbers of the walk's end and of the section's end
            # when the walk starts, so every event keeps its place among those of its instant.
            # (the section's end is scheduled at once, taking the number after the walk's)
            cpu.la_seq = m.next_seq()
            w = cpu.la_work
            if w < 0:
                w = fault_work()
            else:
                cpu.la_work = -1
            lock.acquire_at(cpu, t2)
            d += w + cpu.debt  # the ptl's acquire cost
            cpu.debt = 0
            cpu.la_ev = ev = timeout(env, d)  # kept while the walk lasts: not a sleep()
            cpu.la_until = t2  # (stale once past: nothing after t2 looks at these)
            cpu.la_end = now + d
            cpu.la_lock = lock
            cpu.la_stolen = 0
            slow = yield ev  # True: undone, the walk has just ended
            if slow:
                seq_end = cpu.la_seq + 1
                lock.approaching -= 1
                # the draw is the slow path's, at this walk's end or, should this attempt
                # end without doing the work, at the next one that does (on this CPU)
                cpu.la_work = w
        else:
            slow = True
            lock.approaching += 1
            if cpu.kpreempt and cpu.owner is cpu.curr:
                # preempt=full: the walk is preemptible, inside the RCU reader
                # kpreempt is set only on a machine with a scheduler
                ev = cpu.sched.kernel_step(cpu, d)  # type: ignore[union-attr]
            else:
                ev = sleep(env, d)
            seq_end = m.next_seq()
            yield ev
            lock.approaching -= 1
        if slow:
            if safety is not None:
                safety.table_access(cpu, table, gen, "pte read")
            ev = lock.acquire(cpu)
            if ev is not None:
                yield ev
            if table.state != LIVE:
                # pmd_same() failed: the table was retracted under us. Unlock and fault again.
                lock.release(cpu)  # a ptl of a freed page is poisoned: the checker sees this
                cpu.rcu_read_unlock()
                if cpu.trace is not None:
                    cpu.trace.instant(cpu, "pmd_same failed: fault retried", {"table": repr(table)})
                m.counters["fault.retries"] += 1
                continue
            # the ptl's acquire cost, and time stolen meanwhile
            w = cpu.la_work
            if w < 0:
                w = fault_work()
            else:
                cpu.la_work = -1
            d = w + cpu.debt
            cpu.debt = 0
            yield decided_at(env, d, seq_end)
        if safety is not None:
            safety.table_access(cpu, table, gen, "pte write")
        lock.release(cpu)
        if cpu.resched and cpu.kpreempt:
            # pte_unmap_unlock: the ptl's preempt_enable switches, still inside the reader
            ev = cpu.sched.preempt_point(cpu)  # type: ignore[union-attr]  # kpreempt: sched set
            if ev is not None:
                yield ev
        cpu.rcu_read_unlock()
        break
    sem.up_read()
    m.recorders["fault"](env.now - t0)
    return table


def retract_page_tables(
    m: Machine, cpu: CPU, task, victims: list[tuple[MM, PageTable]], i_mmap: bool = True
):
    """Retract one shmem range: its table in each mm of ``victims``.

    ``i_mmap=False``: the caller holds the mm's mmap_lock instead (collapse_pte_mapped_thp).
    """
    env = m.env
    alloc = m.allocator
    if cpu.trace is not None:
        cpu.trace.op(cpu, "retract_page_tables")
    if i_mmap:
        ev = m.i_mmap_lock.down_read()
        if ev is not None:
            yield from m.sleep(cpu, task, ev)
    for mm, table in victims:
        if not mm.alive or table.state != LIVE:
            continue  # the mm exited or unmapped the range meanwhile
        t0 = env.now
        ptl = table.page.ptl
        assert ptl is not None  # a live table's page is a page-table page, with its ptl
        ptl.approaching += 1  # on its way to the ptl (the fault lookahead must wait for it)
        yield from _lock(mm.pmd_lock, cpu)
        if table.state != LIVE:
            # Another collapse of the range retracted it while we waited. In the kernel the
            # huge folio's lock serialises collapses of one range (collapse_file holds it over
            # retract_page_tables, collapse_pte_mapped_thp takes it first), and the later one
            # finds the PMD no longer pointing at a PTE table (find_pmd_or_thp_or_none).
            ptl.approaching -= 1
            mm.pmd_lock.release(cpu)
            continue
        yield from _lock(ptl, cpu)
        ptl.approaching -= 1
        table.state = DETACHED
        tables = mm.tables
        i = tables.index(table)
        tables[i] = tables[-1]
        tables.pop()
        if not m.deposits_pgtable:
            mm.target_tables -= 1  # PMD-mapped from now on: its faults need no PTE table
        yield cpu.compute(m.draw.tlb_flush())
        ptl.release(cpu)
        mm.pmd_lock.release(cpu)
        td = env.now
        d0 = cpu.debt
        if m.safety is not None:
            m.safety.note(table, cpu, "retracted")
        if cpu.trace is not None:
            cpu.trace.instant(cpu, "retracted: pte_free_defer", {"table": repr(table)})
        yield from alloc.pte_free_defer(cpu, mm, table)
        m.record("defer", env.now - td + cpu.debt - d0)
        m.record("retract", env.now - t0)
        m.counters["tables.deferred"] += 1
    if i_mmap:
        m.i_mmap_lock.up_read()


def _free_tables(m: Machine, cpu: CPU, mm: MM, tables: list[PageTable]):
    env = m.env
    tlb = MMUGather(m, cpu, mm)
    alloc = m.allocator
    for table in tables:
        table.state = DETACHED
        t0 = env.now
        d0 = cpu.debt
        yield from alloc.pte_free_tlb(cpu, tlb, table)
        m.record("free", env.now - t0 + cpu.debt - d0)
    yield from tlb.finish()
    m.counters["tables.gathered"] += len(tables)
    m.counters["tlb.batches"] += tlb.batches


def do_munmap(
    m: Machine,
    cpu: CPU,
    task,
    mm: MM,
    count: int,
    remap: bool = False,
    victims: list[PageTable] | None = None,
):
    """munmap of a range covering ``count`` tables of ``mm`` (``remap``: mapped again at once,
    so its faults will populate the tables anew); ``victims``: exactly these tables (those
    still attached when the mmap_lock is had), however many that is, none included."""
    env = m.env
    t0 = env.now
    if cpu.trace is not None:
        cpu.trace.op(cpu, "munmap")
    ev = mm.mmap_lock.down_write()
    if ev is not None:
        yield from m.sleep(cpu, task, ev)
    if mm.alive and (mm.tables or victims is not None):
        ev = m.i_mmap_lock.down_write()
        if ev is not None:
            yield from m.sleep(cpu, task, ev)
        if victims is None:
            victims = mm.tables[-count:]
            del mm.tables[-count:]
        else:
            victims = [t for t in victims if t.state == LIVE]
            gone = set(map(id, victims))
            mm.tables[:] = [t for t in mm.tables if id(t) not in gone]
        if not remap:
            mm.target_tables -= len(victims)
        for t in victims:
            # Unlinked from the file's i_mmap: a khugepaged that picked one of these before
            # taking i_mmap_lock must see it is no longer attached (it checks the state).
            t.state = DETACHED
        m.i_mmap_lock.up_write()
        # zap_pte_range over the range: every PTE of its tables
        yield cpu.compute(m.draw.munmap() + m.zap_table * len(victims))
        yield from _free_tables(m, cpu, mm, victims)
        m.counters["munmap.count"] += 1
    mm.mmap_lock.up_write()
    m.record("munmap", env.now - t0)


def exit_mmap(m: Machine, cpu: CPU, task, mm: MM):
    """Process exit: unlink the mm, free every table through mmu_gather, free the mm."""
    env = m.env
    t0 = env.now
    if cpu.trace is not None:
        cpu.trace.op(cpu, "exit_mmap")
    ev = m.i_mmap_lock.down_write()
    if ev is not None:
        yield from m.sleep(cpu, task, ev)
    m.unlink_mm(mm)
    m.i_mmap_lock.up_write()
    ev = mm.mmap_lock.down_write()
    if ev is not None:
        yield from m.sleep(cpu, task, ev)
    # task teardown, then zap_pte_range over everything the mm mapped (unmap_vmas)
    yield cpu.compute(m.draw.exit() + m.zap_table * len(mm.tables))
    tables, mm.tables = mm.tables, []
    yield from _free_tables(m, cpu, mm, tables)
    yield from m.allocator.mm_teardown(cpu, mm)
    mm.mmap_lock.up_write()
    yield from m.mm_life.exit_mmap_end(cpu, task, mm)  # the mm-lifetime rule's wait, if any
    m.counters["mm.exited"] += 1
    m.record("exit", env.now - t0)


def do_fork(m: Machine, cpu: CPU, target_tables: int, pgste: bool = False):
    """fork+exec: a new mm whose tables its faults will populate."""
    t0 = m.env.now
    yield cpu.compute(m.draw.fork())
    mm = m.new_mm(target_tables, pgste)
    m.record("fork", m.env.now - t0)
    return mm


def collapse_pte_mapped_thp(m: Machine, cpu: CPU, task, mm: MM, table: PageTable, cost: int):
    """MADV_COLLAPSE of one range of ``mm`` (mm/khugepaged.c, 6.6): under mmap_read_lock only.

    The huge page is built and the PTEs cleared (``cost``), then the now-empty table is
    detached under the PMD lock and ptl and handed to ``pte_free_defer``, as khugepaged's
    retraction does, but for this one mm and without the file's i_mmap lock.
    """
    sem = mm.mmap_lock
    ev = sem.down_read()
    if ev is not None:
        yield from m.sleep(cpu, task, ev)
    if mm.alive and table.state == LIVE:
        yield cpu.compute(cost)
        yield from retract_page_tables(m, cpu, task, [(mm, table)], i_mmap=False)
        m.counters["collapse.madvise"] += 1
    sem.up_read()
