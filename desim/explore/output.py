"""What ``desim explore`` prints and writes: counterexamples, coverage, replay files.

**The replay file** (``counterexample.yaml``) is YAML, self-contained, and read back by
``desim explore --replay FILE``:

* ``format``: ``desim-explore/1``; ``desim_version``: the desim that recorded it;
* ``scenario``: where the scenario came from (informative); ``seed``: the search's seed;
* ``config``: the machine's resolved config (a desim config, as ``desim run`` writes it);
* ``explore``: the scenario's ``explore:`` section;
* ``script``: the operations, each ``{at, cpu, op, mm, table}``: start time in ns from the
  script's start (a jiffy boundary after the set-up), CPU, operation, starting mm, table index
  counted when the step starts; it may be edited, and the replay then asks fresh questions;
* ``choices``: the answers to the schedule's choice points, in order, each
  ``[label, options, answer]``: ``order`` (which of the events due together runs first, 0 being
  the order SimPy would take) or ``cost.<name>`` (which quantile of the cost,
  ``desim.explore.run.QUANTILES``, 0 being the median);
* ``violation``: what the recorded run hit (kind, time from the script's start, CPU, message).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from desim import __version__
from desim.config import ConfigError, Int, _first_error, read_yaml
from desim.explore.run import Op, Outcome
from desim.explore.spec import OPS, Scenario, from_dicts

FORMAT = "desim-explore/1"
REPLAY = "counterexample.yaml"
STEPS = "steps.txt"
TRACE = "trace.json"
COVERAGE = "coverage.json"


def _ns(t: int) -> str:
    return f"+{t:,} ns"


def _who(cpu: int) -> str:
    return "rcu" if cpu < 0 else f"cpu{cpu}"


def script_lines(script: list[Op]) -> list[str]:
    return [f"  {_ns(s.at):>16}  cpu{s.cpu}  {s.op} (mm {s.mm}, table {s.table})" for s in script]


def step_lines(out: Outcome) -> list[str]:
    """The run as numbered steps: what each CPU did, joined by → within one instant.

    Each line is one CPU at one instant (the RCU machinery, as ``rcu``, for grace periods);
    CPUs are indented by their number so that each reads down its own column.
    """
    groups: list[tuple[int, int, list[str]]] = []
    for t, cpu, text in out.steps:
        if groups and groups[-1][0] == t and groups[-1][1] == cpu:
            groups[-1][2].append(text)
        else:
            groups.append((t, cpu, [text]))
    width = len(str(len(groups)))
    lines = []
    for i, (t, cpu, texts) in enumerate(groups, 1):
        indent = "  " * max(cpu, 0)
        lines.append(f"{i:>{width}}. {_ns(t):>16}  {indent}{_who(cpu)}: {' → '.join(texts)}")
    f = out.failure
    if f is not None:
        lines.append(
            f"{'!':>{width}}  {_ns(f['t_ns']):>16}  {_who(f['cpu'])}: {f['kind']}: {f['message']}"
        )
    return lines


def counterexample_lines(scenario: Scenario, out: Outcome, found: str | None = None) -> list[str]:
    f = out.failure or {}
    n = len(out.script)
    head = (
        f"{scenario.name}: {f.get('kind')} ({scenario.config.allocator.name}, "
        f"{scenario.config.machine.cpus} CPUs), shortest schedule found: {n} "
        f"operation{'s' if n != 1 else ''}"
    )
    lines = [head]
    if found:
        lines.append(found)
    lines.append("start (populated before the script): " + "; ".join(out.setup))
    lines.append("script:")
    lines += script_lines(out.script)
    lines.append("steps (time from the script's start):")
    lines += step_lines(out)
    return lines


def coverage_lines(scenario: Scenario, cov: dict, seed: int, wall_s: float) -> list[str]:
    ops = " ".join(f"{k} {v:,}" for k, v in cov["operations_run"].items())
    lines = [
        f"{scenario.name}: no violation in {cov['schedules']:,} schedules "
        f"({scenario.config.allocator.name}, {scenario.config.machine.cpus} CPUs, seed {seed}, "
        f"{wall_s:.1f} s)",
        f"  distinct states: {cov['distinct_states']:,}  (events run: {cov['events']:,})",
        f"  choice points: {cov['choice_points']:,}; events due together ordered "
        f"{cov['order_choices']:,} times, {cov['reordered']:,} of them against SimPy's order",
        f"  operations run: {ops}",
        "  operation pairs interleaved, with the schedules where they overlapped:",
    ]
    lines += _wrapped([f"{k} {v:,}" for k, v in cov["pairs_interleaved"].items()] or ["none"])
    never = cov["pairs_never_interleaved"]
    if never:
        lines.append("  never interleaved:")
        lines += _wrapped(never)
    return lines


def _wrapped(items: list[str], width: int = 96) -> list[str]:
    """``items`` joined by commas on lines of at most ``width`` characters, indented."""
    lines: list[str] = []
    cur = ""
    for it in items:
        if cur and len(cur) + len(it) + 2 > width:
            lines.append(f"    {cur},")
            cur = it
        else:
            cur = f"{cur}, {it}" if cur else it
    if cur:
        lines.append(f"    {cur}")
    return lines


# -- the replay file ------------------------------------------------------------------------------


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:  # desim's YAML reader refuses anchors and aliases
        return True


def replay_dict(scenario: Scenario, out: Outcome, seed: int, source: str) -> dict[str, Any]:
    f = out.failure or {}
    return {
        "format": FORMAT,
        "desim_version": __version__,
        "scenario": source,
        "seed": seed,
        "violation": {k: f.get(k) for k in ("kind", "t_ns", "cpu", "message")},
        **scenario.to_dict(),
        "script": [s.to_dict() for s in out.script],
        "choices": [list(c) for c in out.choices],
    }


def dump_replay(data: dict) -> str:
    return (
        "# desim explore counterexample; rerun it with: desim explore --replay FILE\n"
        + yaml.dump(data, Dumper=_NoAliases, sort_keys=False, default_flow_style=None, width=100)
    )


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    at: Int = Field(ge=0)
    cpu: Int = Field(ge=0)
    op: Literal[OPS]  # type: ignore[valid-type]
    mm: Int = Field(ge=0)
    table: Int = Field(ge=0)


class _Replay(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["desim-explore/1"]
    desim_version: str = ""
    scenario: str = ""
    seed: Int | None = None
    violation: dict | None = None
    config: dict
    explore: dict | None = None
    script: list[_Op] = Field(min_length=1)
    choices: list[tuple[str, Int, Int]] = []


def read_replay(path: str | Path) -> tuple[Scenario, list[Op], list, dict]:
    """A replay file's scenario, script, choices and recorded file (``ConfigError`` if bad)."""
    data = read_yaml(path)
    try:
        rep = _Replay.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first_error(exc)}") from None
    try:
        name = Path(rep.scenario).stem if rep.scenario else Path(path).stem
        scenario = from_dicts(name, rep.config, rep.explore)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    n = scenario.config.machine.cpus
    for i, s in enumerate(rep.script):
        if s.cpu >= n:
            raise ConfigError(f"{path}: script.{i}.cpu: {s.cpu} but the machine has {n} CPUs")
        if s.mm >= scenario.spec.mms:
            raise ConfigError(
                f"{path}: script.{i}.mm: {s.mm} but the scenario starts {scenario.spec.mms} mms"
            )
    for i, (_label, k, v) in enumerate(rep.choices):
        if not 0 <= v < k:
            raise ConfigError(f"{path}: choices.{i}: answer {v} is not below its {k} options")
    script = [Op(s.at, s.cpu, s.op, s.mm, s.table) for s in rep.script]
    return scenario, script, [list(c) for c in rep.choices], data
