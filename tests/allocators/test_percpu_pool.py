"""percpu-pool: Jason's per-CPU fragment pool, driven step by step with the exact state asserted.

Geometry in most tests: 64 KiB pages, 4 KiB fragments (16 per page, as powerpc hash64k).
"""

import pytest
from conftest import make_machine, run_task, settle

from desim.config import ConfigError
from desim.model.memory import DETACHED, FREE, LIVE, PENDING
from desim.model.mmu_gather import MMUGather

K = 4096
PAGE = 64 * 1024


def pool_machine(cpus=2, page="64KiB", **params):
    return make_machine(
        {
            "machine.cpus": cpus,
            "machine.page_size": page,
            "allocator.name": "percpu-pool",
            "allocator.params": params,
        }
    )


def check(m):
    a = m.allocator
    assert a.account.as_tuple() == a.audit().as_tuple()
    assert a.account.held == m.pages.pages_held("pgtable") * m.config.machine.page_size
    assert a.account.stranded == a.account.internal == 0
    assert a.invariant_errors() == []
    assert m.safety.total == 0
    for p in a.pools:
        assert p.lock.holder is None


def alloc(m, cpu, mm):
    t = run_task(m, cpu, lambda c, _t: m.allocator.pte_alloc_one(c, mm))
    check(m)
    return t


def defer(m, cpu, mm, table):
    table.state = DETACHED  # retract_page_tables cleared the PMD
    run_task(m, cpu, lambda c, _t: m.allocator.pte_free_defer(c, mm, table))
    check(m)


def free_now(m, cpu, mm, table):
    run_task(m, cpu, lambda c, _t: m.allocator.pte_free(c, mm, table))
    check(m)


def run_until(m, pred, limit=200_000):
    """Step one event at a time until ``pred()`` with no pool lock held; returns rcu.completed."""
    locks = [p.lock for p in m.allocator.pools]
    for _ in range(limit):
        if pred() and all(lk.holder is None for lk in locks):
            return m.rcu.completed
        m.env.step()
    raise AssertionError("condition never reached")


def pool_locks(m):
    return m.lock_classes["percpu_pool"].acquisitions


def test_fragments_are_carved_in_address_order_from_a_per_cpu_page():
    m = pool_machine()
    mm = m.new_mm(8)
    a = m.allocator
    t = [alloc(m, 0, mm) for _ in range(3)]
    assert [x.offset for x in t] == [0, K, 2 * K]
    assert len({x.page for x in t}) == 1 and t[0].page.frag_refcount == 3
    assert a.pools[0].carve is t[0].page
    assert a.account.as_tuple() == (3 * K, 0, 0, PAGE - 3 * K, 0)
    assert pool_locks(m) == 4  # one each, plus the retake after allocating the page
    u = alloc(m, 1, mm)  # another CPU carves its own page
    assert u.page is not t[0].page and u.offset == 0 and u.page.data.home == 1
    assert m.pages.pages_held("pgtable") == 2
    # carving runs out after 16 fragments and the next allocation starts a new page
    more = [alloc(m, 0, mm) for _ in range(13)]
    assert more[-1].offset == 15 * K and a.pools[0].carve is None
    nxt = alloc(m, 0, mm)
    assert nxt.page is not t[0].page and nxt.offset == 0
    assert m.counters["percpu_pool.pages_carved"] == 3


def test_waterfall_one_call_rcu_and_reuse_after_exactly_the_right_gp():
    m = pool_machine()
    mm = m.new_mm(8)
    a = m.allocator
    pool = a.pools[0]
    t = [alloc(m, 0, mm) for _ in range(4)]
    gp0 = m.rcu.completed
    assert not m.rcu.gp_active
    defer(m, 0, mm, t[0])  # head idle: joins "this cycle", head queued
    assert pool.cur == [t[0]] and pool.nxt == [] and pool.armed
    assert t[0].state == PENDING and a.call_rcus == 1
    defer(m, 0, mm, t[1])  # head queued: "next cycle"
    defer(m, 0, mm, t[2])
    assert pool.cur == [t[0]] and pool.nxt == [t[1], t[2]]
    assert a.call_rcus == 1 and m.rcu.queued == 1  # one call_rcu however many frees
    assert a.account.as_tuple() == (K, 3 * K, 0, PAGE - 4 * K, 0)
    # nothing pending can be handed out: the next allocation carves a fresh fragment
    u = alloc(m, 0, mm)
    assert (u.page, u.offset) == (t[0].page, 4 * K)
    # first callback: after the first GP that began after t0's free
    done = run_until(m, lambda: t[0].state == FREE)
    assert done == gp0 + 1
    assert list(pool.free) == [t[0]] and pool.cur == [t[1], t[2]] and pool.nxt == []
    assert pool.armed and a.call_rcus == 2  # re-armed for what waits
    assert t[1].state == PENDING
    check(m)
    # reuse: t0's fragment is the next one handed out
    r = alloc(m, 0, mm)
    assert (r.page, r.offset) == (t[0].page, 0) and r is not t[0] and r.state == LIVE
    assert m.counters["percpu_pool.reused"] == 1
    # the second cycle frees t1 and t2 one GP later; nothing waits, so the head is not re-armed
    done = run_until(m, lambda: t[2].state == FREE)
    assert done == gp0 + 2
    assert list(pool.free) == [t[1], t[2]] and not pool.armed and pool.cur == pool.nxt == []
    settle(m)
    assert a.call_rcus == 2
    check(m)
    h = m.latency["free_to_reuse"]
    assert h.n == 3 and h.lo > 0
    # LIFO: the most recently freed fragment comes first
    assert alloc(m, 0, mm).offset == 2 * K


def test_one_call_rcu_per_cpu_per_cycle_and_pages_return_when_all_free():
    m = pool_machine(cpus=3)
    mm = m.new_mm(32)
    a = m.allocator
    t0 = [alloc(m, 0, mm) for _ in range(10)]
    t1 = [alloc(m, 1, mm) for _ in range(5)]
    for t in t0:
        defer(m, 0, mm, t)
    for t in t1:
        defer(m, 1, mm, t)
    assert a.call_rcus == 2 and m.rcu.queued == 2
    assert a.pools[2].armed is False
    settle(m)
    # per CPU: the first callback frees the first fragment and re-arms for the rest
    assert a.call_rcus == 4 and m.counters["percpu_pool.call_rcu"] == 4
    assert all(t.state == FREE for t in t0 + t1)
    # each page's carved fragments are all free: both pages went back to the page allocator
    assert m.counters["percpu_pool.pages_returned"] == 2
    assert m.pages.pages_held("pgtable") == 0 and a.account.held == 0
    assert not a.pools[0].free and a.pools[0].carve is None
    check(m)


def test_page_returns_when_its_last_fragment_is_freed():
    m = pool_machine()
    mm = m.new_mm(4)
    a = m.allocator
    x, y = alloc(m, 0, mm), alloc(m, 0, mm)
    free_now(m, 0, mm, x)  # never exposed: straight to the free list, no RCU
    assert list(a.pools[0].free) == [x] and x.page.frag_refcount == 1
    assert a.account.as_tuple() == (K, 0, 0, PAGE - K, 0) and a.call_rcus == 0
    free_now(m, 0, mm, y)
    assert m.pages.pages_held("pgtable") == 0 and m.counters["percpu_pool.pages_returned"] == 1
    assert a.pools[0].free == {} and a.pools[0].carve is None and a.account.held == 0


def test_keep_empty_keeps_a_wholly_free_page_and_reuses_it():
    m = pool_machine(keep_empty=1)
    mm = m.new_mm(4)
    a = m.allocator
    x, y = alloc(m, 0, mm), alloc(m, 0, mm)
    free_now(m, 0, mm, x)
    free_now(m, 0, mm, y)
    assert m.pages.pages_held("pgtable") == 1 and a.pools[0].empty == 1
    assert a.account.as_tuple() == (0, 0, 0, PAGE, 0)
    z = alloc(m, 0, mm)
    assert (z.page, z.offset) == (y.page, K) and a.pools[0].empty == 0
    assert m.counters["percpu_pool.pages_carved"] == 1


def test_a_fragment_freed_on_another_cpu_returns_to_its_home_pool():
    m = pool_machine()
    mm = m.new_mm(4)
    a = m.allocator
    x, keep = alloc(m, 0, mm), alloc(m, 0, mm)
    locks0 = pool_locks(m)
    defer(m, 1, mm, x)  # freed on cpu1: cpu1's waterfall and rcu_head
    assert a.pools[1].cur == [x] and a.pools[1].armed and not a.pools[0].armed
    settle(m)
    # cpu1's callback took cpu1's lock (splice) then cpu0's (the home free list)
    assert pool_locks(m) == locks0 + 1 + 2
    assert list(a.pools[0].free) == [x] and a.pools[1].free == {}
    check(m)
    assert alloc(m, 1, mm).page is not x.page  # cpu1 cannot take cpu0's fragment
    r = alloc(m, 0, mm)
    assert (r.page, r.offset) == (x.page, 0) and keep.state == LIVE


def test_mmu_gather_path_needs_no_second_grace_period():
    m = pool_machine()
    mm = m.new_mm(4)
    a = m.allocator
    x, y = alloc(m, 0, mm), alloc(m, 0, mm)
    gp0 = m.rcu.completed

    def unmap(cpu, _task):
        tlb = MMUGather(m, cpu, mm)
        x.state = DETACHED
        yield from a.pte_free_tlb(cpu, tlb, x)
        yield from tlb.finish()

    run_task(m, 0, unmap)
    check(m)
    assert x.state == PENDING and a.account.pending == K and not a.pools[0].armed
    done = run_until(m, lambda: x.state == FREE)
    assert done == gp0 + 1 and a.call_rcus == 0  # the gather's GP was enough
    assert list(a.pools[0].free) == [x]
    settle(m)
    check(m)
    assert alloc(m, 0, mm).offset == 0 and y.state == LIVE


def test_the_cookie_check_catches_a_waterfall_that_skips_a_cycle():
    """A free arriving after the queued head's GP began must wait a cycle: force the bug."""
    m = pool_machine()
    mm = m.new_mm(4)
    a = m.allocator
    x, y = alloc(m, 0, mm), alloc(m, 0, mm)
    defer(m, 0, mm, x)
    run_until(m, lambda: m.rcu.gp_active)
    y.state = DETACHED
    run_task(m, 0, lambda c, _t: a.pte_free_defer(c, mm, y))
    pool = a.pools[0]
    assert pool.nxt == [y]
    pool.cur.append(pool.nxt.pop())  # the bug: y rides the GP already under way
    settle(m)
    assert m.safety.counts["invariant"] == 1
    assert "before the grace period" in m.safety.records[0]["message"]


def test_one_fragment_per_page_at_4k_geometry():
    m = pool_machine(page="4KiB")
    mm = m.new_mm(4)
    x = alloc(m, 0, mm)
    y = alloc(m, 0, mm)
    assert x.page is not y.page and x.size == K
    defer(m, 0, mm, x)
    settle(m)
    assert not x.page.allocated and m.pages.pages_held("pgtable") == 1
    check(m)


@pytest.mark.parametrize("size", [3000, 32, 128 * 1024])
def test_bad_fragment_size_is_refused_naming_the_field(size):
    with pytest.raises((ConfigError, ValueError), match="fragment_size"):
        pool_machine(fragment_size=size)


def test_radix_geometry_256_fragments_per_page():
    m = pool_machine(fragment_size=256)
    mm = m.new_mm(300)
    t = [alloc(m, 0, mm) for _ in range(257)]
    assert t[255].offset == 255 * 256 and t[256].page is not t[0].page
    assert m.allocator.account.as_tuple() == (257 * 256, 0, 0, 2 * PAGE - 257 * 256, 0)
