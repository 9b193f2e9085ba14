"""How to sample: one options object carried from the CLI or API down to the decoder."""

from __future__ import annotations

from dataclasses import dataclass, replace

from crystalgen.validators.distance import MIN_DISTANCE_A

#: Sequences decoded together per process. Wider batches amortise the per-step cost of
#: one position for the whole batch (figures: docs/sampling.md, benchmarks/bench_sample.py).
DEFAULT_BATCH_SIZE = 1024


@dataclass(frozen=True)
class SamplingOptions:
    """Everything about *how* crystals are drawn (what is drawn is a ``GenerationRequest``).

    ``temperature``: scales every choice (0: the most likely token and value).
    ``seed``: keys every sequence's random stream (None: a fresh random seed).
    ``batch_size``: sequences decoded together in one process.
    ``min_distance``: the distance guard in Å (0: off); see :mod:`crystalgen.generation.guard`.
    ``validate``: run the validators on every crystal.
    ``only_valid``: keep sampling until ``n`` crystals pass every check.
    ``max_rounds``: at most ``max_rounds`` x ``n`` sequences are tried.
    ``progress``: show a progress bar.
    ``strategy``: where plans come from; ``"model"`` samples them from the model.
    """

    temperature: float = 1.0
    seed: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    min_distance: float = MIN_DISTANCE_A
    validate: bool = True
    only_valid: bool = False
    max_rounds: int = 10
    progress: bool = False
    strategy: str = "model"

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.min_distance < 0:
            raise ValueError(f"min_distance must be >= 0, got {self.min_distance}")
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {self.max_rounds}")

    def with_(self, **changes) -> "SamplingOptions":
        """A copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def guard_distance(self) -> float:
        """The guard as applied: greedy decoding (temperature 0) has nothing to redraw."""
        return self.min_distance if self.temperature > 0 else 0.0
