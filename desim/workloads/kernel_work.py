"""``kernel_work``: CPU-bound stretches in the kernel that hold off quiescent states.

On a non-preemptible kernel a CPU executing a long system call, or softirq-heavy work, passes
no quiescent state until it switches context or a tick finds it in user mode (or, past
``jiffies_to_sched_qs``, until its next ``cond_resched``); its ticks in kernel code do not help
unless ``rcu.tick_qs_in_kernel``. Between sections the task runs user code (``gaps: user``) or
sleeps (``gaps: idle``). This is what stretches grace
periods on busy machines (tens of ms on a loaded 64-CPU box, DOMAIN.md section 2). Part of each
section may run inside ``rcu_read_lock`` (``reader_fraction``), a long reader.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from desim.distributions import TimeDist
from desim.fields import MAX_CPUS, Int, Real
from desim.model.hooks import thread_kind
from desim.workloads import ELEMENTS
from desim.workloads.base import Element, Params

SYSCALL = thread_kind("syscall (non-preemptible)")


class KernelWorkParams(Params):
    section: TimeDist = Field(
        {"dist": "exponential", "mean": "2ms"},
        description="length of one kernel section",
        validate_default=True,
    )
    gap: TimeDist = Field(
        {"dist": "exponential", "mean": "1ms"},
        description="time off the CPU between sections",
        validate_default=True,
    )
    cpus: Int | None = Field(
        None, ge=1, le=MAX_CPUS, description="how many CPUs run sections (default: all)"
    )
    gaps: Literal["user", "idle"] = Field(
        "user",
        description="between sections the task runs user code (ticks, no extended QS) "
        "or sleeps, leaving the CPU idle",
    )
    reader_fraction: Real = Field(
        0.0, ge=0, le=1, description="share of each section spent inside an RCU reader"
    )

    @model_validator(mode="after")
    def _advances(self):
        # a loop of 0 ns gaps and 0 ns sections never lets simulated time move on
        if self.gap.mean() < 1 and self.section.mean() < 1:
            raise ValueError(
                "gap: gap and section cannot both average below 1ns "
                "(simulated time would stand still)"
            )
        return self


@ELEMENTS.register("kernel_work")
class KernelWork(Element[KernelWorkParams]):
    Params = KernelWorkParams
    summary = "long non-preemptible kernel sections (syscalls) that delay quiescent states"

    def start(self) -> None:
        n = self.p.cpus or len(self.m.cpus)
        for cpu in self.m.cpus[:n]:
            self.env.process(self._loop(cpu))

    def _loop(self, cpu):
        env = self.env
        section = self.p.section.ns_sampler(self.rng(f"section.cpu{cpu.id}"))
        gap = self.p.gap.ns_sampler(self.rng(f"gap.cpu{cpu.id}"))
        frac = self.p.reader_fraction
        task = SYSCALL()
        user = self.p.gaps == "user"
        if user:
            cpu.enter_user()
        while True:
            yield env.timeout(gap())
            if user:
                lost = cpu.user_time_lost()
                while lost:
                    yield env.timeout(lost)
                    lost = cpu.user_time_lost()
            ev = cpu.syscall(task) if user else cpu.acquire(task)
            if ev is not None:
                yield ev
            length = section()
            inside = round(length * frac)
            if inside:
                cpu.rcu_read_lock()
                yield cpu.compute(inside)
                cpu.rcu_read_unlock()
            yield cpu.compute(length - inside)
            if user:
                cpu.to_user()
            else:
                cpu.release()
