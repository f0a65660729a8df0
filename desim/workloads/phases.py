"""``phases``: a run as a sequence of (duration, mix), so load can ramp up, burst and settle.

Each phase's ``mix`` maps workload element names to a rate multiplier (default 1; 0 pauses the
element). Elements read the multiplier from the machine's shared ``WorkloadState`` at each gap
they draw (see ``desim.workloads.base``), so a phase change re-creates no process: the mm
population, its tables and the RCU backlog carry over from one phase to the next, as they do
on a real machine whose load changes. After the last phase its mix stays in force, unless
``repeat`` cycles the list. YAML: ``phases: [{duration: 100ms, mix: {faults: 0.5}}, ...]``,
or ``phases: {phases: [...], repeat: true}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator
from simpy.events import Timeout

from desim.fields import PositiveDuration, Real
from desim.registry import UnknownName
from desim.workloads import ELEMENTS
from desim.workloads.base import Element, Params

MAX_MULTIPLIER = 1000


class Phase(Params):
    duration: PositiveDuration = Field(description="how long the phase lasts")
    mix: dict[str, Real] = Field(
        default_factory=dict, description="element -> rate multiplier (0 to 1000)"
    )
    name: str = ""

    @field_validator("mix")
    @classmethod
    def _mix(cls, v: dict[str, float]) -> dict[str, float]:
        for name, k in v.items():
            try:
                ELEMENTS.get(name)
            except UnknownName as exc:
                raise ValueError(str(exc)) from None
            if name == "phases":
                raise ValueError("phases: cannot scale itself")
            if not 0 <= k <= MAX_MULTIPLIER:
                # a larger one divides every gap down to 0 ns: simulated time stands still
                raise ValueError(
                    f"{name}: a rate multiplier must be from 0 to {MAX_MULTIPLIER} (got {k})"
                )
        return v


class PhasesParams(Params):
    phases: list[Phase] = Field(min_length=1, description="(duration, mix) in order")
    repeat: bool = Field(False, description="start again after the last phase")

    @model_validator(mode="before")
    @classmethod
    def _list(cls, data: Any) -> Any:
        # ``phases: [{duration: ..., mix: ...}, ...]`` is short for ``phases: {phases: [...]}``
        return {"phases": data} if isinstance(data, list) else data


@ELEMENTS.register("phases")
class Phases(Element[PhasesParams]):
    Params = PhasesParams
    counters = ("phase.changes",)
    summary = "a list of (duration, mix): rate multipliers per element, to ramp, burst, settle"

    def start(self) -> None:
        self.state.set_mix(0, self.p.phases[0].mix)  # before any element draws its first gap
        self.env.process(self._run())

    def _run(self):
        phases = self.p.phases
        i = 0
        while True:
            yield Timeout(self.env, phases[i].duration)
            i += 1
            if i == len(phases):
                if not self.p.repeat:
                    return
                i = 0
            self.state.set_mix(i, phases[i].mix)
            self.m.counters["phase.changes"] += 1
