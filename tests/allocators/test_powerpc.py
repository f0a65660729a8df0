"""powerpc fragment allocators (v6.6, Hugh's v2 refcount, Jason's always-RCU): exact scenarios.

Each scenario drives the kernel hooks one at a time on a 2-CPU machine with no workload and
checks, after every step, which fragment comes next, the page's ``pt_frag_refcount``, when a
page returns to the page allocator and whether RCU was involved. ``check`` asserts after every
step that the kept memory split equals the one recomputed from the pages.
"""

from pathlib import Path

import pytest
from conftest import check, make_machine, run_task, run_together, settle, split
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from steps import alloc, defer, gather, pte_free

from desim.config import ConfigError
from desim.model.machine import Machine
from desim.model.memory import DETACHED, FREE, LIVE, PENDING, PG_ACTIVE

KB = 1024
F = 4 * KB  # hash64k fragment
PAGE = 64 * KB


def machine(name="powerpc", geometry="hash64k", page_size="64KiB", cpus=2) -> Machine:
    return make_machine(
        {
            "machine.cpus": cpus,
            "machine.page_size": page_size,
            "allocator.name": name,
            "allocator.params.geometry": geometry,
        }
    )


def teardown(m, mm, cpu=0, violations=None):
    run_task(m, cpu, lambda c, task: m.allocator.mm_teardown(c, mm))
    check(m, violations)


def run_until_invoked(m, n):
    """Run until ``n`` more RCU callbacks have been invoked."""
    target = m.rcu.invoked + n
    while m.rcu.invoked < target:
        m.env.step()
    check(m)


def settled(m):
    settle(m)
    check(m)


# -- geometry ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("geometry", "page", "frag", "nr"),
    [
        ("hash64k", "64KiB", 4096, 16),
        ("radix64k", "64KiB", 256, 256),
        ("8xx16k", "16KiB", 4096, 4),
    ],
)
def test_geometry_presets_hand_out_the_page_in_order_then_a_new_page(geometry, page, frag, nr):
    m = machine(geometry=geometry, page_size=page)
    mm = m.new_mm(1000)
    tables = [alloc(m, mm) for _ in range(nr)]
    assert [t.offset for t in tables] == [i * frag for i in range(nr)]
    assert len({t.page for t in tables}) == 1 and m.pages.allocated == 1
    assert mm.arch["pte_frag"] is None  # the last fragment went: the cache is empty
    assert split(m) == {"live": nr * frag}
    nxt = alloc(m, mm)
    assert nxt.page is not tables[0].page and nxt.offset == 0 and m.pages.allocated == 2


@pytest.mark.parametrize("name", ["powerpc", "powerpc-refcount", "powerpc-always-rcu"])
def test_page_size_must_match_the_geometry(name):
    with pytest.raises(
        ValueError, match=r"machine.page_size: .*hash64k needs 64KiB pages, got 4KiB"
    ):
        machine(name=name, page_size="4KiB")
    with pytest.raises(
        ValueError, match=r"machine.page_size: .*8xx16k needs 16KiB pages, got 64KiB"
    ):
        machine(name=name, geometry="8xx16k")
    with pytest.raises(
        ConfigError,
        match="allocator.params.geometry: Input should be .hash64k., .radix64k. or .8xx16k.",
    ):
        machine(name=name, geometry="radix4k")


# -- v6.6 as merged --------------------------------------------------------------------------


def test_v66_fragments_are_never_reused_and_an_unmarked_page_frees_at_once():
    m = machine()
    mm = m.new_mm(1000)
    t0 = alloc(m, mm)
    page = t0.page
    assert page.frag_refcount == 16 and mm.arch["pte_frag"] is page
    assert split(m) == {"live": F, "spare": 15 * F}
    t1 = alloc(m, mm)
    assert t1.offset == F and page.frag_refcount == 16
    assert split(m) == {"live": 2 * F, "spare": 14 * F}

    pte_free(m, mm, t0)  # a hole at offset 0
    assert t0.state == FREE and page.frag_refcount == 15
    assert split(m) == {"live": F, "stranded": F, "spare": 14 * F}
    t2 = alloc(m, mm)
    assert t2.offset == 2 * F  # not the freed offset 0
    pte_free(m, mm, t1)
    pte_free(m, mm, t2)
    assert page.frag_refcount == 13 and m.pages.freed == 0
    assert split(m) == {"stranded": 3 * F, "spare": 13 * F}

    teardown(m, mm)  # drops the 13 untouched: refcount 0
    assert m.counters["powerpc.teardown_dropped"] == 13
    assert m.pages.freed == 1 and not page.allocated  # at once: no PG_active, no RCU
    assert m.rcu.queued == 0 and split(m) == {}


def test_v66_defer_marks_the_page_and_only_the_final_free_goes_through_rcu():
    m = machine()
    mm = m.new_mm(1000)
    ts = [alloc(m, mm) for _ in range(16)]
    page = ts[0].page
    defer(m, mm, ts[3])
    assert page.flags & PG_ACTIVE and ts[3].state == FREE and page.frag_refcount == 15
    assert m.rcu.queued == 0 and not page.rcu_queued  # not the last fragment: nothing queued
    assert split(m) == {"live": 15 * F, "stranded": F}
    for t in ts[:3] + ts[4:15]:
        pte_free(m, mm, t)
    assert page.frag_refcount == 1 and m.rcu.queued == 0
    pte_free(m, mm, ts[15])  # last one of a marked page
    assert page.frag_refcount == 0 and page.rcu_queued and m.rcu.queued == 1
    assert not page.flags & PG_ACTIVE  # test-and-clear
    assert page.allocated and split(m) == {"pending": PAGE}
    settled(m)
    assert not page.allocated and m.pages.freed == 1 and split(m) == {}
    assert m.latency["free_to_reuse"].n == 16  # every fragment freed returned with it


def test_v66_mmu_gather_frees_after_the_batch_gp_and_marked_pages_pay_a_second():
    m = machine()
    mm = m.new_mm(1000)
    ts = [alloc(m, mm) for _ in range(16)]
    page = ts[0].page
    gather(m, mm, ts[:8])
    assert [t.state for t in ts[:8]] == [PENDING] * 8 and page.frag_refcount == 16
    assert split(m) == {"live": 8 * F, "pending": 8 * F}
    assert m.rcu.queued == 1  # one call_rcu for the whole batch
    settled(m)
    assert [t.state for t in ts[:8]] == [FREE] * 8 and page.frag_refcount == 8
    assert split(m) == {"live": 8 * F, "stranded": 8 * F}

    defer(m, mm, ts[8])
    gather(m, mm, ts[9:])
    run_until_invoked(m, 1)  # the batch callback: refcount 0
    assert page.frag_refcount == 0 and page.rcu_queued and page.allocated
    assert split(m) == {"pending": PAGE} and m.rcu.queued == 3
    settled(m)
    assert not page.allocated and split(m) == {}


def test_v66_gather_of_an_unmarked_page_frees_it_in_the_batch_callback():
    m = machine()
    mm = m.new_mm(1000)
    ts = [alloc(m, mm) for _ in range(16)]
    gather(m, mm, ts)
    run_until_invoked(m, 1)
    assert not ts[0].page.allocated and m.rcu.queued == 1 and split(m) == {}


def test_v66_teardown_leaves_the_page_to_the_last_gathered_fragment():
    m = machine()
    mm = m.new_mm(1000)
    ts = [alloc(m, mm) for _ in range(3)]
    page = ts[0].page
    gather(m, mm, ts)  # exit_mmap: tables to the batch ...
    teardown(m, mm)  # ... then the cache is destroyed
    assert mm.arch.get("pte_frag") is None and page.frag_refcount == 3
    assert split(m) == {"pending": 3 * F, "stranded": 13 * F}
    settled(m)
    assert not page.allocated and m.pages.pages_held("pgtable") == 0 and split(m) == {}


def test_v66_teardown_frees_a_marked_page_at_once_and_counts_it():
    m = machine()
    mm = m.new_mm(1000)
    t0, t1 = alloc(m, mm), alloc(m, mm)
    defer(m, mm, t0)
    pte_free(m, mm, t1)
    assert t0.page.frag_refcount == 14
    teardown(m, mm, violations=1)  # pte_frag_destroy ignores PG_active
    assert not t0.page.allocated and m.rcu.queued == 0
    assert m.counters["powerpc.teardown_free_active"] == 1
    # free_pages_prepare() sees PG_active: "BUG: Bad page state", once, naming the page
    assert m.safety.counts["bad_page_state"] == 1 and m.safety.total == 1
    assert repr(t0.page) in m.safety.records[0]["objects"]


def _concurrently(m, *bodies):
    """Run ``(cpu_id, body_fn)`` tasks from the same instant; return their results in order."""
    out = run_together(m, *bodies)
    check(m)
    return out


@pytest.mark.parametrize("name", ["powerpc", "powerpc-refcount", "powerpc-always-rcu"])
def test_two_cpus_allocating_at_once_strand_the_losers_page(name):
    m = machine(name)
    mm = m.new_mm(1000)
    a = m.allocator
    w, lose = _concurrently(
        m, (0, lambda c, t: a.pte_alloc_one(c, mm)), (1, lambda c, t: a.pte_alloc_one(c, mm))
    )
    assert m.counters["powerpc.alloc_race"] == 1 and m.pages.allocated == 2
    assert w.page is not lose.page and w.offset == lose.offset == 0
    assert mm.arch["pte_frag"] is w.page and w.page.frag_refcount == 16
    assert lose.page.frag_refcount == 1  # serves its one fragment only
    assert split(m) == {"live": 2 * F, "spare": 15 * F, "stranded": 15 * F}
    assert alloc(m, mm).page is w.page  # the next comes from the winner
    pte_free(m, mm, lose)  # its only reference
    if name == "powerpc-always-rcu":
        assert lose.page.rcu_queued and split(m) == {
            "live": 2 * F,
            "spare": 14 * F,
            "pending": PAGE,
        }
        settled(m)
    assert not lose.page.allocated
    assert split(m) == {"live": 2 * F, "spare": 14 * F}


def test_no_race_in_different_mms_or_one_after_the_other():
    m = machine()
    a = m.allocator
    mm1, mm2 = m.new_mm(1000), m.new_mm(1000)
    x, y = _concurrently(
        m, (0, lambda c, t: a.pte_alloc_one(c, mm1)), (1, lambda c, t: a.pte_alloc_one(c, mm2))
    )
    assert x.page is not y.page and m.counters["powerpc.alloc_race"] == 0
    assert split(m) == {"live": 2 * F, "spare": 30 * F}
    mm3 = m.new_mm(1000)
    assert alloc(m, mm3, 0).offset == 0 and alloc(m, mm3, 1).offset == F
    assert m.counters["powerpc.alloc_race"] == 0


def test_page_table_lock_is_taken_per_allocation():
    m = machine()
    mm = m.new_mm(1000)
    st = m.lock_classes["page_table_lock"]
    alloc(m, mm)  # miss: lookup + install
    assert st.acquisitions == 2
    alloc(m, mm)  # hit: lookup only
    assert st.acquisitions == 3


# -- Hugh's v2: deferrals in the refcount ----------------------------------------------------

D = 0x10000


def test_refcount_v2_first_deferral_queues_the_rcu_head_later_ones_join_and_re_defer():
    m = machine("powerpc-refcount")
    mm = m.new_mm(1000)
    ts = [alloc(m, mm) for _ in range(4)]
    page = ts[0].page
    defer(m, mm, ts[0])
    assert page.frag_refcount == 16 + D - 1 and page.rcu_queued and m.rcu.queued == 1
    assert ts[0].state == PENDING  # still counted: not a hole yet
    assert split(m) == {"live": 3 * F, "pending": F, "spare": 12 * F}
    defer(m, mm, ts[1])
    defer(m, mm, ts[2])
    assert page.frag_refcount == 16 + 3 * (D - 1) and m.rcu.queued == 1
    assert m.counters["powerpc.defer_joined"] == 2
    assert split(m) == {"live": F, "pending": 3 * F, "spare": 12 * F}

    run_until_invoked(m, 1)  # callback: two arrived during the GP
    assert m.counters["powerpc.redefer"] == 1 and page.rcu_queued and m.rcu.queued == 2
    assert ts[0].state == FREE and ts[1].state == ts[2].state == PENDING
    assert page.frag_refcount == D + 13  # one deferral left for both
    assert split(m) == {"live": F, "pending": 2 * F, "stranded": F, "spare": 12 * F}

    run_until_invoked(m, 1)  # the one extra GP: both freed
    assert ts[1].state == ts[2].state == FREE and not page.rcu_queued
    assert page.frag_refcount == 13 and m.rcu.queued == 2
    assert split(m) == {"live": F, "stranded": 3 * F, "spare": 12 * F}

    teardown(m, mm)
    pte_free(m, mm, ts[3])
    assert not page.allocated and m.rcu.queued == 2  # the final free was immediate


def test_refcount_v2_single_deferral_frees_in_its_callback_without_re_deferring():
    m = machine("powerpc-refcount")
    mm = m.new_mm(1000)
    t0, t1 = alloc(m, mm), alloc(m, mm)
    teardown(m, mm)
    pte_free(m, mm, t1)
    defer(m, mm, t0)
    assert t0.page.frag_refcount == D and split(m) == {"pending": F, "stranded": 15 * F}
    run_until_invoked(m, 1)
    assert not t0.page.allocated and m.counters["powerpc.redefer"] == 0 and split(m) == {}


def test_refcount_v2_deferral_after_the_callback_starts_a_new_round():
    m = machine("powerpc-refcount")
    mm = m.new_mm(1000)
    ts = [alloc(m, mm) for _ in range(3)]
    defer(m, mm, ts[0])
    defer(m, mm, ts[1])
    run_until_invoked(m, 1)  # re-deferred for ts[1]
    defer(m, mm, ts[2])  # arrives during the second GP
    assert ts[0].page.frag_refcount == 2 * D + 13
    run_until_invoked(m, 1)  # frees ts[1], re-defers for ts[2]
    assert ts[1].state == FREE and ts[2].state == PENDING and m.counters["powerpc.redefer"] == 2
    settled(m)
    assert ts[2].state == FREE and ts[0].page.frag_refcount == 13 and m.rcu.queued == 3


def test_refcount_v2_mmu_gather_pays_only_the_batch_gp():
    m = machine("powerpc-refcount")
    mm = m.new_mm(1000)
    ts = [alloc(m, mm) for _ in range(16)]
    gather(m, mm, ts)
    run_until_invoked(m, 1)
    assert not ts[0].page.allocated and m.rcu.queued == 1


# -- Jason's always-RCU ----------------------------------------------------------------------


def test_always_rcu_mmu_gather_pays_two_grace_periods():
    m = machine("powerpc-always-rcu")
    mm = m.new_mm(1000)
    ts = [alloc(m, mm) for _ in range(16)]
    page = ts[0].page
    gps0 = m.rcu.completed
    gather(m, mm, ts)
    run_until_invoked(m, 1)  # batch GP over: fragments freed ...
    assert all(t.state == FREE for t in ts) and page.frag_refcount == 0
    assert page.allocated and page.rcu_queued and split(m) == {"pending": PAGE}
    gps_batch = m.rcu.completed - gps0
    settled(m)  # ... and the page waits for another
    assert not page.allocated and m.rcu.queued == 2
    assert m.rcu.completed - gps0 >= gps_batch + 1


def test_always_rcu_defer_is_a_plain_free_and_pte_free_of_the_last_uses_rcu():
    m = machine("powerpc-always-rcu")
    mm = m.new_mm(1000)
    ts = [alloc(m, mm) for _ in range(16)]
    page = ts[0].page
    defer(m, mm, ts[0])
    assert not page.flags & PG_ACTIVE and ts[0].state == FREE and m.rcu.queued == 0
    for t in ts[1:]:
        pte_free(m, mm, t)
    assert page.rcu_queued and m.rcu.queued == 1 and split(m) == {"pending": PAGE}
    settled(m)
    assert not page.allocated and split(m) == {}


def test_always_rcu_teardown_still_frees_at_once():
    m = machine("powerpc-always-rcu")
    mm = m.new_mm(1000)
    t = alloc(m, mm)
    pte_free(m, mm, t)
    assert m.rcu.queued == 0
    teardown(m, mm)
    assert not t.page.allocated and m.rcu.queued == 0


def test_live_states_are_counted_live():
    m = machine()
    mm = m.new_mm(1000)
    t = alloc(m, mm)
    assert t.state == LIVE
    t.state = DETACHED
    check(m)
    assert split(m) == {"live": F, "spare": 15 * F}


# -- invariants under random sequences --------------------------------------------------------

PAGE_OF = {"hash64k": "64KiB", "radix64k": "64KiB", "8xx16k": "16KiB"}

_op = st.one_of(
    st.tuples(st.just("alloc"), st.integers(0, 1), st.integers(1, 6)),
    st.tuples(st.just("race"), st.integers(0, 1), st.just(0)),
    st.tuples(st.just("free"), st.integers(0, 1), st.integers(0, 63)),
    st.tuples(st.just("defer"), st.integers(0, 1), st.integers(0, 63)),
    st.tuples(st.just("defers"), st.integers(0, 1), st.integers(2, 5)),  # retractions in a row
    st.tuples(st.just("gather"), st.integers(0, 1), st.integers(1, 6)),
    st.tuples(st.just("wait"), st.just(0), st.integers(1, 8_000_000)),
    st.tuples(st.just("teardown"), st.integers(0, 1), st.just(0)),
)


def _exit(m, mm, live):
    if live:
        gather(m, mm, live[:])
        live.clear()
    teardown(m, mm)


@pytest.mark.parametrize("name", ["powerpc", "powerpc-refcount", "powerpc-always-rcu"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(geometry=st.sampled_from(sorted(PAGE_OF)), ops=st.lists(_op, max_size=40))
# rare by chance, so always tried: several retractions within one grace period (v2 folds them),
# and a race whose loser outlives the mm's teardown
@example(geometry="hash64k", ops=[("alloc", 0, 6), ("defers", 0, 5), ("wait", 0, 8_000_000)])
@example(
    geometry="8xx16k",
    ops=[
        ("race", 1, 0),
        ("alloc", 1, 3),
        ("defer", 1, 0),
        ("teardown", 1, 0),
        ("wait", 0, 1_000_000),
    ],
)
def test_random_sequences_keep_the_split_exact_and_return_every_page(name, geometry, ops):
    m = machine(name, geometry, PAGE_OF[geometry])
    a = m.allocator
    mms = [m.new_mm(1000), m.new_mm(1000)]
    live: list[list] = [[], []]
    alive = [True, True]
    for op, i, x in ops:
        mm, lv = mms[i], live[i]
        if op == "wait":
            m.env.run(until=m.env.now + x)
            check(m)
        elif not alive[i]:
            continue
        elif op == "alloc":
            lv.extend(alloc(m, mm, k % 2) for k in range(x))
        elif op == "race":
            lv.extend(
                _concurrently(
                    m,
                    (0, lambda c, t, mm=mm: a.pte_alloc_one(c, mm)),
                    (1, lambda c, t, mm=mm: a.pte_alloc_one(c, mm)),
                )
            )
        elif op in ("free", "defer") and lv:
            t = lv.pop(x % len(lv))
            (pte_free if op == "free" else defer)(m, mm, t)
        elif op == "defers":
            for t in lv[-x:]:
                defer(m, mm, t)
            del lv[-x:]
        elif op == "gather" and lv:
            gather(m, mm, lv[:x])
            del lv[:x]
        elif op == "teardown":
            _exit(m, mm, lv)
            alive[i] = False
        held = a.account.held
        assert held == len(a.held_pages) * a.page_size
        assert a.account.live == sum(len(v) for v in live) * a.frag
    for i in (0, 1):
        if alive[i]:
            _exit(m, mms[i], live[i])
    settled(m)
    assert a.held_pages == {} and a.account.as_tuple() == (0, 0, 0, 0, 0)
    assert m.pages.pages_held("pgtable") == 0 and m.rcu.pending == 0


# -- the example config ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["powerpc", "powerpc-refcount", "powerpc-always-rcu"])
def test_configs_powerpc_yaml_runs_clean_shortened(name):
    from desim.config import load_config
    from desim.engine import build

    path = Path(__file__).resolve().parents[2] / "configs" / "powerpc.yaml"
    cfg = load_config(path, ["duration=40ms", "warmup=5ms", f"allocator.name={name}"])
    m = build(cfg)
    m.env.run(until=cfg.duration)
    a = m.allocator
    assert a.account.as_tuple() == a.audit().as_tuple()
    assert a.account.held == len(a.held_pages) * 64 * KB > 0
    assert a.invariant_errors() == []
    assert m.safety.total == m.safety.counts["bad_page_state"]  # v6.6's pte_frag_destroy
    assert m.counters["tables.deferred"] > 0 and m.counters["tables.gathered"] > 0


def test_invariant_reports_follow_the_order_pages_were_taken():
    # Held pages are iterated in the order the design took them, not by address, so the same
    # run reports its invariant breakages in the same order in every process.
    m = machine()
    mms = [m.new_mm(0) for _ in range(12)]
    pages = [alloc(m, mm).page for mm in mms]  # one page per mm: fragments are per mm
    assert len(set(pages)) == 12
    for p in reversed(pages):
        p.data = None
    errs = m.allocator.invariant_errors()
    assert errs == [f"{p!r}: held without fragment state" for p in pages]
