"""Named, independent random streams derived from one per-run ``numpy.random.SeedSequence``.

Every consumer asks for a stream by a stable name (``"faults.cpu3"``); the stream's seed is the
run's entropy plus a spawn key derived from the name, so adding a new stream never shifts the
draws of an existing one, and no code touches a global RNG.
"""

from __future__ import annotations

import zlib
from itertools import chain

import numpy as np


class Streams:
    """Factory of named ``numpy.random.Generator`` objects for one run."""

    def __init__(self, seed_seq: np.random.SeedSequence) -> None:
        self.seed_seq = seed_seq
        self._made: dict[str, np.random.Generator] = {}

    @classmethod
    def from_seed(cls, seed: int) -> Streams:
        return cls(np.random.SeedSequence(seed))

    def get(self, name: str) -> np.random.Generator:
        """The generator for ``name``; the same name gives the same generator object."""
        gen = self._made.get(name)
        if gen is None:
            key = (*self.seed_seq.spawn_key, zlib.crc32(name.encode()))
            child = np.random.SeedSequence(self.seed_seq.entropy, spawn_key=key)
            gen = self._made[name] = np.random.default_rng(child)
        return gen


# Values per block. Each live sampler holds one block as Python floats (~32 B a value), and a
# machine has a few samplers per CPU: at 4096, 1024 CPUs kept ~600 MB of buffered draws, spread
# so wide that every draw missed the caches. At 256 the numpy call still costs ~4 ns a value.
# Numpy fills an array one value after another from the stream, so the block size changes no
# value drawn (tests/test_scaling.py checks whole runs).
BLOCK = 256


def buffered(draw, block: int | None = None):
    """A zero-argument sampler handing out, one at a time, values drawn ``block`` at once.

    ``draw(n)`` returns an array of ``n`` samples. Calling numpy per value costs ~1 us; drawing
    blocks amortises that to a few ns. The sampler is the ``__next__`` of a chain of blocks, so a
    draw costs one C call and no Python frame (samplers run several times per simulated fault).
    """
    n = block or BLOCK
    blocks = iter(lambda: draw(n).tolist(), None)  # never None: an endless stream of blocks
    return chain.from_iterable(blocks).__next__
