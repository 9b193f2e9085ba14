"""What a finished screening run produced, as the pipeline returns it and the outputs write it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crystalgen.screening.config import ScreenConfig


@dataclass
class ScreenResult:
    """What a finished run produced (also written to RUN_DIR, see ``outputs``).

    candidates: one dict per candidate, in (target, shard, index) order, with the
        stage it reached, its flags, scores and ``rank`` within its target (1 = best,
        None = unranked).
    funnel: per target name (and "total"), candidates left after each stage.
    seconds: time spent per stage, summed over the shards this invocation ran, plus
        "merge" and "export" in the driver.
    """

    config: ScreenConfig
    candidates: list[dict[str, Any]]
    funnel: dict[str, dict[str, int]]
    seconds: dict[str, float] = field(default_factory=dict)
    shards_run: int = 0
    warnings: list[str] = field(default_factory=list)

    def ranked(self) -> list[dict[str, Any]]:
        """The ranked candidates, target by target (config order), best first."""
        return sorted((c for c in self.candidates if c["rank"] is not None),
                      key=lambda c: (c["target_index"], c["rank"]))
