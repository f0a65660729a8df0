"""Plain-text progress for logs: what ``desim run`` prints when stderr is not a terminal.

A run under ``nohup``, CI or ``2> log`` gets no live bar (there is no terminal to redraw), so it
prints one line at every tenth of the work and at least every ``every_s`` seconds of wall time
between them, never more often: a 10-minute run writes a few dozen lines, not thousands.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


class ProgressLines:
    """Call with the work done so far (same unit as ``total``); prints when a line is due."""

    def __init__(
        self,
        total: float,
        describe: Callable[[float], str],
        stream: TextIO,
        label: str = "simulating",
        every_s: float = 10.0,
        steps: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.describe = describe
        self.stream = stream
        self.label = label
        self.every_s = every_s
        self.steps = steps
        self.clock = clock
        self.t0 = clock()
        self.last_t = self.t0
        self.next_step = 1  # the next tenth that earns a line

    def __call__(self, done: float) -> None:
        now = self.clock()
        frac = done / self.total if self.total > 0 else 1.0
        step = int(frac * self.steps + 1e-9)
        if step >= self.next_step or now - self.last_t >= self.every_s:
            self.next_step = max(self.next_step, step + 1)
            self.last_t = now
            print(
                f"{self.label}: {100 * min(frac, 1.0):3.0f}% ({self.describe(done)}, "
                f"{now - self.t0:.0f} s)",
                file=self.stream,
                flush=True,
            )
