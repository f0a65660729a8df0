"""Costs with a shape and a platform: profiles fill what a config leaves out, page tables pay
for zeroing by page size, teardown pays per PTE mapped, and variable costs draw from their own
buffered streams."""

import math

import numpy as np
import pytest
from conftest import make_machine, run_task

from desim.config import validate
from desim.distributions import Z95, Lognormal
from desim.model import mm_ops
from desim.model.arch import ARCHES
from desim.model.costs import PROFILES, VARIABLE


def test_an_arch_takes_its_profile_and_the_config_wins():
    c = validate(
        {"machine": {"arch": "powerpc-hash", "page_size": "64KiB"}, "costs": {"munmap": "4us"}}
    )
    assert c.costs.fault_work == Lognormal(median=3000, p95=12000)
    assert c.costs.page_zero == 150 and c.costs.zap_page == 30
    assert c.costs.munmap == 4000  # given: not the profile's
    assert c.costs.pte_walk == 150  # in no profile: the flat default
    assert validate(c.to_dict()) == c  # the saved config loads back the same


def test_flat_and_named_profiles():
    flat = validate({"costs": {"profile": "flat"}}).costs
    assert (flat.fault_work, flat.page_alloc, flat.page_zero, flat.zap_page) == (700, 250, 0, 0)
    named = validate({"machine": {"arch": "s390"}, "costs": {"profile": "arm64"}}).costs
    assert named.tlb_flush == Lognormal(median=800, p99=2000)


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_every_arch_has_a_profile_whose_costs_all_vary_where_the_kernel_does(arch):
    a = ARCHES[arch]
    c = validate({"machine": {"arch": arch}}).costs
    assert a.cost_profile in PROFILES
    for name in ("fault_work", "page_alloc", "tlb_flush", "ipi_latency", "fork", "exit", "munmap"):
        assert isinstance(getattr(c, name), Lognormal), name


def test_a_constant_cost_is_a_plain_lambda_and_a_distribution_its_own_stream():
    m = make_machine({"costs.fault_work": {"dist": "lognormal", "median": "1us", "p95": "4us"}})
    assert m.draw.tlb_flush() == 1500 and type(m.draw.tlb_flush()) is int
    assert m.draw.tlb_flush.__name__ == "<lambda>"
    xs = np.array([m.draw.fault_work() for _ in range(100_000)])
    assert xs.dtype == np.int64
    assert np.median(xs) == pytest.approx(1000, rel=0.02)
    assert np.quantile(xs, 0.95) == pytest.approx(4000, rel=0.03)
    # making page_alloc random shifts no fault_work draw
    m2 = make_machine(
        {
            "costs.fault_work": {"dist": "lognormal", "median": "1us", "p95": "4us"},
            "costs.page_alloc": {"dist": "exponential", "mean": "300ns"},
        }
    )
    m3 = make_machine({"costs.fault_work": {"dist": "lognormal", "median": "1us", "p95": "4us"}})
    m2.draw.page_alloc()
    assert [m2.draw.fault_work() for _ in range(10)] == [m3.draw.fault_work() for _ in range(10)]


def test_lognormal_from_p95():
    d = Lognormal(median=100, p95=400)
    assert d.sigma == pytest.approx(math.log(4) / Z95)


@pytest.mark.parametrize("page_size,pages", [("4KiB", 1), ("64KiB", 16)])
def test_a_page_table_pays_clear_page_for_the_whole_page(page_size, pages):
    m = make_machine(
        {"machine.page_size": page_size, "costs.page_alloc": 200, "costs.page_zero": 100}
    )
    cpu = m.cpus[0]
    before = cpu.debt
    m.pages.alloc(cpu, "tlb_batch")  # batch pages are not zeroed
    assert cpu.debt - before == 200
    before = cpu.debt
    m.pages.alloc(cpu, "pgtable", zero=True)
    assert cpu.debt - before == 200 + 100 * pages


@pytest.mark.parametrize(
    "arch,page_size,ptes",
    [
        ("x86-64", "4KiB", 512),
        ("arm64", "64KiB", 8192),
        ("powerpc-hash", "64KiB", 256),
        ("powerpc-radix", "64KiB", 32),
        ("s390", "4KiB", 256),
    ],
)
def test_a_table_zaps_the_ptes_it_holds(arch, page_size, ptes):
    m = make_machine({"machine.arch": arch, "machine.page_size": page_size, "costs.zap_page": 7})
    assert m.zap_table == 7 * ptes


@pytest.mark.parametrize("tables", [1, 4])
def test_exit_grows_with_the_tables_mapped(tables):
    def exit_time(zap):
        m = make_machine({"costs.zap_page": zap})
        mm = m.new_mm(tables)
        for _ in range(tables):
            run_task(m, 0, lambda cpu, t: mm_ops.populate(m, cpu, t, mm, False))
        t0 = m.env.now
        run_task(m, 0, lambda cpu, t: mm_ops.exit_mmap(m, cpu, t, mm))
        return m.env.now - t0

    assert exit_time(10) - exit_time(0) == 10 * 512 * tables


def test_every_variable_cost_is_drawn_from_the_machine():
    m = make_machine()
    assert all(callable(getattr(m.draw, n)) for n in VARIABLE)
