"""A screening generator plug-in (``generator = "gated_generator:GatedGenerator"``) for
process tests: the PyXtal baseline, except that a shard whose seed is not in ``free``
waits until the file ``gate`` exists. A test therefore knows which shards a run can
finish before it opens the gate, and interrupts workers that are busy with a shard."""

from __future__ import annotations

import time
from pathlib import Path

from crystalgen.results import GenerationResult
from crystalgen.screening.generators import PyXtalTargets


class GatedGenerator(PyXtalTargets):
    name = "gated"

    def __init__(self, gate: str, free: list[int], max_atoms: int = 4) -> None:
        super().__init__(max_atoms=max_atoms)
        self.gate = Path(gate)
        self.free = set(free)

    def sample(self, n: int = 1, seed: int | None = None, **kwargs) -> list[GenerationResult]:
        while seed not in self.free and not self.gate.exists():
            time.sleep(0.05)
        return super().sample(n=n, seed=seed, **kwargs)
