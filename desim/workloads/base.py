"""What a workload element is: typed parameters and SimPy processes started on a machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from desim.rng import Buffered

if TYPE_CHECKING:
    from desim.model.machine import Machine


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, validate_default=True)


class Element:
    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = Params
    summary: ClassVar[str] = ""

    def __init__(self, machine: Machine, params: BaseModel) -> None:
        self.m = machine
        self.p = params
        self.env = machine.env

    def rng(self, stream: str) -> np.random.Generator:
        return self.m.streams.get(f"{self.name}.{stream}")

    def uniform(self, stream: str) -> Buffered:
        """Buffered U[0,1) draws from a named stream."""
        rng = self.rng(stream)
        return Buffered(rng.random)

    def start(self) -> None:
        raise NotImplementedError

    @staticmethod
    def run_on(m: Machine, cpu, task, body):
        """Run generator ``body`` as ``task`` on ``cpu`` (waiting for the CPU if it is busy)."""
        ev = cpu.acquire(task)
        if ev is not None:
            yield ev
        result = yield from body
        cpu.release()
        return result
