"""The ground truth as a generator: the harness's self-check.

Given the test structures, it answers every CSP query with the test crystal of that
composition and samples test crystals for de novo runs, so a correct harness scores it
as a 100% match (of valid ground truths) with RMSE 0, and with the validators' own
validity figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pymatgen.core import Composition, Structure

from crystalgen.results import GenerationResult


class OracleGenerator:
    """Returns the known structure for each composition (copies, so callers may mutate)."""

    name = "oracle"
    # answering is a dict look-up: shipping the whole test set to worker processes
    # would cost far more than it saves
    parallel_safe = False

    def __init__(self, structures: Sequence[Structure]):
        self.structures = list(structures)
        # Polymorphs share a formula: the c-th query of a formula starts at polymorph c
        # (cyclically), so a run that asks once per test crystal, in order, gets each
        # crystal back even when the test set holds polymorphs.
        self._queries: dict[str, int] = {}
        self._by_formula: dict[str, list[Structure]] = {}
        for s in self.structures:
            self._by_formula.setdefault(_cell_formula(s.composition), []).append(s)

    def predict_structure(
        self, composition: Composition | str, n: int = 1, seed: int | None = None
    ) -> list[GenerationResult]:
        key = _cell_formula(Composition(composition))
        if key not in self._by_formula:
            raise KeyError(f"oracle has no structure for {key}")
        known = self._by_formula[key]
        start = self._queries.get(key, 0)
        self._queries[key] = start + 1
        return [
            GenerationResult(known[(start + i) % len(known)].copy(), metadata={"generator": self.name})
            for i in range(n)
        ]

    def sample(self, n: int = 1, seed: int | None = None) -> list[GenerationResult]:
        rng = np.random.default_rng(seed)
        picks = rng.choice(len(self.structures), size=n, replace=n > len(self.structures))
        return [
            GenerationResult(self.structures[int(i)].copy(), metadata={"generator": self.name})
            for i in picks
        ]


def _cell_formula(composition: Composition) -> str:
    """Exact cell formula, element-sorted, so `Nd4Sc4O12` and `O12Nd4Sc4` agree."""
    return " ".join(f"{el}{int(round(n))}" for el, n in sorted(composition.get_el_amt_dict().items()))
