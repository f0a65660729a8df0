"""The run configuration: typed, frozen, validated in one place.

Times accept units (``25ns``, ``3ms``), sizes too (``4KiB``). Unknown keys, wrong types and
impossible values are rejected with an error naming the dotted field. ``load_config`` reads
YAML with ``desim.inputs`` (regular files of bounded size, no duplicate keys, anchors or
aliases); ``apply_overrides`` applies ``--set a.b=value`` pairs first.

Numbers are strict and bounded: ``true``/``false`` is never a number, counts are integers
(``8.0`` is 8, ``8.5`` is refused), nothing is infinite or NaN, and every count and size has a
generous upper bound stated in its ``Field`` (times: at most one day, see ``desim.units``), so
that no value can make validation build a billion objects or a run overflow 64-bit time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from desim.distributions import TIME_UNITS, AnyDist
from desim.inputs import MAX_DEPTH, InputError, load_yaml, read_text
from desim.model.arch import ARCH_NAMES, ARCHES
from desim.model.costs import PROFILES
from desim.registry import UnknownName
from desim.units import parse_size_bytes, parse_time_ns, units_required

_FLOAT_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _integer(v: Any) -> Any:
    # pydantic's lax mode reads true as 1; YAML 1.1 reads 1e5 as a string
    if isinstance(v, bool):
        raise ValueError("expected an integer, not true/false")
    if isinstance(v, str) and _FLOAT_TEXT.fullmatch(v):
        v = float(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _real(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("expected a number, not true/false")
    return v


Int = Annotated[int, BeforeValidator(_integer)]
Real = Annotated[float, BeforeValidator(_real), Field(allow_inf_nan=False)]
Duration = Annotated[int, BeforeValidator(parse_time_ns), Field(ge=0), TIME_UNITS]
PositiveDuration = Annotated[int, BeforeValidator(parse_time_ns), Field(gt=0), TIME_UNITS]
Size = Annotated[int, BeforeValidator(parse_size_bytes), Field(gt=0)]

MAX_CPUS = 4096
MAX_PROCESSES = 100_000  # processes alive at time 0 (each is a SimPy process at build)
MAX_TABLES = 1 << 20  # page tables per process or per call: 2 TiB mapped at 4 KiB
MAX_PAGES = 1 << 32  # pages of memory in any count (16 TiB at 4 KiB)
MAX_LOCKS = 65_536
MAX_PAGE_SIZE = 256 << 10  # the largest base page Linux has (hexagon, ppc44x: 256 KiB)
MAX_SEED = (1 << 63) - 1  # seeds are stored in int64 columns
MAX_BATCH = 1_000_000_000  # RCU callback limits
MAX_SAMPLES = 10_000_000  # time-series rows kept in memory per run


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MachineConfig(Strict):
    cpus: Int = Field(8, ge=1, le=MAX_CPUS, description="number of CPUs")
    arch: str | None = Field(
        None,
        description="the machine modelled (desim.model.arch): "
        + ", ".join(ARCH_NAMES)
        + "; default: the allocator's own architecture",
    )
    tlb_table_free: Literal["rcu", "flush"] | None = Field(
        None,
        description="how mmu_gather frees unmapped tables: rcu (MMU_GATHER_RCU_TABLE_FREE "
        "batch, one call_rcu per batch) or flush (bare-metal x86 v6.6-6.7: freed after the flush "
        "IPIs, no grace period); default: the arch's",
    )
    hz: Int | None = Field(None, description="scheduler tick rate (CONFIG_HZ); default: the arch's")
    page_size: Size = Field(4096, description="base page size")
    memory_limit: Size | None = Field(None, description="cap on memory held in pages")

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str | None) -> str | None:
        if v is not None and v not in ARCHES:
            raise ValueError(f"arch must be one of {', '.join(ARCH_NAMES)}")
        return v

    @field_validator("hz")
    @classmethod
    def _hz(cls, v: int | None) -> int | None:
        if v is not None and v not in (100, 250, 300, 1000):
            raise ValueError("hz must be one of 100, 250, 300, 1000")
        return v

    @field_validator("page_size")
    @classmethod
    def _page_size(cls, v: int) -> int:
        if v < 4096 or v > MAX_PAGE_SIZE or v & (v - 1):
            raise ValueError("page_size must be a power of two from 4KiB to 256KiB")
        return v

    @model_validator(mode="after")
    def _memory_limit(self):
        if self.memory_limit is not None and self.memory_limit < self.page_size:
            raise ValueError(
                f"memory_limit: {self.memory_limit} B is less than one page "
                f"(page_size {self.page_size} B)"
            )
        return self

    @property
    def jiffy_ns(self) -> int:
        return 1_000_000_000 // self.hz  # type: ignore[operator]  # resolved by Config

    @property
    def page_limit(self) -> int | None:
        return None if self.memory_limit is None else self.memory_limit // self.page_size


def _cost(v: Any) -> Any:
    """A cost: a plain duration is a constant (an int, free to charge), a mapping a distribution
    (``desim.distributions``; a ``constant`` one is kept as its int)."""
    from desim.distributions import Constant, _Dist, _time

    if isinstance(v, dict | _Dist):
        d = _time(v)
        return round(d.value) if isinstance(d, Constant) else d
    return v


Cost = Annotated[Duration | AnyDist, BeforeValidator(_cost), TIME_UNITS]
"""A per-operation cost that varies: a duration, or a distribution of durations."""

COST_PROFILES = ("arch", "flat", *PROFILES)


class CostsConfig(Strict):
    """CPU time of the operations the model charges (ns).

    A field left out takes the value of ``profile``: ``arch`` (default), the cost profile of
    ``machine.arch`` (``desim.model.costs``: distributions where the kernel's cost varies, page
    zeroing and teardown per platform); a profile by name (``x86-64``, ``arm64``,
    ``powerpc-hash``, ``powerpc-radix``, ``s390``: another platform's costs on this machine);
    ``flat``, the constants below (a current x86-64 server, every cost fixed, no zeroing or
    zapping charged: the figures before costs had a shape).
    """

    profile: Literal[COST_PROFILES] = Field(  # type: ignore[valid-type]
        "arch",
        description="where the costs not given come from: arch (the machine's cost "
        "profile), a profile by name (" + ", ".join(PROFILES) + ") or flat (constants)",
    )
    lock_uncontended: Duration = Field(25, description="cache-hot spin_lock + spin_unlock")
    lock_handoff: Duration = Field(100, description="lock cache line moving between CPUs")
    pte_walk: Duration = Field(150, description="pte_offset_map + read the PTE, locklessly")
    fault_work: Cost = Field(700, description="rest of a minor fault, under the ptl")
    page_alloc: Cost = Field(
        250, description="take a page from the page allocator, besides zeroing it"
    )
    page_zero: Duration = Field(
        0,
        description="clear_page of each 4 KiB of a page allocated "
        "zeroed (page tables): a 64 KiB page costs 16 times this",
    )
    page_free: Duration = Field(150, description="return a page to the page allocator")
    table_ctor: Duration = Field(60, description="pagetable_pte_ctor/dtor: ptl init, accounting")
    call_rcu: Duration = Field(30, description="queue one callback")
    rcu_callback: Duration = Field(40, description="softirq overhead per callback invoked")
    tlb_flush: Cost = Field(1500, description="flush the TLB for a range")
    ipi_latency: Cost = Field(2000, description="send an IPI until the target handles it")
    ipi_handler: Duration = Field(500, description="CPU time the IPI handler takes on a target")
    exp_gp_overhead: Duration = Field(40000, description="expedited GP: kworker wake-up, setup")
    fork: Cost = Field(60000, description="fork+exec of a process, besides page tables")
    exit: Cost = Field(30000, description="exit of a process, besides page tables and zapping")
    munmap: Cost = Field(3000, description="munmap of a range, besides page tables and zapping")
    zap_page: Duration = Field(
        0,
        description="zap_pte_range per mapped page at munmap and exit "
        "(clear the PTE, drop rmap and refcount, free in batches); a "
        "table maps machine.arch's PTEs per table",
    )
    mm_free: Duration = Field(300, description="free the mm_struct")


class RcuConfig(Strict):
    flavor: Literal["preemptible", "non-preemptible"] = Field(
        "preemptible",
        description="PREEMPT_RCU (PREEMPT_DYNAMIC x86 distribution kernels) or "
        "!PREEMPT_RCU (PREEMPT_NONE/VOLUNTARY builds: s390, powerpc defconfigs)",
    )
    fqs_jiffies: Int | None = Field(
        None,
        ge=1,
        description="jiffies_till_first_fqs (at most hz); default 1 + (HZ > 250) + "
        "(HZ > 500) + cpus/256 as rcu_init_geometry computes it",
    )
    next_fqs_jiffies: Int | None = Field(
        None,
        ge=1,
        description="jiffies_till_next_fqs (at most hz); default fqs_jiffies if set, "
        "else the kernel's formula",
    )
    blimit: Int = Field(10, ge=1, le=MAX_BATCH, description="rcu_do_batch's least batch (blimit)")
    qhimark: Int = Field(
        10000,
        ge=1,
        le=MAX_BATCH,
        description="a CPU's queue growing by this much lifts its "
        "batch limit; a lazy bypass list this long is flushed",
    )
    batch_time: PositiveDuration = Field(
        3_000_000, description="rcu_resched_ns: a batch above 100 callbacks is cut after this"
    )
    tick_qs_in_kernel: bool = Field(
        False,
        description="non-preemptible: a tick in kernel code outside a reader reports a "
        "QS (the later fix counting a tick with no preempt count held, CONFIG_PREEMPT_COUNT=y)",
    )
    sched_qs_jiffies: Int | None = Field(
        None,
        ge=1,
        description="jiffies_to_sched_qs: a GP this old makes kernel-bound CPUs "
        "report at their next tick (cond_resched); default as adjust_jiffies_till_sched_qs; "
        "at most one day",
    )
    nocb_cpus: Literal["none", "all"] | list[Int] = Field(
        "none", description="CPUs whose callbacks are offloaded to rcuo kthreads (rcu_nocbs=)"
    )
    lazy: bool = Field(
        False,
        description="CONFIG_RCU_LAZY: call_rcu on an offloaded CPU waits in the bypass "
        "list (call_rcu_hurry and synchronize_rcu do not)",
    )
    lazy_flush: PositiveDuration = Field(
        10_000_000_000, description="jiffies_lazy_flush: lazy callbacks wait at most this long"
    )

    @field_validator("nocb_cpus")
    @classmethod
    def _nocb(cls, v):
        if isinstance(v, list) and any(i < 0 for i in v):
            raise ValueError("nocb_cpus must be none, all or a list of CPU ids >= 0")
        return v

    def offloaded_cpus(self, ncpus: int) -> set[int]:
        if self.nocb_cpus == "none":
            return set()
        if self.nocb_cpus == "all":
            return set(range(ncpus))
        return {i for i in self.nocb_cpus if i < ncpus}

    def effective_fqs_jiffies(self, hz: int, ncpus: int) -> int:
        # rcu_init_geometry(): RCU_JIFFIES_TILL_FORCE_QS + nr_cpu_ids / RCU_JIFFIES_FQS_DIV
        # (kernel/rcu/tree.h, tree.c), i.e. 3 at HZ=1000, 2 at HZ=300, 1 at HZ <= 250 below
        # 256 CPUs. nr_cpu_ids is the machine's CPU count here.
        if self.fqs_jiffies is not None:
            return self.fqs_jiffies
        return 1 + (hz > 250) + (hz > 500) + ncpus // 256

    def effective_next_fqs_jiffies(self, hz: int, ncpus: int) -> int:
        if self.next_fqs_jiffies is not None:
            return self.next_fqs_jiffies
        return self.effective_fqs_jiffies(hz, ncpus)

    def effective_sched_qs_jiffies(self, hz: int, ncpus: int) -> int:
        # adjust_jiffies_till_sched_qs(): the third FQS scan, but at least HZ/10 + nr_cpu_ids/256.
        if self.sched_qs_jiffies is not None:
            return self.sched_qs_jiffies
        j = self.effective_fqs_jiffies(hz, ncpus) + 2 * self.effective_next_fqs_jiffies(hz, ncpus)
        return max(j, hz // 10 + ncpus // 256)


class AllocatorConfig(Strict):
    name: str = "generic"
    params: Any = None

    @model_validator(mode="before")
    @classmethod
    def _params(cls, data: Any) -> Any:
        from desim.allocators import ALLOCATORS

        if isinstance(data, str):
            data = {"name": data}
        if not isinstance(data, dict):
            raise ValueError("allocator must be a name or {name: ..., params: {...}}")
        name = data.get("name", "generic")
        if not isinstance(name, str):
            raise ValueError("name: expected the name of a design (see desim list)")
        try:
            klass = ALLOCATORS.get(name)
        except UnknownName as exc:
            raise ValueError(str(exc)) from None
        params = data.get("params") or {}
        if isinstance(params, BaseModel):
            params = params.model_dump(by_alias=True)
        try:
            return {**data, "params": klass.Params.model_validate(params)}
        except ValidationError as exc:
            # name the field as the YAML spells it: allocator.params.<field>
            raise ValueError(_first_error(exc, prefix="params")) from None


MM_LIFETIMES = (
    "design",
    "none",
    "synchronize_rcu_exit_mmap",
    "synchronize_rcu_mmdrop",
    "rcu_barrier",
    "mmdrop_async",
    "call_rcu",
    "slab_typesafe_by_rcu",
)


class SchedConfig(Strict):
    """The CPU scheduler used by closed-loop workloads (``desim.model.sched``)."""

    slice: PositiveDuration | None = Field(
        None,
        description="time slice (EEVDF sysctl_sched_base_slice); default 0.75 ms x "
        "(1 + ilog2(min(cpus, 8))) as update_sysctl scales it: 3 ms from 8 CPUs",
    )
    switch_cost: Duration = Field(
        2000,
        description="CPU time of one context switch between tasks (__schedule, "
        "switch_mm, cache refill; an estimate)",
    )
    wake_affine: bool = Field(
        True,
        description="a waking task goes back to its previous CPU when that one is idle "
        "(select_idle_sibling); otherwise any idle CPU, else the least loaded",
    )
    preempt: Literal["none", "voluntary", "full"] = Field(
        "voluntary",
        description="preemption model (preempt= of a PREEMPT_DYNAMIC kernel, "
        "sched_dynamic_mode); full: kernel code is preempted where preemption is on, RCU "
        "readers included (needs rcu.flavor: preemptible); none and voluntary: kernel code "
        "switches only when it sleeps or returns to user mode",
    )
    wakeup_preemption: bool = Field(
        True,
        description="a woken task may preempt the current one (WAKEUP_PREEMPTION, EEVDF's "
        "check_preempt_wakeup with RUN_TO_PARITY)",
    )
    kworker_delay: Duration = Field(
        20_000, description="mm_lifetime mmdrop_async: schedule_work until a kworker frees the mm"
    )

    def effective_slice(self, ncpus: int) -> int:
        if self.slice is not None:
            return self.slice
        # kernel/sched/fair.c get_update_sysctl_factor (SCHED_TUNABLESCALING_LOG): 1 + ilog2
        # of the online CPUs, capped at 8 of them.
        return 750_000 * (1 + min(ncpus, 8).bit_length() - 1)


class RecordConfig(Strict):
    enabled: bool = Field(
        True, description="collect latency histograms and the time series (off: benchmarks only)"
    )
    sample_interval: PositiveDuration = Field(
        1_000_000, description="memory/RCU time series sampling period"
    )
    latency_samples: bool = Field(
        False, description="also keep every latency sample (memory grows with the run)"
    )


class SafetyConfig(Strict):
    enabled: bool = Field(True, description="keep shadow state and check for violations")
    stop_on_first: bool = Field(False, description="stop the run at the first violation")
    history: Int = Field(8, ge=1, le=1000, description="events kept per object for reports")
    audit_interval: Duration = Field(
        10_000_000,
        description="poll design invariants and memory books this often (0: never); "
        "each audit rescans every page-table page, so 1 ms costs ~10% of a run's wall time",
    )


class Config(Strict):
    seed: Int = Field(1, ge=0, le=MAX_SEED)
    duration: PositiveDuration = Field(500_000_000, description="simulated time")
    warmup: Duration = Field(0, description="statistics are reset at this time")
    machine: MachineConfig = MachineConfig()
    costs: CostsConfig = CostsConfig()
    rcu: RcuConfig = RcuConfig()
    allocator: AllocatorConfig = AllocatorConfig()
    sched: SchedConfig = SchedConfig()
    mm_lifetime: Literal[MM_LIFETIMES] = Field(  # type: ignore[valid-type]
        "design",
        description="how an exiting mm outlives RCU callbacks that may reach it "
        "(desim.model.mm_lifetime); design: the allocator's own rule",
    )
    workload: dict[str, Any] = Field(default_factory=dict)
    record: RecordConfig = RecordConfig()
    safety: SafetyConfig = SafetyConfig()

    @field_validator("workload", mode="before")
    @classmethod
    def _workload(cls, data: Any) -> Any:
        from desim.workloads import ELEMENTS

        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ValueError("workload must be a mapping of element name to its parameters")
        out = {}
        for name, params in data.items():
            try:
                klass = ELEMENTS.get(name)
            except UnknownName as exc:
                raise ValueError(str(exc)) from None
            if isinstance(params, BaseModel):
                out[name] = params
                continue
            try:
                out[name] = klass.Params.model_validate(params or {})
            except ValidationError as exc:
                raise ValueError(_first_error(exc, prefix=name)) from None
        return out

    @model_validator(mode="after")
    def _machine(self):
        """Settle what the machine leaves to its arch (arch from the allocator, then the arch's
        table-free mode and HZ), so the config written beside a result is explicit."""
        from desim.allocators import ALLOCATORS

        mc = self.machine
        arch = mc.arch or ALLOCATORS.get(self.allocator.name).default_arch(self.allocator.params)
        a = ARCHES[arch]
        upd = {
            "arch": arch,
            "tlb_table_free": mc.tlb_table_free or a.tlb_table_free,
            "hz": mc.hz or a.hz,
        }
        if any(getattr(mc, k) != v for k, v in upd.items()):
            object.__setattr__(self, "machine", mc.model_copy(update=upd))  # frozen: built here
        cc = self.costs
        if cc.profile != "flat":
            # the costs the config gives win; the rest come from the profile
            given = cc.model_dump(include=cc.model_fields_set, by_alias=True)
            profile = PROFILES[a.cost_profile if cc.profile == "arch" else cc.profile]
            with units_required(False):  # the profile's and the already-read given values
                filled = CostsConfig.model_validate({**profile, **given})
            object.__setattr__(self, "costs", filled)  # frozen: built here
        return self

    @model_validator(mode="after")
    def _requirements(self):
        """What the design and each workload element declare they need of the machine
        (``check_config`` on their classes), checked here so that no machine is built to find out."""
        from desim.allocators import ALLOCATORS
        from desim.workloads import ELEMENTS

        ALLOCATORS.get(self.allocator.name).check_config(self.allocator.params, self)
        for name, params in self.workload.items():
            ELEMENTS.get(name).check_config(params, self)
        return self

    @model_validator(mode="after")
    def _times(self):
        if self.warmup >= self.duration:
            raise ValueError("warmup must be shorter than duration")
        hz = self.machine.hz
        if self.rcu.fqs_jiffies is not None and self.rcu.fqs_jiffies > hz:
            # param_set_first_fqs_jiffies (kernel/rcu/tree.c) caps it at HZ: one second
            raise ValueError(f"rcu.fqs_jiffies: at most machine.hz ({hz}), one second")
        if self.rcu.next_fqs_jiffies is not None and self.rcu.next_fqs_jiffies > hz:
            raise ValueError(f"rcu.next_fqs_jiffies: at most machine.hz ({hz}), one second")
        if self.rcu.sched_qs_jiffies is not None and self.rcu.sched_qs_jiffies > 86_400 * hz:
            raise ValueError(f"rcu.sched_qs_jiffies: at most one day ({86_400 * hz} jiffies)")
        if self.sched.preempt == "full" and self.rcu.flavor != "preemptible":
            # kernel/Kconfig.preempt: every preemption model that can run as full selects
            # PREEMPTION, and PREEMPT_RCU is TREE_RCU && PREEMPTION (kernel/rcu/Kconfig)
            raise ValueError(
                "sched.preempt: full needs rcu.flavor: preemptible (a kernel that preempts "
                "kernel code has preemptible RCU); use none or voluntary"
            )
        if self.record.enabled and self.duration // self.record.sample_interval > MAX_SAMPLES:
            raise ValueError(
                f"record.sample_interval: at most {MAX_SAMPLES:,} samples per run "
                f"(duration / sample_interval)"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the config in base units (ns, bytes): the values results tables hold."""
        return self.model_dump(mode="json", by_alias=True)

    def to_yaml_dict(self) -> dict[str, Any]:
        """A YAML-able dict, times written with their units, that loads back (``load_config``,
        which wants units on times) to an equal config: what desim saves beside a result."""
        return self.model_dump(mode="json", by_alias=True, context={"units": True})


class ConfigError(ValueError):
    """A config is malformed; the message is one line naming the field."""


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-")))


def _first_error(exc: ValidationError, prefix: str = "") -> str:
    errs = exc.errors()
    e = errs[0]
    where = _loc(e["loc"])
    where = f"{prefix}.{where}" if prefix and where else (prefix or where)
    msg = e["msg"].removeprefix("Value error, ")
    head, sep, rest = msg.partition(": ")
    if where and sep and head and " " not in head:
        # A nested validator already named the field below ``where`` (workload elements).
        where, msg = f"{where}.{head}", rest
    if e["type"] == "extra_forbidden":
        msg = "unknown field"
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{where}: {msg}{more}" if where else f"{msg}{more}"


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating levels as needed."""
    parts = key.split(".")
    if not all(p.strip() for p in parts) or len(parts) > MAX_DEPTH:
        raise ConfigError(f"{key!r}: expected a dotted key such as machine.cpus")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = cur[p] = {}
        cur = nxt
    cur[parts[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` strings (value read as YAML) to a raw config dict."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        try:
            value = load_yaml(raw)
        except InputError as exc:
            raise ConfigError(f"--set {item!r}: {exc}") from None
        try:
            set_dotted(data, key, value)
        except ConfigError:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value") from None
    return data


def read_yaml(path: str | Path) -> dict:
    """A YAML file whose top level is a mapping (``desim.inputs``: bounded, strict)."""
    try:
        data = load_yaml(read_text(path))
    except InputError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def validate(data: dict) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None


def load_config(
    path: str | Path, overrides: list[str] | None = None, seed: int | None = None
) -> Config:
    data = apply_overrides(read_yaml(path), overrides or [])
    if seed is not None:
        data["seed"] = seed
    from desim.distributions import relative_to

    try:
        # empirical sample files sit beside the config; times in it must carry a unit
        with relative_to(Path(path).parent), units_required():
            return validate(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
