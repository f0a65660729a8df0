"""The machines desim models: how each architecture frees gathered page tables, its default HZ.

``machine.arch`` names one; left out, a config takes its allocator's own architecture
(``Allocator.default_arch``). What differs between them here:

* **How mmu_gather frees tables** (``tlb_table_free``). With ``MMU_GATHER_RCU_TABLE_FREE``
  (arm64, powerpc, s390, sparc64, and x86 kernels running as paravirt guests: Xen PV, Hyper-V,
  KVM with PV TLB flush) ``tlb_remove_table`` collects tables in a batch page freed by one
  ``call_rcu`` after the TLB flush (mm/mmu_gather.c): ``"rcu"``. Bare-metal x86 in v6.6-6.7
  routes ``tlb_remove_table`` to ``native_tlb_remove_table`` (arch/x86/kernel/paravirt.c),
  which is ``tlb_remove_page``: the table page joins the gather's page list and is freed by
  ``tlb_finish_mmu`` once the flush IPIs have been answered, with no grace period: ``"flush"``.
  Lockless walkers are safe there because GUP-fast walks with IRQs off (the IPI waits for it)
  and faults cannot walk a range munmap or exit holds under mmap_lock for write; only
  ``pte_free_defer`` (retraction, no mmap_lock) needs RCU on bare metal.
* **Whether a PMD-mapped THP keeps a PTE table** (``deposits_pgtable``): after a collapse the
  range is mapped by a huge PMD and a fault there allocates no PTE table, except where
  ``arch_needs_pgtable_deposit()`` is true (powerpc book3s64 with the hash MMU: the fault
  preallocates a table and ``do_set_pmd`` deposits it beside the huge PMD, mm/memory.c).
* **Default HZ**: x86 distributions build 250 (Debian, Ubuntu generic) or 1000 (Fedora, RHEL
  ``CONFIG_HZ_1000``); ``arch/arm64/configs/defconfig`` 250; ``arch/powerpc/configs/
  ppc64_defconfig`` and ``arch/s390/configs/defconfig`` 100; ``arch/sparc/configs/
  sparc64_defconfig`` 100.
* **Costs** (``cost_profile``, desim.model.costs): what each operation costs, with its spread;
  the x86-64 guest and sparc64 take x86-64's (no source of their own).
* **PTEs per table** (``ptes_per_table``, what a table's teardown zaps): ``PAGE_SIZE / 8`` on
  x86-64, arm64 and sparc64 (one page of 8-byte PTEs); powerpc's tables are fragments of a 64 KiB
  page: 256 PTEs with hash (``H_PTE_INDEX_SIZE`` 8, asm/book3s/64/hash-64k.h), 32 with radix
  (``RADIX_PTE_INDEX_SIZE`` 5, radix-64k.h); s390's 2 KiB tables hold 256 (``PTRS_PER_PTE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TableFree = Literal["rcu", "flush"]


@dataclass(frozen=True)
class Arch:
    name: str
    tlb_table_free: TableFree
    hz: int
    about: str
    deposits_pgtable: bool = False
    cost_profile: str = "x86-64"
    ptes_per_table: int | None = None  # None: one page of 8-byte PTEs

    def ptes(self, page_size: int) -> int:
        """PTEs one table holds on this machine with ``page_size`` pages."""
        return self.ptes_per_table or page_size // 8


ARCHES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch(
            "x86-64",
            "flush",
            1000,
            "bare-metal x86-64 (native_tlb_remove_table: no grace period "
            "for gathered tables); HZ 1000 as Fedora/RHEL build it, 250 on Debian/Ubuntu",
        ),
        Arch(
            "x86-64-guest",
            "rcu",
            1000,
            "x86-64 paravirt guest (Xen PV, Hyper-V, KVM PV TLB "
            "flush): gathered tables freed by RCU batch",
        ),
        Arch(
            "arm64",
            "rcu",
            250,
            "arm64 (MMU_GATHER_RCU_TABLE_FREE); defconfig HZ 250",
            cost_profile="arm64",
        ),
        Arch(
            "powerpc-hash",
            "rcu",
            100,
            "powerpc book3s64, hash MMU, 64 KiB pages; ppc64_defconfig HZ 100",
            deposits_pgtable=True,
            cost_profile="powerpc-hash",
            ptes_per_table=256,
        ),
        Arch(
            "powerpc-radix",
            "rcu",
            100,
            "powerpc book3s64, radix MMU (POWER9+), 64 KiB pages; ppc64_defconfig HZ 100",
            cost_profile="powerpc-radix",
            ptes_per_table=32,
        ),
        Arch(
            "s390",
            "rcu",
            100,
            "s390 LPAR or z/VM guest; defconfig HZ 100",
            cost_profile="s390",
            ptes_per_table=256,
        ),
        Arch("sparc64", "rcu", 100, "sparc64, 8 KiB pages; sparc64_defconfig HZ 100"),
    )
}
ARCH_NAMES = tuple(ARCHES)
