"""Cell volume of a substituted analogue: per-element atomic volumes fitted to the corpus.

A cell's volume is modelled as the sum of its atoms' volumes, v_el fitted by non-negative
least squares over every corpus entry (primitive cell volume ~ sum_el n_el v_el). A
substituted analogue keeps its own packing: its volume is scaled by the ratio of the
rule's volumes for the target and for the analogue composition. Elements the corpus never
holds keep the analogue element's volume (ratio 1 for that pair).
`benchmarks/bench_analogue_volume.py` compares this with the unscaled cell and the rule's
absolute volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from crystalgen.analogues.index import AnalogueIndex


@dataclass
class VolumeRule:
    """atomic_volume[Z] in Å^3 (NaN where the corpus had no data)."""

    atomic_volume: np.ndarray

    @classmethod
    def fit(cls, index: AnalogueIndex, max_entries: int = 20000, seed: int = 0) -> "VolumeRule":
        """Fit on (a seeded sample of at most `max_entries` of) the corpus's primitive cells."""
        n = len(index)
        rows = np.arange(n) if n <= max_entries else np.sort(np.random.default_rng(seed).choice(n, max_entries, False))
        design = np.zeros((len(rows), 119))
        volumes = np.abs(np.linalg.det(index.lattice[rows]))
        for r, i in enumerate(rows):
            np.add.at(design[r], index.species[index.site_offsets[i]:index.site_offsets[i + 1]], 1.0)
        seen = design.sum(axis=0) > 0
        out = np.full(119, np.nan)
        if len(rows) == 0:  # an empty corpus: no rule (every candidate keeps its volume)
            return cls(out)
        fitted, _ = nnls(design[:, seen], volumes)
        out[np.flatnonzero(seen)] = fitted
        out[out <= 0] = np.nan  # a zero volume would make ratios meaningless
        return cls(out)

    def volume(self, counts: dict[int, float]) -> float:
        """The rule's volume of a composition {Z: count}; NaN if an element has no fitted volume."""
        return float(sum(self.atomic_volume[z] * c for z, c in counts.items()))

    def scale(self, pairs: list[tuple[int, int]], counts: dict[int, float]) -> float:
        """Volume ratio target/analogue for the analogue composition `counts` {Z: count} whose
        elements become others by `pairs` [(analogue Z, target Z)]."""
        mapping = dict(pairs)
        old = new = 0.0
        for z, c in counts.items():
            va, vt = self.atomic_volume[z], self.atomic_volume[mapping.get(z, z)]
            if np.isnan(va) or np.isnan(vt):
                continue  # unknown element: keeps its analogue's volume
            old += va * c
            new += vt * c
        return new / old if old > 0 else 1.0
