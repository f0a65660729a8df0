"""Cost profiles: what each operation costs on each machine, with the shape of its variation.

A profile maps ``costs.*`` fields to values as YAML writes them; ``desim.model.arch`` names each
arch's profile and ``Config`` fills the costs a config leaves out from it (``costs.profile:
arch``). Where the kernel's cost varies (a fault that finds the page allocator's per-CPU list
empty, an IPI to a CPU in a deep idle state, a fork of a large process) the cost is a lognormal
given by its median and a tail percentile; sums of many small steps (zeroing a page, zapping a
table's PTEs) are constants.

Sources, and what is an estimate:

* **Fault** (x86-64): a first-touch anonymous fault costs about 1.1 us including zeroing the
  data page (pft, one thread: 0.90 M faults/s, Punit Agrawal's per-VMA-lock v2 review, Feb 2023);
  ``perf bench mem mmap -p 4kb -f populate`` about 2.3 us per page (Ankur Arora, 2025). desim's
  fault is ``pte_walk`` + the ptl + ``fault_work``, so ``fault_work``'s median is 1.1 us less
  the walk and lock, 900 ns. Published fault latency has a p95 about 4 times its median, so
  ``fault_work`` is lognormal with p95 = 4 x median (the walk and lock add little to either).
* **Page allocation and zeroing**: page tables are allocated zeroed (``GFP_PGTABLE_USER``
  includes ``__GFP_ZERO``, include/asm-generic/pgalloc.h), so a 64 KiB page costs 16 times a
  4 KiB page's ``clear_page``; mmu_gather's batch pages are not zeroed
  (``tlb_next_batch``, mm/mmu_gather.c). ``page_alloc`` (the pcp-list fast path, with an
  occasional ``rmqueue_bulk`` refill under the zone lock) and ``page_zero`` (``clear_page``
  of 4 KiB: ~16 GB/s on x86 ``clear_page_erms``, ``dcbz`` on powerpc, ``DC ZVA`` on arm64,
  ``XC``/``MVCL`` on s390) are estimates: no published per-page figure separates them.
* **Teardown**: ``exit_mmap`` and ``munmap`` zap every PTE of the range (``zap_pte_range``:
  clear the PTE, drop the rmap and the page reference, free the pages in batches), so their
  cost grows with the tables mapped times the arch's PTEs per table (``zap_page`` each). The
  ~25 ns per page on x86-64 is an estimate (no published per-page figure); ``exit`` and
  ``munmap`` are what remains (task teardown, VMA unlink), also estimates.
* **fork, TLB flush, IPI**: estimates with a 3-4x p99, the fork+exec median from the spawn
  calibration (configs/calibration) as before.
* **arm64**: TLB invalidation is broadcast in hardware (``TLBI ... IS`` + ``DSB``, no IPI), so
  ``tlb_flush`` is cheaper and varies less; otherwise x86-64's figures. Estimates: no published
  arm64 fault-latency distribution was found.
* **powerpc**: 64 KiB base pages, so a fault zeroes 16 times more and ``fault_work`` is larger
  (1.1 us + 15 x the 4 KiB zero time would be ~3 us; the hash MMU adds the HPTE insertion on
  first access, ``__hash_page_64K``); radix flushes with broadcast ``tlbie``, hash with
  ``flush_hash_range`` per HPTE. Estimates: no published powerpc fault latency was found.
* **s390**: ``IPTE``/``IDTE`` invalidate across CPUs without IPIs; SIGP signalling is slower
  than an x86 IPI. Estimates: no published s390 fault latency was found, so its fault is
  x86-64's (4 KiB pages, as there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _lognormal(median: str, tail: str, q: str = "p95") -> dict[str, Any]:
    return {"dist": "lognormal", "median": median, q: tail}


X86_64: dict[str, Any] = {
    "fault_work": _lognormal("900ns", "3600ns"),
    "page_alloc": _lognormal("200ns", "1us", "p99"),
    "page_zero": "250ns",
    "tlb_flush": _lognormal("1500ns", "4500ns", "p99"),
    "ipi_latency": _lognormal("2us", "8us", "p99"),
    "fork": _lognormal("60us", "200us", "p99"),
    "exit": _lognormal("20us", "60us", "p99"),
    "munmap": _lognormal("3us", "10us", "p99"),
    "zap_page": "25ns",
}

ARM64: dict[str, Any] = {
    **X86_64,
    "tlb_flush": _lognormal("800ns", "2us", "p99"),
    "ipi_latency": _lognormal("3us", "10us", "p99"),
}

POWERPC_RADIX: dict[str, Any] = {
    **X86_64,
    "fault_work": _lognormal("2500ns", "10us"),
    "page_zero": "150ns",
    "tlb_flush": _lognormal("1us", "3us", "p99"),
    "zap_page": "30ns",
}

POWERPC_HASH: dict[str, Any] = {
    **POWERPC_RADIX,
    "fault_work": _lognormal("3us", "12us"),
    "tlb_flush": _lognormal("2500ns", "8us", "p99"),
}

S390: dict[str, Any] = {
    **X86_64,
    "page_zero": "200ns",
    "tlb_flush": _lognormal("1us", "3us", "p99"),
    "ipi_latency": _lognormal("5us", "20us", "p99"),
}

PROFILES: dict[str, dict[str, Any]] = {
    "x86-64": X86_64,
    "arm64": ARM64,
    "powerpc-hash": POWERPC_HASH,
    "powerpc-radix": POWERPC_RADIX,
    "s390": S390,
}

# The costs that may be distributions (``config.Cost``); the others are always ints.
VARIABLE = ("fault_work", "page_alloc", "tlb_flush", "ipi_latency", "fork", "exit", "munmap")


class Draws:
    """One zero-argument sampler per variable cost, in ns: ``m.draw.fault_work()``.

    A constant cost is a plain lambda, as cheap as reading it; a distribution draws from its own
    named stream (``costs.<field>``) in buffered blocks, one C-level call per draw
    (``desim.rng.buffered``). Each cost has its own stream, so a cost made random shifts no
    other draw of the run.
    """

    __slots__ = VARIABLE
    fault_work: Callable[[], int]
    page_alloc: Callable[[], int]
    tlb_flush: Callable[[], int]
    ipi_latency: Callable[[], int]
    fork: Callable[[], int]
    exit: Callable[[], int]
    munmap: Callable[[], int]

    def __init__(self, costs, streams) -> None:
        for name in VARIABLE:
            setattr(self, name, _sampler(getattr(costs, name), streams, f"costs.{name}"))


def per_cpu_fault_work(costs, streams, cpu_id: int) -> Callable[[], int]:
    """``fault_work`` for one CPU, from its own stream (``costs.fault_work.cpu<N>``).

    A fault may draw its work when its walk starts (the lookahead) or when it ends: with one
    stream per CPU the value a fault gets does not depend on what other CPUs draw in between,
    so the fault lookahead of ``desim.model.mm_ops`` may let other CPUs' events run during a
    walk and still give the run the slow path gives.
    """
    return _sampler(costs.fault_work, streams, f"costs.fault_work.cpu{cpu_id}")


def _sampler(v, streams, name: str) -> Callable[[], int]:
    if isinstance(v, int):
        return (lambda c: lambda: c)(v)
    return v.ns_sampler(streams.get(name))
