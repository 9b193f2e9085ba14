"""The analogue generator as the harness uses it: its corpus with the test crystals removed.

Evaluation never lets the corpus hold a crystal being scored: entries with a test id and
entries that the benchmark's StructureMatcher matches to a test crystal are dropped
first, and the counts go into the report's settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from crystalgen.analogues.exclusion import exclude_test_crystals
from crystalgen.analogues.generator import AnalogueConfig, AnalogueGenerator
from crystalgen.analogues.index import load_index
from crystalgen.data.reference import REFERENCE_POOL, resolve
from crystalgen.evaluation.metrics import MATCHER_KWARGS


def held_out_analogues(
    reference: str | Path | None, test_ids: Sequence[str], test_structures: Sequence[Structure],
    config: AnalogueConfig | None = None, workers: int = 1,
) -> tuple[AnalogueGenerator, dict[str, Any]]:
    """An AnalogueGenerator over `reference` (default: the shipped pool) minus the test
    crystals, and the settings block that records the corpus and the exclusion counts."""
    path = resolve(reference or REFERENCE_POOL)
    index, exclusion = exclude_test_crystals(load_index(path, workers=workers), test_ids, test_structures,
                                             MATCHER_KWARGS, workers=workers)
    config = config or AnalogueConfig()
    settings = {"reference": str(reference or "training-pool"), **exclusion.as_dict(),
                "energy_top": config.energy_top, "energy_weight": config.energy_weight,
                "prefilter": config.prefilter, "prior": config.prior.as_dict()}
    return AnalogueGenerator(index, config, excluded=exclusion.as_dict()), settings
