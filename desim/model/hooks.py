"""What the model tells a tracer, and the names it tells it by.

When a tracer is attached (``desim.trace.Tracer``), ``cpu.trace`` and ``rcu.trace`` hold it and
the model calls the hooks of ``TraceHooks`` at the points it names; with none attached both are
None and each hook site costs one attribute test. The model never asks a tracer anything.

Things a trace shows carry their names from where they are made, in the kernel's terms:

* a task that takes a CPU (``cpu.acquire``/``cpu.syscall``) is a ``Thread`` of a kind made by
  ``thread_kind("khugepaged")`` (or a scheduler ``Task``, named when it is created): its
  ``name`` is what the kernel would show for it (``user task``, ``khugepaged``, a kworker);
* an RCU callback function is marked ``@traced_as("pte_free_now")``: the function the kernel
  queues with ``call_rcu`` for the same job; a wrapper that runs another callback (the page's
  ``rcu_head`` one) is marked ``@wraps_callback(...)`` with how to find the one it wraps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

if TYPE_CHECKING:
    from simpy.events import Event

    from desim.model.cpu import CPU
    from desim.model.lock import SpinLock

F = TypeVar("F", bound=Callable[..., Any])


class Thread:
    """A thread of execution that owns a CPU while it runs kernel code: one object per task
    (the CPU and RCU tell tasks apart by identity), its kind's ``name`` shared by the class.

    Kinds are subclasses with no state of their own, so making one costs what ``object()``
    does on the paths that make a task per operation."""

    __slots__ = ()
    name: ClassVar[str] = "task"

    def __repr__(self) -> str:
        return f"<{self.name}>"


def thread_kind(name: str) -> type[Thread]:
    """A kind of ``Thread`` named ``name`` as traces show it (``thread_kind("khugepaged")``)."""
    return type(f"Thread[{name}]", (Thread,), {"__slots__": (), "name": name})


USER_TASK = thread_kind("user task")  # a process in a system call or a page fault


def task_name(task: object) -> str:
    """The name a task was given where it was made (``task`` for one that has none)."""
    name = getattr(task, "name", None)
    return name if isinstance(name, str) else "task"


def traced_as(name: str) -> Callable[[F], F]:
    """Mark an RCU callback with the kernel's name for it (traces show that, not the Python
    name)."""

    def mark(func: F) -> F:
        setattr(func, "kernel_name", name)  # noqa: B010 - a function attribute mypy can't type
        return func

    return mark


def wraps_callback(inner: Callable[[Any], Callable]) -> Callable[[F], F]:
    """Mark a callback that runs another: ``inner(arg)`` is the one it runs for ``arg``."""

    def mark(func: F) -> F:
        setattr(func, "wrapped_callback", inner)  # noqa: B010
        return func

    return mark


def callback_name(func: Callable, arg: object) -> str:
    """What the kernel calls the callback ``func(cpu, arg)``."""
    inner = getattr(func, "wrapped_callback", None)
    if inner is not None:
        func = inner(arg)
    name = getattr(func, "kernel_name", None)
    return name if isinstance(name, str) else getattr(func, "__name__", repr(func))


class TraceHooks(Protocol):
    """The calls the model makes on an attached tracer (``cpu.trace``, ``rcu.trace``).

    Each reports what happens now (the tracer reads the clock) unless it passes times."""

    # CPU ownership (desim.model.cpu)
    def task_acquire(self, cpu: CPU, task: object, granted: bool) -> None:
        """``task`` asks for ``cpu``: it runs now (``granted``) or queues."""

    def task_switch(self, cpu: CPU, nxt: object | None) -> None:
        """The owner leaves ``cpu``; ``nxt`` (if any) runs from now."""

    def op(self, cpu: CPU, name: str) -> None:
        """A kernel path (``fault``, ``munmap``...) starts in the task running on ``cpu``."""

    def instant(
        self, cpu: CPU | None, name: str, args: dict | None = None, cat: str = "event"
    ) -> None:
        """A marker on what runs on ``cpu`` now (on RCU's track when ``cpu`` is None)."""

    # RCU readers (desim.model.cpu)
    def read_lock(self, cpu: CPU) -> None:
        """The outermost ``rcu_read_lock`` on ``cpu``."""

    def read_unlock(self, cpu: CPU) -> None:
        """The matching outermost ``rcu_read_unlock``."""

    # spinlocks (desim.model.lock)
    def spin_begin(self, cpu: CPU, ev: Event) -> None:
        """A contended acquire: ``cpu`` spins until ``ev`` fires."""

    def handoff(
        self, lock: SpinLock, src: CPU, dst: CPU, ev: Event, t_wait: int, grant: int
    ) -> None:
        """``src`` releases ``lock`` to the waiter ``dst`` (waiting since ``t_wait``), which
        holds it from ``grant``."""

    # RCU (desim.model.rcu)
    def call_rcu(self, cpu: CPU) -> None:
        """A callback is queued on ``cpu``."""

    def softirq_begin(self, cpu: CPU) -> None:
        """``rcu_do_batch`` starts on ``cpu`` (the running process is its softirq)."""

    def softirq_end(self, cpu: CPU) -> None:
        """``rcu_do_batch`` ends on ``cpu``."""

    def callback(
        self, cpu: CPU, func: Callable, arg: object, t_queued: int, t0: int, cost: int
    ) -> None:
        """``func(cpu, arg)``, queued at ``t_queued``, runs in ``cpu``'s softirq over
        ``[t0, t0 + cost)``."""

    def gp(self, number: int, t0: int, t1: int) -> None:
        """Grace period ``number`` ran from ``t0`` to ``t1``."""

    def fqs(self) -> None:
        """A force-quiescent-state scan."""

    def qs(self, cpu: CPU) -> None:
        """``cpu`` reports a quiescent state."""

    def backlog(self, pending: int) -> None:
        """Callbacks pending machine-wide, sampled at a tick."""
