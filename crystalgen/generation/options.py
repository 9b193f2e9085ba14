"""How to sample: one options object carried from the CLI or API down to the decoder."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from crystalgen.representation.charge import PlanRule
from crystalgen.validators.distance import MIN_COVALENT_RATIO, MIN_DISTANCE_A, pair_limits

#: Sequences decoded together per process. Wider batches amortise the per-step cost of
#: one position for the whole batch (figures: docs/sampling.md, benchmarks/bench_sample.py).
DEFAULT_BATCH_SIZE = 1024


@dataclass(frozen=True)
class SamplingOptions:
    """Everything about *how* crystals are drawn (what is drawn is a ``GenerationRequest``).

    ``temperature``: scales every choice (0: the most likely token and value).
    ``seed``: keys every sequence's random stream (None: a fresh random seed).
    ``batch_size``: sequences decoded together in one process.
    ``min_distance``: the distance guard's floor in Å (0: guard off); see :mod:`crystalgen.generation.guard`.
    ``covalent_ratio``: the guard also keeps every pair at least this fraction of the sum of
    its covalent radii apart, the validators' physical rule (0: the flat ``min_distance`` alone).
    ``validate``: run the validators on every crystal.
    ``only_valid``: keep sampling until ``n`` crystals pass every check.
    ``max_rounds``: at most ``max_rounds`` x ``n`` sequences are tried.
    ``progress``: show a progress bar.
    ``strategy``: where plans come from; ``"model"`` samples them from the model.
    ``charge_neutral``: de novo plans are charge-neutral under the charge validator's rule
    (SMACT oxidation states, Pauling test) or a single element, by grammar masks (False:
    the model's plan as trained). ``allow_intermetallic``: all-metal plans too.
    ``volume_guard``: de novo, the last free lattice length keeps the cell in the plan's
    volume-per-atom bin (:mod:`crystalgen.generation.volume`; crystal structure prediction
    is left as it was).
    """

    temperature: float = 1.0
    seed: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    min_distance: float = MIN_DISTANCE_A
    covalent_ratio: float = MIN_COVALENT_RATIO
    validate: bool = True
    only_valid: bool = False
    max_rounds: int = 10
    progress: bool = False
    strategy: str = "model"
    charge_neutral: bool = True
    allow_intermetallic: bool = False
    volume_guard: bool = True

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.min_distance < 0:
            raise ValueError(f"min_distance must be >= 0, got {self.min_distance}")
        if self.covalent_ratio < 0:
            raise ValueError(f"covalent_ratio must be >= 0, got {self.covalent_ratio}")
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {self.max_rounds}")

    def with_(self, **changes) -> "SamplingOptions":
        """A copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def plan_rule(self, rule: PlanRule | None) -> PlanRule | None:
        """A de novo request's plan rule with these options' charge settings."""
        if rule is None:
            return None
        return replace(rule, neutral=self.charge_neutral, intermetallic=self.allow_intermetallic)

    @property
    def guard_distance(self) -> float:
        """The guard as applied: greedy decoding (temperature 0) has nothing to redraw."""
        return self.min_distance if self.temperature > 0 else 0.0

    @property
    def guard_limits(self) -> float | np.ndarray:
        """What the decoder's guard takes: 0 (off), one distance in Å, or the per-pair
        matrix ``max(min_distance, covalent_ratio * (r_i + r_j))`` by atomic numbers."""
        if self.guard_distance <= 0 or self.covalent_ratio <= 0:
            return self.guard_distance
        return pair_limits(self.covalent_ratio, self.guard_distance)
