"""Properties every registered design must keep, found automatically from the registry.

For each name in ``ALLOCATORS.names()`` (``unsafe-*`` controls excepted) the harness picks a
machine the design accepts (trying the known requirements first: 64 KiB pages for powerpc's
default hash64k geometry, 8 KiB for sparc64, then every page size), and hypothesis drives random
sequences of the kernel operations a design implements on a 2-4 CPU machine with a few mms:

* ``alloc``: ``pte_alloc_one`` (the table is attached to its mm);
* ``free``: ``pte_alloc_one`` then ``pte_free`` of the never-exposed table (a lost populate race);
* ``gather``: munmap of the last few tables through ``MMUGather`` (``pte_free_tlb`` + finish);
* ``defer``: retraction of one table and ``pte_free_defer``;
* ``exit``: every remaining table through mmu_gather, then ``mm_teardown`` and ``mm_free``;
* ``fork``: a new mm (sometimes a KVM/PGSTE one);
* ``race_alloc`` / ``race_defer``: two CPUs doing it at the same instant;
* ``walk_defer``: a fault's lockless walk on one CPU while another retracts and defers that
  table and allocates again (the race ``pte_free_defer`` exists for);
* ``wait``: simulated time passes (grace periods end, callbacks run).

After every step: the design's account equals its audit, the bytes held equal its page-table
pages, its invariants hold and the safety checker saw nothing. At the end, with every mm torn
down and RCU settled, every page-table page is back and the page allocator's books balance.
"""

from __future__ import annotations

import pytest
from conftest import make_config, run_task, settle, start_task
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from desim.allocators import ALLOCATORS
from desim.config import ConfigError, load_config
from desim.engine import simulate
from desim.model.machine import Machine
from desim.model.memory import DETACHED, LIVE
from desim.model.mmu_gather import MMUGather

# Known requirements, tried before the generic fallbacks. Keys match a name exactly or as the
# prefix before its first '-' (``powerpc`` covers ``powerpc-refcount``...).
# Designs that run on any page size are exercised where they have most to do.
COVERAGE = {"percpu-pool": {"machine.page_size": "64KiB"}}
# Further geometries worth their own run when the design accepts them.
VARIANTS = {
    "powerpc": [
        {"machine.page_size": "16KiB", "allocator.params.geometry": "8xx16k"},
        {"machine.page_size": "64KiB", "allocator.params.geometry": "radix64k"},
    ],
    "percpu-pool": [{"machine.page_size": "4KiB", "allocator.params.fragment_size": "2KiB"}],
}


def unexpected_safety_violations(m: Machine) -> int:
    """Violations besides those the design as merged is known to commit (powerpc 6.6's
    ``pte_frag_destroy`` of an Active page: bad_page_state)."""
    known = m.allocator.known_violations
    return sum(n for k, n in m.safety.counts.items() if k not in known)


def _build(name: str, overrides: dict, cpus: int = 2) -> Machine:
    # The checker also polls the design's invariants and books every few microseconds, so a
    # state that is only wrong mid-operation (between two events) is caught too.
    return Machine(
        make_config(
            {
                **overrides,
                "machine.cpus": cpus,
                "allocator.name": name,
                "safety.audit_interval": "3us",
            }
        )
    )


def choose_config(name: str) -> tuple[dict | None, str]:
    """A config ``name`` runs on: the page size it declares (``page_sizes``), read from the
    design itself rather than found by trial; (None, why) if that config is refused."""
    cls = ALLOCATORS.get(name)
    sizes = cls.page_sizes(cls.Params())
    overrides = (
        {"machine.page_size": f"{sizes[0] // 1024}KiB"}
        if sizes
        else COVERAGE.get(name, {"machine.page_size": "4KiB"})
    )
    try:
        _build(name, overrides)
    except (ConfigError, ValueError) as exc:
        return None, str(exc)
    return overrides, ""


def _safe_designs() -> list[str]:
    return [n for n in ALLOCATORS.names() if not n.startswith("unsafe-")]


def _cases() -> list:
    out = []
    for name in _safe_designs():
        out.append(pytest.param(name, None, id=name))
        key = name if name in VARIANTS else name.split("-")[0]
        for v in VARIANTS.get(key, []):
            vid = "-".join(str(x) for x in v.values())
            out.append(pytest.param(name, v, id=f"{name}[{vid}]"))
    return out


def _config_for(name: str, variant: dict | None) -> dict:
    if variant is None:
        overrides, why = choose_config(name)
        if overrides is None:
            pytest.skip(f"{name} refuses every tried config: {why}")
        return overrides
    try:
        _build(name, variant)
    except (ConfigError, ValueError) as exc:
        pytest.skip(f"{name} refuses {variant}: {exc}")
    return variant


# -- the operations -------------------------------------------------------------------------------
MAX_MMS = 4
MAX_TABLES = 24

cpu_i = st.integers(0, 3)
mm_i = st.integers(0, MAX_MMS - 1)
ALLOC = st.tuples(st.just("alloc"), mm_i, cpu_i, st.integers(1, 4))
WAIT = st.tuples(
    st.just("wait"), st.sampled_from([1, 500, 20_000, 300_000, 1_000_000, 4_000_000, 10_000_000])
)
OPS = st.one_of(
    ALLOC,
    ALLOC,
    ALLOC,  # more likely: tables must exist for the frees to matter
    st.tuples(st.just("free"), mm_i, cpu_i),
    st.tuples(st.just("gather"), mm_i, cpu_i, st.integers(1, 5)),
    st.tuples(st.just("defer"), mm_i, cpu_i, st.integers(0, MAX_TABLES)),
    st.tuples(st.just("exit"), mm_i, cpu_i),
    st.tuples(st.just("fork"), st.booleans()),
    st.tuples(st.just("race_alloc"), mm_i, cpu_i),
    st.tuples(st.just("race_defer"), mm_i, cpu_i, st.integers(0, MAX_TABLES)),
    st.tuples(
        st.just("walk_defer"),
        mm_i,
        cpu_i,
        st.integers(0, MAX_TABLES),
        st.sampled_from([100, 20_000, 2_000_000]),
    ),
    WAIT,
    WAIT,
)


class Driver:
    """Runs operations on a machine with no workload elements: only what the test asks."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.a = m.allocator
        self.mms = []
        self.steps = 0

    def cpu(self, i: int) -> int:
        return i % len(self.m.cpus)

    def mm(self, i: int):
        return self.mms[i % len(self.mms)] if self.mms else None

    # bodies, each a generator run by a task owning ``cpu``
    def _alloc(self, cpu, task, mm, n):
        for _ in range(n):
            if len(mm.tables) >= MAX_TABLES:
                return
            t = yield from self.a.pte_alloc_one(cpu, mm)
            if t is None:
                return
            mm.tables.append(t)

    def _alloc_free(self, cpu, task, mm):
        t = yield from self.a.pte_alloc_one(cpu, mm)
        if t is not None:
            yield from self.a.pte_free(cpu, mm, t)

    def _gather(self, cpu, task, mm, tables):
        tlb = MMUGather(self.m, cpu, mm)
        for t in tables:
            t.state = DETACHED
            yield from self.a.pte_free_tlb(cpu, tlb, t)
        yield from tlb.finish()

    def _defer(self, cpu, task, mm, t):
        yield from self.a.pte_free_defer(cpu, mm, t)

    def _walk(self, cpu, task, t, hold):
        """A fault's lockless walk (``pte_offset_map`` then the ptl), ``hold`` ns long."""
        m = self.m
        cpu.rcu_read_lock()
        gen = t.gen
        lock = t.page.ptl  # the table pointer was read from the PMD
        yield cpu.compute(m.costs.pte_walk + hold)
        m.safety.table_access(cpu, t, gen, "pte read")
        ev = lock.acquire(cpu)  # a freed page's ptl is poisoned: the checker sees it
        if ev is not None:
            yield ev
        lock.release(cpu)  # pmd_same() fails: the table was retracted
        cpu.rcu_read_unlock()

    def _defer_realloc(self, cpu, task, mm, t):
        """Retract ``t``, then allocate again at once: a design that re-uses too early shows."""
        yield from self.a.pte_free_defer(cpu, mm, t)
        yield from self._alloc(cpu, task, mm, 2)

    def _exit(self, cpu, task, mm):
        self.m.unlink_mm(mm)
        tables, mm.tables = mm.tables, []
        yield from self._gather(cpu, task, mm, tables)
        yield from self.a.mm_teardown(cpu, mm)
        yield from self.a.mm_free(cpu, mm, task)

    def _detach(self, mm, k):
        if not mm.tables:
            return None
        t = mm.tables.pop(k % len(mm.tables))
        t.state = DETACHED  # retract_page_tables cleared the PMD
        return t

    def _together(self, jobs):
        """Start every (cpu, body, args) at the same instant; run until all are done."""
        procs = [start_task(self.m, cpu_id, body, *args) for cpu_id, body, args in jobs]
        self.m.env.run(until=self.m.env.all_of(procs))

    def apply(self, op) -> None:
        m = self.m
        kind = op[0]
        if kind == "fork":
            if len(self.mms) < MAX_MMS:
                self.mms.append(m.new_mm(MAX_TABLES, pgste=op[1]))
            return
        if kind == "wait":
            m.env.run(until=m.env.now + op[1])
            return
        mm = self.mm(op[1])
        if mm is None:
            return
        c = self.cpu(op[2])
        if kind == "alloc":
            run_task(m, c, self._alloc, mm, op[3])
        elif kind == "free":
            run_task(m, c, self._alloc_free, mm)
        elif kind == "gather":
            victims = mm.tables[-op[3] :]
            del mm.tables[-op[3] :]
            run_task(m, c, self._gather, mm, victims)
        elif kind == "defer":
            t = self._detach(mm, op[3])
            if t is not None:
                run_task(m, c, self._defer, mm, t)
        elif kind == "exit":
            self.mms.remove(mm)
            run_task(m, c, self._exit, mm)
        elif kind == "race_alloc":
            other = self.cpu(c + 1)
            if other != c and len(mm.tables) + 2 <= MAX_TABLES:
                self._together([(c, self._alloc, (mm, 1)), (other, self._alloc, (mm, 1))])
        elif kind == "race_defer":
            other = self.cpu(c + 1)
            a, b = self._detach(mm, op[3]), self._detach(mm, op[3] + 1)
            jobs = [
                (cpu_id, self._defer, (mm, t))
                for cpu_id, t in ((c, a), (other, b))
                if t is not None
            ]
            self._together(jobs)

        elif kind == "walk_defer":
            other = self.cpu(c + 1)
            t = self._detach(mm, op[3])
            if t is not None:
                self._together([(c, self._walk, (t, op[4])), (other, self._defer_realloc, (mm, t))])

    def check(self, where: str) -> None:
        m, a = self.m, self.a
        assert a.account.as_tuple() == a.audit().as_tuple(), where
        assert a.account.held == m.pages.pages_held("pgtable") * m.pages.page_size, where
        assert a.invariant_errors() == [], where
        assert unexpected_safety_violations(m) == 0, (where, m.safety.records[:3])
        for mm in self.mms:
            assert all(t.state == LIVE for t in mm.tables), where

    def finish(self) -> None:
        m = self.m
        for i, mm in enumerate(list(self.mms)):
            self.mms.remove(mm)
            run_task(m, i % len(m.cpus), self._exit, mm)
            self.check(f"final exit of {mm!r}")
        settle(m)
        m.env.run(until=m.env.now + 20_000_000)  # async mm frees, kworkers
        settle(m)
        self.check("settled")


def _property(name: str, overrides: dict, **kw):
    """The property for one design and config, as a hypothesis test function."""

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        **kw,
    )
    @given(cpus=st.integers(2, 4), first=st.booleans(), ops=st.lists(OPS, min_size=20, max_size=80))
    def prop(cpus, first, ops):
        m = _build(name, overrides, cpus)
        d = Driver(m)
        d.apply(("fork", first))
        d.apply(("fork", False))
        for i, op in enumerate(ops):
            d.apply(op)
            d.check(f"after step {i} {op}")
        d.finish()
        pages = m.pages
        assert pages.pages_held("pgtable") == 0
        assert m.allocator.account.as_tuple() == (0, 0, 0, 0, 0)
        assert pages.allocated - pages.freed == pages.held == 0
        assert m.rcu.pending == 0

    return prop


@pytest.mark.parametrize(("name", "variant"), _cases())
def test_random_operations_keep_every_invariant_and_return_every_page(name, variant):
    _property(name, _config_for(name, variant))()


@pytest.mark.parametrize("name", [n for n in ALLOCATORS.names() if n.startswith("unsafe-")])
def test_the_harness_catches_every_unsafe_control(name):
    """The same property must fail on the controls built to be unsafe (no shrinking: speed)."""
    prop = _property(
        name, _config_for(name, None), phases=[Phase.explicit, Phase.reuse, Phase.generate]
    )
    with pytest.raises((AssertionError, BaseExceptionGroup)) as info:
        prop()
    assert "safety" in str(info.value) or "kind" in str(info.value)


def test_the_harness_finds_every_registered_design():
    names = ALLOCATORS.names()
    assert "generic" in names and "percpu-pool" in names
    cases = {p.values[0] for p in _cases()}
    assert cases == {n for n in names if not n.startswith("unsafe-")}


def test_choose_config_honours_a_design_that_refuses_small_pages():
    overrides, _ = choose_config("percpu-pool")
    assert overrides == {"machine.page_size": "64KiB"}
    with pytest.raises(ValueError, match="fragment_size"):
        _build(
            "percpu-pool", {"machine.page_size": "4KiB", "allocator.params.fragment_size": "8KiB"}
        )


@pytest.mark.parametrize("name", _safe_designs())
def test_default_shaped_run_is_safe(name):
    overrides, why = choose_config(name)
    if overrides is None:
        pytest.skip(f"{name} refuses every tried config: {why}")
    sets = [f"{k}={v}" for k, v in overrides.items()]
    cfg = load_config(
        "configs/default.yaml", [*sets, f"allocator.name={name}", "duration=40ms", "warmup=5ms"]
    )
    s = simulate(cfg).summary
    known = ALLOCATORS.get(name).known_violations
    assert s["safety.violations"] == sum(s[f"safety.{k}"] for k in known)
    assert s["fault.count"] > 0 and s["alloc.count"] > 0
    assert s["pages.allocated"] - s["pages.freed"] == s["pages.held_end"]
    assert s["mem.held_end_bytes"] == s["pages.pgtable_held_end"] * cfg.machine.page_size


@pytest.mark.parametrize("name", _safe_designs())
def test_free_to_reuse_clock_starts_at_the_unmappers_free_on_every_design(name):
    """One table freed through mmu_gather (munmap, then exit): every design starts the
    free-to-reuse clock when the unmapper hands the table to the gather (``pte_free_tlb``), not
    when ``__tlb_remove_table`` runs after the grace period, and stops it after that GP."""
    overrides, why = choose_config(name)
    if overrides is None:
        pytest.skip(f"{name} refuses every tried config: {why}")
    # every design on an RCU-batched machine (bare-metal x86's flush mode: test_mmu_gather)
    m = _build(name, {**overrides, "machine.tlb_table_free": "rcu"})
    got = []
    m.recorders["free_to_reuse"] = lambda ns: got.append((m.env.now, ns))
    d = Driver(m)
    mm = m.new_mm(MAX_TABLES)
    d.mms.append(mm)
    run_task(m, 0, d._alloc, mm, 1)
    m.env.run(until=1_000_000)
    t = mm.tables[-1]
    run_task(m, 0, d._gather, mm, [mm.tables.pop()])
    freed = t.t_freed
    assert 1_000_000 <= freed <= m.env.now  # set during the munmap itself
    d.mms.remove(mm)
    run_task(m, 0, d._exit, mm)  # a design may reuse only once
    settle(m)  # the page is gone
    m.env.run(until=m.env.now + 20_000_000)
    settle(m)
    starts = {now - ns for now, ns in got}
    assert freed in starts, (got, freed)
    gp_end = m.rcu.gp_spans[0][1]
    assert all(now >= gp_end for now, _ in got)  # reusable only after the GP
    assert all(s <= freed for s in starts)  # no clock starts after the free
