"""A cheap pre-filter before the element mapping, for corpora where one anonymous formula holds thousands.

Mapping an analogue costs pymatgen oxidation-state guesses and substitution-table look-ups
per analogue formula; on Perov-5's training split ~6,000 entries share one key, which
makes a query take seconds. The pre-filter keeps the `keep` entries with the least total
Mendeleev-number difference to the target (ties kept), computed for all entries of a key
at once: each entry's elements ordered by (reduced count, Mendeleev number), so the
row-wise |difference| to the target ordered the same way is the least total difference of
any count-preserving mapping (sorted order is optimal for |a - b| on a line).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pymatgen.core import Element

from crystalgen.analogues.index import AnalogueIndex


def _row(pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Mendeleev numbers ordered by (count, Mendeleev number); pairs: (atomic number, count)."""
    return [m for _, m in sorted((c, Element.from_Z(z).mendeleev_no) for z, c in pairs)]


class MendeleevPrefilter:
    """Keeps the `keep` entries closest to a target by total Mendeleev-number difference."""

    def __init__(self, index: AnalogueIndex, keep: int):
        self.index = index
        self.keep = keep
        self._tables: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}

    def _table(self, key: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        if key not in self._tables:
            members = np.flatnonzero([tuple(sorted(c)) == key for c in self.index.counts])
            rows = np.array([_row(zip(self.index.elements[i], self.index.counts[i])) for i in members], dtype=np.int32)
            self._tables[key] = (members, rows)
        return self._tables[key]

    def select(self, hits: np.ndarray, elements: Sequence[str], counts: Sequence[int]) -> np.ndarray:
        """The entries of `hits` (one anonymous formula) to map for a target of these elements and counts."""
        if self.keep <= 0 or len(hits) <= self.keep:
            return hits
        members, rows = self._table(tuple(sorted(counts)))
        target = np.array(_row([(Element(e).Z, c) for e, c in zip(elements, counts)]), dtype=np.int32)
        cost = np.abs(rows[np.searchsorted(members, hits)] - target).sum(axis=1)
        return hits[cost <= np.partition(cost, self.keep - 1)[self.keep - 1]]
