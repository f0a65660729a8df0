"""How an exiting mm outlives RCU callbacks that may reach it (``mm_lifetime``), and where.

A process's exit runs, in the kernel (v6.6): ``do_exit`` → ``exit_mm`` → ``mmput`` →
``__mmput`` → ``exit_mmap`` (mm/mmap.c: unmap, free the page tables through mmu_gather), then
``exit_notify`` (kernel/exit.c: the parent is woken; its ``wait4`` returns through
``wait_task_zombie`` only after this), then ``do_task_dead`` → ``__schedule``. ``exit_mm`` left
the task running on its old mm as a lazy-TLB mm, so the mm_struct's last reference is usually
dropped by ``finish_task_switch`` of the next task (``mmdrop_lazy_tlb_sched`` → ``mmdrop`` →
``__mmdrop``, kernel/fork.c, which calls ``destroy_context`` and ``free_mm``), with preemption
and interrupts disabled. A wait placed in ``exit_mmap`` is therefore on the critical path of the
parent's ``wait``; one placed in ``__mmdrop`` is not, but it sleeps where sleeping is forbidden.

The alternatives (config ``mm_lifetime``), each usable with any design:

* ``design``: the design's own ``mm_free`` at the end of ``exit_mmap`` (generic: freed at once;
  ``s390-hh``: its ``mm_lifetime`` parameter);
* ``none``: no wait; ``__mmdrop`` frees the mm at the final drop (the baseline);
* ``synchronize_rcu_exit_mmap``: ``synchronize_rcu()`` at the end of ``exit_mmap``;
* ``synchronize_rcu_mmdrop``: ``synchronize_rcu()`` in ``destroy_context()`` (arch/x86 and
  arch/s390 ``destroy_context``) from ``__mmdrop``, reached from ``finish_task_switch``: the
  safety checker reports ``sleep_in_atomic`` with that context (the kernel's "BUG: scheduling
  while atomic"; what follows is undefined, desim lets the wait happen on a kernel task);
* ``rcu_barrier``: ``rcu_barrier()`` at the end of ``exit_mmap`` (every callback queued so far
  has run), then ``__mmdrop`` frees the mm by ``call_rcu``;
* ``mmdrop_async``: ``mmdrop_async`` (kernel/fork.c): the final drop is handed to a kworker
  (``schedule_work``) that frees the mm ``sched.kworker_delay`` later. ``s390-hh`` maps it onto
  its own per-deferral ``mmgrab`` references dropped by its callbacks;
* ``call_rcu``: ``__mmdrop`` frees the mm by ``call_rcu`` (a GP after the final drop; callbacks
  queued earlier on other CPUs may still run after it: callbacks are unordered);
* ``slab_typesafe_by_rcu``: the per-mm list and lock move to a side object from a
  ``SLAB_TYPESAFE_BY_RCU`` cache (the follow-up Hugh's v2 s390 patch planned): the mm_struct is
  freed at the final drop, the side object, which is all a callback touches, only after a GP
  (the slab's pages go back through ``call_rcu``); the safety checker watches that object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simpy.events import Timeout

from desim.model.hooks import thread_kind, traced_as

if TYPE_CHECKING:
    from desim.model.cpu import CPU
    from desim.model.machine import Machine
    from desim.model.memory import MM

EXITING = thread_kind("exiting task")  # its mmdrop sleeps in synchronize_rcu
KWORKER = thread_kind("kworker (mmdrop_async)")

ATOMIC_CONTEXT = (
    "finish_task_switch: lazy-TLB mm drop (mmdrop_lazy_tlb_sched -> __mmdrop -> "
    "destroy_context -> synchronize_rcu), preemption and IRQs disabled"
)


@traced_as("__mmdrop")
def _free_mm_cb(cpu: CPU, arg) -> None:
    m, mm = arg
    m.free_mm(cpu, mm)


# counters this module increments (desim.records: declared, so a typo fails at once)
COUNTERS = (
    "mm.exit_mmap_synchronize",
    "mm.exit_mmap_barrier",
    "mm.call_rcu",
    "mm.rcu_barrier",
    "mm.slab_typesafe_by_rcu",
    "mm.mmdrop_synchronize",
    "mm.mmdrop_async",
)


class MMLifetime:
    def __init__(self, m: Machine) -> None:
        self.m = m
        rule = m.config.mm_lifetime
        alloc = m.allocator
        mapped = alloc.LIFETIMES
        if rule in mapped:
            # The design has its own mechanism for this rule (s390-hh's mm_lifetime).
            alloc.lifetime = mapped[rule]
            rule = "design"
        elif mapped and rule != "design":
            alloc.lifetime = None  # the rule here frees the mm; the design takes no references
        self.rule = rule

    def exit_mmap_end(self, cpu: CPU, task, mm: MM):
        """The end of ``exit_mmap`` (generator, run by the exiting task owning ``cpu``)."""
        m = self.m
        rule = self.rule
        if rule == "design":
            yield from m.allocator.mm_free(cpu, mm, task)
        elif rule == "synchronize_rcu_exit_mmap":
            yield from m.rcu.synchronize(cpu, task)
            m.counters["mm.exit_mmap_synchronize"] += 1
        elif rule == "rcu_barrier":
            yield from m.rcu.barrier(cpu, task)
            m.counters["mm.exit_mmap_barrier"] += 1

    def final_drop(self, cpu: CPU, mm: MM) -> None:
        """The mm's last reference goes, in ``finish_task_switch`` after the exiting task's
        last context switch on ``cpu``."""
        m = self.m
        rule = self.rule
        if rule == "design" or mm.freed:
            return
        if rule in ("none", "synchronize_rcu_exit_mmap"):
            m.free_mm(cpu, mm)
        elif rule in ("call_rcu", "rcu_barrier", "slab_typesafe_by_rcu"):
            cpu.steal(m.costs.call_rcu)
            m.rcu.call_rcu(cpu, _free_mm_cb, (m, mm))
            m.counters[f"mm.{rule}"] += 1
        elif rule == "synchronize_rcu_mmdrop":
            if m.safety is not None:
                m.safety.sleep_in_atomic(cpu, mm, ATOMIC_CONTEXT)
            m.counters["mm.mmdrop_synchronize"] += 1
            m.env.process(self._sleeping_mmdrop(cpu, mm))
        elif rule == "mmdrop_async":
            m.counters["mm.mmdrop_async"] += 1
            m.env.process(self._kworker_free(cpu, mm))
        else:  # pragma: no cover - the config admits only the rules above
            raise ValueError(f"mm_lifetime: unknown rule {rule!r}")

    def _sleeping_mmdrop(self, cpu: CPU, mm: MM):
        m = self.m
        task = EXITING()
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        yield from m.rcu.synchronize(cpu, task)
        m.free_mm(cpu, mm)
        yield cpu.compute(0)
        cpu.release()

    def _kworker_free(self, cpu: CPU, mm: MM):
        """``mmdrop_async``: ``schedule_work``; a kworker on the same CPU frees the mm."""
        m = self.m
        yield Timeout(m.env, m.config.sched.kworker_delay)
        task = KWORKER()
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        m.free_mm(cpu, mm)
        yield cpu.compute(0)
        cpu.release()
