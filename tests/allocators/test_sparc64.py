"""sparc64: one 8 KiB table per 8 KiB page, freed by RCU on the page's own rcu_head."""

import pytest
from conftest import check, make_machine, run_task, settle
from hypothesis import given, settings
from hypothesis import strategies as st
from steps import alloc, defer, gather

from desim.config import ConfigError
from desim.model.memory import FREE, PENDING

PAGE = 8192


def machine(page_size="8KiB"):
    return make_machine(
        {"machine.cpus": 2, "machine.page_size": page_size, "allocator.name": "sparc64"}
    )


@pytest.mark.parametrize("size", ["4KiB", "16KiB", "64KiB"])
def test_refuses_any_page_size_but_8k(size):
    with pytest.raises(
        ValueError, match=f"machine.page_size: sparc64 needs 8KiB pages, got {size}"
    ):
        machine(size)


def test_takes_no_parameters():
    with pytest.raises(ConfigError, match="unknown field"):
        make_machine(
            {
                "machine.page_size": "8KiB",
                "allocator.name": "sparc64",
                "allocator.params.table_size": 4096,
            }
        )


def test_one_full_page_table_per_page_and_no_waste():
    m = machine()
    mm = m.new_mm(10)
    a, b = alloc(m, mm), alloc(m, mm)
    assert a.page is not b.page and a.offset == b.offset == 0 and a.size == PAGE
    assert m.allocator.account.as_tuple() == (2 * PAGE, 0, 0, 0, 0)  # internal 0: table == page


def test_defer_uses_the_pages_own_rcu_head_and_frees_after_a_gp():
    m = machine()
    mm = m.new_mm(10)
    t = alloc(m, mm)
    defer(m, mm, t)
    assert t.state == PENDING and t.page.rcu_queued and m.rcu.queued == 1
    assert m.allocator.account.as_tuple() == (0, PAGE, 0, 0, 0)
    settle(m)
    check(m)
    assert t.state == FREE and not t.page.allocated and m.allocator.account.held == 0


def test_gather_frees_every_table_after_one_batch_gp():
    m = machine()
    mm = m.new_mm(10)
    ts = [alloc(m, mm) for _ in range(3)]
    gather(m, mm, ts)
    assert m.rcu.queued == 1 and m.allocator.account.as_tuple() == (0, 3 * PAGE, 0, 0, 0)
    settle(m)
    check(m)
    assert m.pages.pages_held("pgtable") == 0 and m.rcu.queued == 1


@settings(max_examples=30, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["alloc", "defer", "gather", "free", "wait"]), st.integers(0, 7)),
        max_size=30,
    )
)
def test_random_sequences_keep_the_split_and_return_every_page(ops):
    m = machine()
    mm = m.new_mm(10)
    live = []
    for op, x in ops:
        if op == "alloc":
            live.append(alloc(m, mm))
        elif op == "wait":
            m.env.run(until=m.env.now + 1 + x * 1_000_000)
        elif live and op == "defer":
            defer(m, mm, live.pop(x % len(live)))
        elif live and op == "free":
            t = live.pop(x % len(live))
            run_task(m, 0, lambda c, task, t=t: m.allocator.pte_free(c, mm, t))
        elif live and op == "gather":
            gather(m, mm, live[: x + 1])
            del live[: x + 1]
        check(m)
    gather(m, mm, live)
    settle(m)
    check(m)
    assert m.allocator.held_pages == {} and m.pages.pages_held("pgtable") == 0
