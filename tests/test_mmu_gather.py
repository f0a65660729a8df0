"""How mmu_gather frees tables on each machine (desim.model.arch, desim.model.mmu_gather)."""

from __future__ import annotations

import pytest
from conftest import make_machine, run_task, settle

from desim.config import ConfigError, validate
from desim.model.memory import DETACHED, FREE
from desim.model.mmu_gather import MMUGather


def _munmap_one(arch: str):
    m = make_machine({"machine.arch": arch})
    mm = m.new_mm(4)
    a = m.allocator

    def body(cpu, task):
        t = yield from a.pte_alloc_one(cpu, mm)
        t.state = DETACHED
        tlb = MMUGather(m, cpu, mm)
        yield from a.pte_free_tlb(cpu, tlb, t)
        yield from tlb.finish()
        return t

    return m, run_task(m, 0, body)


def test_bare_metal_x86_frees_gathered_tables_after_the_flush_without_a_grace_period():
    m, t = _munmap_one("x86-64")
    assert m.config.machine.tlb_table_free == "flush"
    assert t.state == FREE and not t.page.allocated  # gone when munmap returns
    assert m.rcu.queued == 0 and m.pages.pages_held("tlb_batch") == 0
    assert m.counters["tlb.flush_frees"] == 1
    assert m.allocator.account.peak_tlb_batch == 0


@pytest.mark.parametrize("arch", ["x86-64-guest", "arm64"])
def test_rcu_table_free_machines_hold_the_table_and_a_batch_page_for_a_grace_period(arch):
    m, t = _munmap_one(arch)
    assert m.config.machine.tlb_table_free == "rcu"
    assert t.page.allocated and m.rcu.queued == 1
    acc = m.allocator.account
    assert acc.tlb_batch == 4096 and acc.pending == 4096
    settle(m)
    assert not t.page.allocated and acc.tlb_batch == 0 and acc.peak_tlb_batch == 4096
    assert acc.peak_total == 2 * 4096  # the table and its batch page


def test_flush_waits_for_a_cpu_walking_with_irqs_off():
    m = make_machine({"machine.arch": "x86-64"})
    mm = m.new_mm(4)
    a = m.allocator
    t = run_task(m, 0, lambda cpu, task: a.pte_alloc_one(cpu, mm))
    m.local_irq_disable(m.cpus[1])  # GUP-fast on cpu1

    def enable():
        yield m.env.timeout(50_000)
        m.local_irq_enable(m.cpus[1])

    m.env.process(enable())

    def unmap(cpu, task):
        t.state = DETACHED
        tlb = MMUGather(m, cpu, mm)
        yield from a.pte_free_tlb(cpu, tlb, t)
        yield from tlb.finish()

    run_task(m, 0, unmap)
    assert m.env.now >= 50_000 and not t.page.allocated
    assert m.counters["ipi.waited_irqs_off"] == 1


def test_arch_defaults_follow_the_allocator_and_are_written_out():
    cfg = validate({"allocator": {"name": "s390"}})
    assert (cfg.machine.arch, cfg.machine.tlb_table_free, cfg.machine.hz) == ("s390", "rcu", 100)
    cfg = validate(
        {
            "allocator": {"name": "powerpc", "params": {"geometry": "radix64k"}},
            "machine": {"page_size": "64KiB"},
        }
    )
    assert cfg.machine.arch == "powerpc-radix"
    cfg = validate({"machine": {"arch": "x86-64", "tlb_table_free": "rcu", "hz": 250}})
    assert (cfg.machine.tlb_table_free, cfg.machine.hz) == ("rcu", 250)
    assert validate(cfg.to_dict()) == cfg


def test_an_unknown_arch_is_named_with_the_allowed_values():
    with pytest.raises(ConfigError, match=r"machine\.arch: arch must be one of x86-64, "):
        validate({"machine": {"arch": "vax"}})
