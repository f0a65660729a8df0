"""What the closed-loop elements (``spawn``, ``build``) share: one process's life under the
scheduler, from fork to the parent's ``wait``.

A child's life, as the kernel runs it (v6.6):

* ``fork`` in the parent (kernel/fork.c ``kernel_clone``), with the exec of a new mm
  (``mm_ops.do_fork`` charges fork+exec together and makes the mm with no tables);
* the child is placed by ``wake_up_new_task`` and runs its user-mode burst; its working set
  appears as it runs: the burst is cut into ``tables + 1`` equal pieces with one page fault
  between two, each allocating one more PTE table (``__pte_alloc``). Faults that find their
  table already there are part of the burst's CPU time: they allocate nothing;
* ``exit``: ``exit_mmap`` frees what was mapped through mmu_gather (its cost grows with the
  tables), then the mm-lifetime rule's wait if it is placed there; ``exit_notify`` wakes the
  parent, whose ``wait4`` returns through ``wait_task_zombie``; the task's last context switch
  drops the mm's last reference (``finish_task_switch``, ``desim.model.mm_lifetime``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simpy.events import Event

from desim.model import mm_ops

if TYPE_CHECKING:
    from desim.model.machine import Machine
    from desim.model.sched import Scheduler, Task


def fork(m: Machine, sched: Scheduler, parent: Task, tables: int):
    """The parent forks a child with an exec'd mm of ``tables`` tables (generator: the mm)."""
    cpu = parent.cpu
    ev = cpu.syscall(parent)
    if ev is not None:
        yield ev
    mm = yield from mm_ops.do_fork(m, cpu, tables)
    cpu.to_user()
    return mm


def child_life(m: Machine, sched: Scheduler, task: Task, mm, burst: int, exited: Event, u):
    """The child: placed, runs ``burst`` of user code faulting its tables in, exits."""
    yield from sched.start(task)
    n = mm.target_tables
    piece = burst // (n + 1)
    fault = mm_ops.handle_fault
    for _ in range(n):
        yield from sched.run_user(task, piece)
        cpu = task.cpu
        ev = cpu.syscall(task)
        if ev is not None:
            yield ev
        yield from fault(m, cpu, task, mm, u(), False)
        cpu.to_user()
    yield from sched.run_user(task, burst - n * piece)
    cpu = task.cpu
    ev = cpu.syscall(task)
    if ev is not None:
        yield ev
    yield from mm_ops.exit_mmap(m, cpu, task, mm)
    exited.succeed()  # exit_notify: the parent's wait4 can return
    sched.exit(task)
    m.mm_life.final_drop(cpu, mm)


def run_child(
    m: Machine, sched: Scheduler, parent: Task, tables: int, burst: int, u, name: str = "child"
):
    """fork + wait4 in ``parent`` (generator): returns when the child has been reaped."""
    mm = yield from fork(m, sched, parent, tables)
    child = sched.new_task(name, parent.allowed)
    exited = Event(m.env)
    m.env.process(child_life(m, sched, child, mm, burst, exited, u))
    yield from sched.sleep(parent, exited)
